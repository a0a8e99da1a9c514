//! What the sentinels say about the master between lookups: a failover starting, a new master
//! named. Its conclusions are two facts the pool reads on every checkout: how many times the
//! master switched, and whether a failover is under way.
//!
//! # Why not wait for `READONLY`
//! Measured with Redis 7.0 (`down-after-milliseconds` 1000), after `SENTINEL FAILOVER`: the
//! replica is master after 0.26 s, the sentinels name it after 1.1 s, but the old master, still
//! running, answers as a master and accepts writes, which the new master never sees, until the
//! sentinels turn it into a replica 10 s later. A pool that waited for `READONLY` would write
//! into the void for ten seconds; one that only polled the sentinels would still do so from the
//! promotion to the switch (in a test under load: about 600 acknowledged increments lost).
//!
//! # What is watched
//! - Each sentinel's events, subscribed to: `+try-failover` (a sentinel starts a failover of
//!   our master, before it promotes anything) makes the pool refuse every command with
//!   [`Error::Unavailable`](crate::Error::Unavailable) and drop its connections; `+switch-master`
//!   (the new master) or that sentinel's `-failover-abort-*` ends the refusal. So a write during
//!   the failover gets a 503 instead of being acknowledged by a master about to be abandoned.
//!   If neither comes within [`FAILOVER_HOLD`], the pool serves again through a fresh lookup.
//! - One sentinel, asked every [`WATCH_PERIOD`] for the master's address: a change counts as a
//!   switch even if its event was missed (a subscription down, the sentinel restarted).
//!
//! One task does both. It starts with the first use of the pool, stops when the backend is
//! dropped, and if its runtime ends first the next use of the pool starts another.
//!
//! Why this file is long: a fifth of it is the unit tests of the event rules, which need the
//! watch's private state; the rest is the one watcher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, RedisError};

/// How often the watcher asks a sentinel which server is the master, and how often it retries
/// a lost event subscription. Two questions a second to a sentinel cost nothing.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// The longest the pool refuses commands after a sentinel announced a failover without
/// finishing or abandoning it (a sentinel that died mid-failover): then it serves again from
/// whichever master a fresh lookup finds. A failover normally takes a second or two.
const FAILOVER_HOLD: Duration = Duration::from_secs(10);

/// The sentinel events that start or end a failover.
const EVENTS: [&str; 5] = [
    "+try-failover",
    "+switch-master",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];

/// What the watcher knows, shared with the pool.
pub(super) struct Watch {
    master_name: String,
    /// The sentinels, with their credentials and TLS settings.
    nodes: Vec<ConnectionInfo>,
    /// Connect and response timeouts of the watcher's connections.
    timeouts: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// How many times the master switched (or a failover started).
    switches: AtomicU64,
    /// The master last heard named, `host:port`.
    named: Mutex<Option<String>>,
    /// Per sentinel: since when it has been failing over our master.
    failovers: Mutex<Vec<Option<Instant>>>,
    /// Whether any entry of `failovers` is set: read on every checkout, without the lock.
    any_failover: AtomicBool,
    /// Whether a watcher task is running.
    running: AtomicBool,
}

impl Watch {
    pub(super) fn new(
        master_name: String,
        nodes: Vec<ConnectionInfo>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let failovers = Mutex::new(vec![None; nodes.len()]);
        Self {
            master_name,
            nodes,
            timeouts: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            connect_timeout,
            switches: AtomicU64::new(0),
            named: Mutex::new(None),
            failovers,
            any_failover: AtomicBool::new(false),
            running: AtomicBool::new(false),
        }
    }

    pub(super) fn master_name(&self) -> &str {
        &self.master_name
    }

    pub(super) fn nodes(&self) -> &[ConnectionInfo] {
        &self.nodes
    }

    /// How many times the master switched: a connection opened at a lower count may talk to
    /// an old master.
    pub(super) fn switches(&self) -> u64 {
        self.switches.load(Ordering::Acquire)
    }

    /// Whether a sentinel is failing over the master (for at most [`FAILOVER_HOLD`]).
    pub(super) fn failing_over(&self) -> bool {
        if !self.any_failover.load(Ordering::Acquire) {
            return false;
        }
        let mut failovers = lock(&self.failovers);
        for state in failovers.iter_mut() {
            if state.is_some_and(|since| since.elapsed() >= FAILOVER_HOLD) {
                tracing::warn!(name = %self.master_name,
                    "a sentinel announced a failover and never finished it; serving again");
                *state = None;
            }
        }
        let active = failovers.iter().any(Option::is_some);
        self.any_failover.store(active, Ordering::Release);
        active
    }

    /// Records that sentinel `node` started (`Some`) or ended (`None`) a failover, or with no
    /// node that every failover ended.
    fn set_failover(&self, node: Option<usize>, since: Option<Instant>) {
        let mut failovers = lock(&self.failovers);
        match node.and_then(|n| failovers.get_mut(n)) {
            Some(state) => *state = since,
            None => failovers.fill(None),
        }
        self.any_failover
            .store(failovers.iter().any(Option::is_some), Ordering::Release);
    }

    /// Connects to a sentinel with the watcher's timeouts.
    pub(super) async fn connect(
        &self,
        node: &ConnectionInfo,
    ) -> Result<MultiplexedConnection, RedisError> {
        redis::Client::open(node.clone())?
            .get_multiplexed_async_connection_with_config(&self.timeouts)
            .await
    }

    /// Starts the watcher task unless it runs. Cheap: called on every use of the pool.
    pub(super) fn start(self: &Arc<Self>) {
        if self.running.load(Ordering::Acquire) || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.running.store(false, Ordering::Release);
            return;
        };
        let watcher = Watcher(Arc::downgrade(self));
        runtime.spawn(watcher.run());
    }

    /// Records the master a sentinel named. A change is a switch, and ends any failover; so is
    /// the first name heard if it comes from a `+switch-master` event (`announced`), whereas
    /// the first answer of a poll only says where the master already was.
    fn heard(&self, master: String, announced: bool) {
        let mut named = lock(&self.named);
        if named.as_deref() == Some(master.as_str()) {
            return;
        }
        let old = named.replace(master.clone());
        if old.is_some() || announced {
            self.switches.fetch_add(1, Ordering::AcqRel);
            self.set_failover(None, None);
            tracing::info!(name = %self.master_name, old = ?old, new = %master,
                "the sentinels named a new master; connections to the old one are replaced");
        }
    }

    /// Acts on one event of sentinel `node`.
    fn event(&self, node: usize, channel: &str, payload: &str) {
        let words: Vec<&str> = payload.split_whitespace().collect();
        if channel == "+switch-master" {
            // `<name> <old-ip> <old-port> <new-ip> <new-port>`
            if let [name, _, _, ip, port] = words[..] {
                if name == self.master_name {
                    self.heard(format!("{ip}:{port}"), true);
                }
            }
            return;
        }
        // `master <name> <ip> <port> ...`
        if words.first() != Some(&"master") || words.get(1) != Some(&self.master_name.as_str()) {
            return;
        }
        if channel == "+try-failover" {
            // `master <name> <ip> <port>`: a sentinel that sets off late (its election lost
            // to the one that already switched) still names the master that was replaced.
            // Holding sessions for it would fail them against a master that is serving.
            if let ([_, _, ip, port, ..], Some(named)) = (&words[..], &*lock(&self.named)) {
                if format!("{ip}:{port}") != *named {
                    tracing::debug!(name = %self.master_name, old = %format!("{ip}:{port}"),
                        "a sentinel set off a failover of a master already replaced; ignored");
                    return;
                }
            }
            self.set_failover(Some(node), Some(Instant::now()));
            // The connections open now go to the master being failed over: none is used again.
            self.switches.fetch_add(1, Ordering::AcqRel);
            tracing::info!(name = %self.master_name,
                "a sentinel is failing over the master; session commands fail until it is done");
        } else {
            self.set_failover(Some(node), None);
            tracing::info!(name = %self.master_name, event = channel,
                "a sentinel abandoned its failover of the master");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the master's `host:port`, or `None` if the sentinel
/// does not monitor that name.
pub(super) async fn named_master(
    conn: &mut MultiplexedConnection,
    name: &str,
) -> Result<Option<String>, RedisError> {
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(addr.map(|(host, port)| format!("{host}:{port}")))
}

/// The watcher task: a poll loop and one event listener per sentinel.
struct Watcher(Weak<Watch>);

impl Watcher {
    async fn run(self) {
        let nodes = self.0.upgrade().map_or(0, |w| w.nodes.len());
        let listeners = futures::future::join_all((0..nodes).map(|n| listen(self.0.clone(), n)));
        futures::future::join(poll(self.0.clone()), listeners).await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Ended with the backend or with its runtime: let the next use of the pool start
        // another if the backend lives on.
        if let Some(watch) = self.0.upgrade() {
            watch.running.store(false, Ordering::Release);
        }
    }
}

/// Asks one sentinel for the master every [`WATCH_PERIOD`]; the next one when it fails.
async fn poll(watch: Weak<Watch>) {
    let mut node = 0usize;
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        let Some(w) = watch.upgrade() else {
            return;
        };
        for _ in 0..w.nodes.len() {
            let info = &w.nodes[node % w.nodes.len()];
            if conn.is_none() {
                conn = w.connect(info).await.ok();
            }
            if let Some(c) = conn.as_mut() {
                match named_master(c, &w.master_name).await {
                    Ok(Some(master)) => {
                        w.heard(master, false);
                        break;
                    }
                    // A sentinel that forgot the master is no better than one that is down.
                    Ok(None) | Err(_) => conn = None,
                }
            }
            node = node.wrapping_add(1);
        }
        drop(w);
        tokio::time::sleep(WATCH_PERIOD).await;
    }
}

/// Follows the failover events of sentinel `node`, subscribing again when the subscription is
/// lost.
async fn listen(watch: Weak<Watch>, node: usize) {
    loop {
        let Some(w) = watch.upgrade() else {
            return;
        };
        let subscribed = tokio::time::timeout(w.connect_timeout, async {
            let mut pubsub = redis::Client::open(w.nodes[node].clone())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(&EVENTS[..]).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        drop(w);
        if let Ok(Ok(pubsub)) = subscribed {
            let mut messages = pubsub.into_on_message();
            loop {
                // Wakes up every period to notice a dropped backend.
                match tokio::time::timeout(WATCH_PERIOD, messages.next()).await {
                    Ok(Some(message)) => {
                        let Some(w) = watch.upgrade() else {
                            return;
                        };
                        let payload: String = message.get_payload().unwrap_or_default();
                        w.event(node, message.get_channel_name(), &payload);
                    }
                    Ok(None) => break,
                    Err(_) if watch.strong_count() == 0 => return,
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(WATCH_PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use redis::IntoConnectionInfo;

    use super::*;

    fn watch() -> Watch {
        let nodes = ["redis://127.0.0.1:1", "redis://127.0.0.1:2"]
            .map(|u| u.into_connection_info().unwrap())
            .to_vec();
        Watch::new(
            "mymaster".into(),
            nodes,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_failover_holds_from_its_start_until_the_switch_and_counts_as_switches() {
        let w = watch();
        w.heard("127.0.0.1:6000".into(), false);
        assert_eq!(
            w.switches(),
            0,
            "the first poll only says where the master is"
        );
        w.event(0, "+try-failover", "master other 127.0.0.1 7000");
        assert!(!w.failing_over(), "another master's failover");
        w.event(0, "+try-failover", "master mymaster 127.0.0.1 6000");
        assert!(w.failing_over());
        assert_eq!(
            w.switches(),
            1,
            "connections open at the start are not used again"
        );
        w.event(
            0,
            "+switch-master",
            "mymaster 127.0.0.1 6000 127.0.0.1 6001",
        );
        assert!(!w.failing_over());
        assert_eq!(w.switches(), 2);
        // The other sentinels announce the same switch: nothing more happens.
        w.event(
            1,
            "+switch-master",
            "mymaster 127.0.0.1 6000 127.0.0.1 6001",
        );
        w.heard("127.0.0.1:6001".into(), false);
        assert_eq!(w.switches(), 2);
    }

    #[test]
    fn an_abort_ends_only_the_failover_of_the_sentinel_that_gave_up() {
        let w = watch();
        w.event(0, "+try-failover", "master mymaster 127.0.0.1 6000");
        w.event(1, "+try-failover", "master mymaster 127.0.0.1 6000");
        w.event(
            1,
            "-failover-abort-not-elected",
            "master mymaster 127.0.0.1 6000",
        );
        assert!(w.failing_over(), "sentinel 0 is still failing over");
        w.event(
            0,
            "-failover-abort-no-good-slave",
            "master mymaster 127.0.0.1 6000",
        );
        assert!(!w.failing_over());
    }

    #[test]
    fn a_switch_announced_before_any_poll_still_counts() {
        let w = watch();
        w.event(
            1,
            "+switch-master",
            "mymaster 127.0.0.1 6000 127.0.0.1 6001",
        );
        assert_eq!(w.switches(), 1);
        w.event(1, "+switch-master", "garbled");
        assert_eq!(w.switches(), 1);
    }

    #[test]
    fn a_late_failover_of_the_master_already_replaced_holds_nothing() {
        let w = watch();
        w.heard("127.0.0.1:6000".into(), false);
        w.event(
            0,
            "+switch-master",
            "mymaster 127.0.0.1 6000 127.0.0.1 6001",
        );
        let switches = w.switches();
        // Sentinel 1 sets off its own attempt on the old master after the switch.
        w.event(1, "+try-failover", "master mymaster 127.0.0.1 6000");
        assert!(!w.failing_over());
        assert_eq!(w.switches(), switches, "no connection is made stale");
        // A failover of the master now named still holds.
        w.event(1, "+try-failover", "master mymaster 127.0.0.1 6001");
        assert!(w.failing_over());
    }
}
