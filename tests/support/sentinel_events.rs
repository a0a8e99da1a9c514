//! What the sentinels announce during a failover test, as a second subscriber hears it: the
//! test's own record of the events the pool's watcher follows
//! (`src/backend/redis/sentinel/watch.rs`), so that a test can tell a 503 the pool owes from
//! one it gives by design while a sentinel fails the master over.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

/// The sentinel events that start and end a failover, as the pool's watcher follows them.
const FAILOVER_EVENTS: [&str; 5] = [
    "+try-failover",
    "+switch-master",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];

/// Records every failover event of the sentinel at `url` with the moment it was heard, until
/// `stop` is set.
pub async fn record_events(url: String, stop: Rc<Cell<bool>>, events: Rc<RefCell<Vec<Event>>>) {
    let client = redis::Client::open(url.as_str()).expect("a sentinel URL");
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("subscribe to a sentinel");
    pubsub
        .subscribe(&FAILOVER_EVENTS[..])
        .await
        .expect("subscribe to the failover events");
    let mut messages = pubsub.into_on_message();
    while !stop.get() {
        let next = actix_web::rt::time::timeout(Duration::from_millis(50), messages.next());
        if let Ok(Some(message)) = next.await {
            // `master <name> <ip> <port> ...` for the attempts and aborts.
            let payload: String = message.get_payload().unwrap_or_default();
            events.borrow_mut().push(Event {
                at: Instant::now(),
                sentinel: url.clone(),
                channel: message.get_channel_name().to_owned(),
                port: payload
                    .split_whitespace()
                    .nth(3)
                    .and_then(|p| p.parse().ok()),
            });
        }
    }
}

/// A failover event of one sentinel, as heard.
pub struct Event {
    at: Instant,
    sentinel: String,
    channel: String,
    /// The port of the master it is about (an attempt's or an abort's).
    port: Option<u16>,
}

/// The failover attempts of the master at `master` started after `switched`, each from its
/// `+try-failover` to the next event of the same sentinel (its abort or its switch), or to
/// `end`. An attempt on the old master is not one: the pool ignores it once it heard the
/// switch.
pub fn later_failovers(
    events: &[Event],
    master: u16,
    switched: Instant,
    end: Instant,
) -> Vec<(Instant, Instant)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.channel == "+try-failover" && e.port == Some(master) && e.at > switched)
        .map(|(i, start)| {
            let ended = events[i + 1..]
                .iter()
                .find(|e| e.sentinel == start.sentinel && e.channel != "+try-failover")
                .map_or(end, |e| e.at);
            (start.at, ended)
        })
        .collect()
}
