//! Expiry: a session idle past its TTL is gone on both backends, a write to an expired session
//! does not bring it back, and renew moves the data with the TTL it is given.

use std::time::Duration;

use circumflex_session::testing::{self, Op, Reply, WriteMode, META_CREATED};
use circumflex_session::{MemoryBackend, SessionEngine};

use crate::support::engine::*;
use crate::support::RedisServer;

/// A session idle for longer than its TTL is gone; one refreshed in time lives on.
///
/// On Redis the sleeps are real, because the point is Redis's own expiry (PEXPIRE, with
/// millisecond precision), and short: `idle` (100 ms TTL) is checked 300 ms after it was
/// written, and `kept` (2 s TTL) is touched and checked 150 ms apart, a margin no loaded machine
/// eats. The memory backend's expiry reads Tokio's clock, so its test pauses it and the same
/// sleeps take no time.
async fn short_tti_expires(engine: SessionEngine) {
    let c = testing::start(&engine);
    let tti = Duration::from_millis(100);
    let step = Duration::from_millis(150);
    let idle = key("idle");
    assert_eq!(
        c.ok(&idle, set_new(tti, &[("a", "1")]), Some(tti)).await,
        Reply::Done
    );
    assert_eq!(c.ok(&idle, get(&["a"]), None).await, values(&[Some("1")]));

    let long = Duration::from_secs(2);
    let kept = key("kept");
    assert_eq!(
        c.ok(&kept, set_new(long, &[("a", "1")]), Some(long)).await,
        Reply::Done
    );
    tokio::time::sleep(step).await;
    assert_eq!(c.ok(&kept, Op::Touch, Some(long)).await, Reply::Bool(true));
    tokio::time::sleep(step).await;

    // 300 ms in: `idle` (100 ms) is gone, `kept` was refreshed 150 ms ago (2 s TTL).
    assert_eq!(c.ok(&idle, get(&["a"]), None).await, values(&[None]));
    assert_eq!(c.ok(&idle, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&idle, Op::Touch, None).await, Reply::Bool(false));
    assert_eq!(c.ok(&idle, get(&["a"]), Some(tti)).await, Reply::Gone);
    assert_eq!(c.ok(&kept, get(&["a"]), None).await, values(&[Some("1")]));
}

#[actix_web::test]
async fn short_tti_really_expires_the_session_on_redis() {
    let server = RedisServer::start();
    short_tti_expires(SessionEngine::new(redis_backend(&server).await)).await;
    assert_eq!(raw_exists(&server, "session:idle"), 0);
    assert_eq!(raw_exists(&server, "session:kept"), 1);
}

#[actix_web::test]
async fn short_tti_really_expires_the_session_in_memory() {
    tokio::time::pause();
    short_tti_expires(SessionEngine::new(MemoryBackend::new())).await;
}

#[actix_web::test]
async fn write_to_expired_session_does_not_resurrect_it() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("expired");
    let short = Duration::from_millis(200);
    assert_eq!(
        c.ok(&s, set_new(short, &[("a", "1")]), Some(short)).await,
        Reply::Done
    );
    assert_eq!(raw_exists(&server, &s), 1);
    // Redis's own expiry of the 200 ms TTL, at PEXPIRE precision: 250 ms is enough.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let before = c.stats();

    for op in [
        set(&[("a", "2")]),
        incr("n", 1),
        Op::SetIfAbsent(WriteMode::Existing, "a".into(), b"3".to_vec()),
        Op::Remove(vec!["a".into()]),
    ] {
        let what = format!("{op:?}");
        assert_eq!(c.ok(&s, op, Some(TTL)).await, Reply::Gone, "{what}");
        assert_eq!(raw_exists(&server, &s), 0, "{what} left a hash behind");
    }
    assert_eq!(c.stats().gone - before.gone, 4);
    assert_eq!(c.ok(&s, get(&["a"]), Some(TTL)).await, Reply::Gone);
    assert_eq!(raw_exists(&server, &s), 0);
}

#[actix_web::test]
async fn renew_keeps_the_data_and_drops_the_old_id() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let old = key("before-login");
    let new = key("after-login");
    let kv = [("cart", "3 items"), ("theme", "dark")];
    assert_eq!(c.ok(&old, set_new(TTL, &kv), Some(TTL)).await, Reply::Done);
    let stored = raw_hgetall(&server, &old);

    let longer = TTL * 2;
    let renew = Op::Renew {
        to: new.clone(),
        ttl: longer,
    };
    assert_eq!(c.ok(&old, renew, None).await, Reply::Done);

    assert_eq!(raw_exists(&server, &old), 0, "the old id is dropped");
    let moved = raw_hgetall(&server, &new);
    assert_eq!(moved, stored, "every field moved, metadata included");
    assert!(moved
        .iter()
        .any(|(k, v)| k == META_CREATED.as_bytes() && v == CREATED.to_string().as_bytes()));
    let pttl = raw_pttl(&server, &new);
    assert!(
        pttl > TTL.as_millis() as i64 && pttl <= longer.as_millis() as i64,
        "the new key carries the renew TTL, got PTTL {pttl}"
    );
    assert_eq!(
        sorted(c.ok(&new, Op::Entries, Some(longer)).await),
        entries(&kv)
    );
    assert_eq!(c.ok(&old, get(&["cart"]), Some(TTL)).await, Reply::Gone);
}
