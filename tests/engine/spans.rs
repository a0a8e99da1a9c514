//! The engine's `session_batch` spans against a real Redis, read by a capturing `tracing`
//! layer: what a flush says about itself, and its links to the callers it served.

use std::sync::Arc;

use circumflex_session::Error;
use futures::future::join_all;
use tracing::Instrument as _;

use crate::support::engine::*;
use crate::support::logs::SpanCapture;
use crate::support::RedisServer;

#[actix_web::test]
async fn a_flush_span_counts_its_commands_and_round_trips_and_follows_from_each_caller() {
    let server = RedisServer::start();
    let handle = redis_client(&server).await;
    let s: Arc<str> = key("traced");
    // Loads the write script, so that the batch below takes exactly one round trip.
    handle
        .ok(&s, set_new(TTL, &[("name", "ann")]), Some(TTL))
        .await;
    let (capture, _guard) = SpanCapture::start();

    let calls = (0..4).map(|n| {
        let caller = tracing::info_span!("caller", n);
        handle
            .call(cmd(&s, get(&["name"]), None))
            .instrument(caller)
    });
    for result in join_all(calls).await {
        assert_eq!(result.ok(), Some(values(&[Some("ann")])));
    }

    let spans = capture.spans();
    let callers: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].name == "caller")
        .collect();
    assert_eq!(callers.len(), 4, "{spans:#?}");
    let batches: Vec<_> = spans.iter().filter(|s| s.name == "session_batch").collect();
    assert_eq!(batches.len(), 1, "one flush for the four: {spans:#?}");
    let batch = batches[0];
    let field = |name: &str| batch.fields.get(name).map(String::as_str);
    assert_eq!(field("backend"), Some("redis"));
    assert_eq!(field("commands"), Some("4"));
    assert_eq!(field("round_trips"), Some("1"));
    assert_eq!(field("outcome"), Some("ok"));
    assert_eq!(field("failed"), Some("0"));
    let mut linked = batch.follows_from.clone();
    linked.sort_unstable();
    assert_eq!(linked, callers, "the flush follows from each caller's span");
}

#[actix_web::test]
async fn a_flush_that_fails_says_how_in_its_span() {
    let mut server = RedisServer::start();
    let handle = redis_client(&server).await;
    let s = key("traced-failure");
    handle
        .ok(&s, set_new(TTL, &[("name", "ann")]), Some(TTL))
        .await;
    let (capture, _guard) = SpanCapture::start();

    let results = handle
        .batch(vec![
            cmd(&s, incr("name", 1), None),
            cmd(&s, get(&["name"]), None),
        ])
        .await;
    assert!(
        matches!(results[0], Err(Error::NotAnInteger(_))),
        "{results:?}"
    );
    assert_eq!(results[1].as_ref().ok(), Some(&values(&[Some("ann")])));
    server.kill();
    let down = handle.run(&s, get(&["name"]), None).await;
    assert!(is_store_down(&down), "{down:?}");

    let spans = capture.spans();
    let batches: Vec<_> = spans.iter().filter(|s| s.name == "session_batch").collect();
    assert_eq!(batches.len(), 2, "{spans:#?}");
    let field = |i: usize, name: &str| batches[i].fields.get(name).cloned().unwrap_or_default();
    assert_eq!(
        (field(0, "outcome"), field(0, "failed")),
        ("ok".to_owned(), "1".to_owned()),
        "a command Redis refused fails alone"
    );
    let kind = down.err().map_or("none", |e| e.kind());
    assert_eq!(field(1, "outcome"), kind, "the error the caller got");
    assert_eq!(field(1, "failed"), "1");
}
