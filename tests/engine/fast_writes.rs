//! The fast write (a `set` of a session that must exist, sent as one `MULTI` instead of the
//! write script) keeps the script's guarantees on a real Redis: a write to a gone session
//! answers `Gone` and leaves nothing behind, a hash without `\0created` is no session to any
//! reader, `\0size` drift never refuses a write that fits, a write past a limit is undone,
//! and a script cache flushed under it changes none of this.

use std::sync::Arc;

use circumflex_session::testing::{Command, Handle, Limits, Op, Reply};

use crate::support::engine::*;
use crate::support::RedisServer;

fn limited(key: &Arc<str>, op: Op, limits: Limits) -> Command {
    Command {
        limits,
        ..cmd(key, op, None)
    }
}

/// A session `name` created with `pairs` under at most `max_keys` keys and `max_bytes` bytes.
async fn created(
    c: &Handle,
    name: &str,
    pairs: &[(&str, &str)],
    (max_keys, max_bytes): (u64, u64),
) -> (Arc<str>, Limits) {
    let (s, limits) = (
        key(name),
        Limits {
            max_keys,
            max_bytes,
        },
    );
    let made = c.call(limited(&s, set_new(TTL, pairs), limits)).await;
    assert_eq!(made.as_ref().ok(), Some(&Reply::Done), "{name} created");
    (s, limits)
}

fn recorded_size(server: &RedisServer, key: &str) -> u64 {
    raw_hget(server, key, "\0size")
        .expect("a size field")
        .parse()
        .expect("a number")
}

#[actix_web::test]
async fn a_fast_write_to_a_gone_session_answers_gone_and_leaves_no_hash() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("gone");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), None).await,
        Reply::Done
    );
    assert_eq!(c.ok(&s, Op::Invalidate, None).await, Reply::Bool(true));
    assert_eq!(c.ok(&s, set(&[("a", "2")]), None).await, Reply::Gone);
    assert_eq!(raw_exists(&server, &s), 0, "the orphan was deleted");
    // Never created at all: the same.
    let never = key("never");
    assert_eq!(c.ok(&never, set(&[("a", "2")]), None).await, Reply::Gone);
    assert_eq!(raw_exists(&server, &never), 0);
}

#[actix_web::test]
async fn a_hash_without_its_creation_stamp_is_no_session_to_readers() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("orphan");
    // What a fast write leaves for an instant when it loses a race with a logout.
    let _: () = redis::cmd("HSET")
        .arg(&*s)
        .arg("a")
        .arg("\"stale\"")
        .arg("\0size")
        .arg(10)
        .query(&mut server.connection())
        .expect("HSET");
    assert_eq!(c.ok(&s, get(&["a"]), None).await, values(&[None]));
    assert_eq!(c.ok(&s, get(&["a"]), Some(TTL)).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&s, incr("n", 1), None).await, Reply::Gone);
    assert_eq!(c.ok(&s, set(&[("a", "1")]), None).await, Reply::Gone);
    assert_eq!(raw_exists(&server, &s), 0, "the writer deleted it");
}

#[actix_web::test]
async fn overwrites_that_inflate_the_recorded_size_never_refuse_a_write_that_fits() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (s, limits) = created(&c, "drift", &[("n", "0")], (4, 64)).await;
    // Each overwrite adds its 11 bytes to the upper bound; the session holds 11 bytes at most.
    for i in 0..40 {
        let value = format!("{:010}", i);
        let done = c.call(limited(&s, set(&[("n", &value)]), limits)).await;
        assert_eq!(done.as_ref().ok(), Some(&Reply::Done), "write {i}");
    }
    assert_eq!(raw_hget(&server, &s, "n").as_deref(), Some("0000000039"));
    let recorded = recorded_size(&server, &s);
    assert!(
        recorded <= 64 + 11,
        "recounted when it passed the limit: {recorded}"
    );
    assert!(
        recorded >= 11,
        "an upper bound of the 11 bytes held: {recorded}"
    );
}

#[actix_web::test]
async fn a_fast_write_past_a_limit_is_undone_and_refused() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (s, limits) = created(&c, "full", &[("a", "1"), ("b", "2")], (2, 32)).await;
    // A third key: past max_keys.
    let third = c.call(limited(&s, set(&[("c", "3")]), limits)).await;
    assert!(third.is_err(), "{:?}", third);
    assert_eq!(
        raw_hget(&server, &s, "c"),
        None,
        "the added key was removed"
    );
    // A value that grows the session past max_bytes: the old value comes back.
    let big = "x".repeat(40);
    let grown = c.call(limited(&s, set(&[("a", &big)]), limits)).await;
    assert!(grown.is_err(), "{:?}", grown);
    assert_eq!(raw_hget(&server, &s, "a").as_deref(), Some("1"));
    assert_eq!(
        recorded_size(&server, &s),
        4,
        "exact after the settle: a1 b2"
    );
    // Within the limits, still fine.
    let ok = c.call(limited(&s, set(&[("a", "9")]), limits)).await;
    assert_eq!(ok.as_ref().ok(), Some(&Reply::Done));
}

#[actix_web::test]
async fn a_fast_write_in_a_batch_that_meets_noscript_is_answered_from_its_first_run() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (s, limits) = created(&c, "flushed", &[("a", "1")], (1, 1024)).await;
    script_flush(&server);
    // The fast write adds a second key (past max_keys) and runs twice (NOSCRIPT on the
    // increment of another session); its first run saw the key added, so it is still undone.
    let other = key("flushed-other");
    let results = c
        .batch(vec![
            limited(&s, set(&[("b", "2")]), limits),
            cmd(&other, incr("n", 1), None),
        ])
        .await;
    assert!(results[0].is_err(), "{:?}", results[0]);
    assert_eq!(raw_hget(&server, &s, "b"), None);
    assert_eq!(results[1].as_ref().ok(), Some(&Reply::Gone));
}
