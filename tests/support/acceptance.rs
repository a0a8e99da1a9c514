//! The acceptance suite: every op's documented semantics, step by step, on one engine. The
//! engine tests run it on a standalone Redis and on the memory backend, the cluster tests on a
//! Redis Cluster, so every store is known to behave alike.

use std::sync::Arc;

use circumflex_session::testing::{self, Op, Reply, WriteMode, META_CREATED};
use circumflex_session::{Error, SessionEngine};

use super::engine::*;

/// Every op's semantics, step by step, on one engine. Run against every backend.
pub async fn acceptance(engine: SessionEngine) {
    let c = testing::start(&engine);
    // Keys that a renew connects share a hash tag, as session keys do: on a cluster the old and
    // new key of a renew must be in one slot. The three tags land on three different primaries
    // of a three-primary cluster.
    let s = tagged("a", "acceptance");
    let fresh = Some(TTL);

    // A session that does not exist: reads see nothing; reads that refresh see it gone.
    assert_eq!(c.ok(&s, get(&["a"]), None).await, values(&[None]));
    assert_eq!(
        c.ok(&s, get(&["a", "b"]), None).await,
        values(&[None, None])
    );
    assert_eq!(c.ok(&s, get(&["a", "b"]), fresh).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&s, Op::Entries, fresh).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Touch, fresh).await, Reply::Bool(false));
    assert_eq!(c.ok(&s, Op::Touch, None).await, Reply::Bool(false));

    // Create, then get and mget.
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), fresh).await,
        Reply::Done
    );
    assert_eq!(c.ok(&s, get(&["a"]), fresh).await, values(&[Some("1")]));
    assert_eq!(
        c.ok(&s, get(&["a", "b"]), None).await,
        values(&[Some("1"), None])
    );

    // Set many; entries show user fields only, never the metadata.
    assert_eq!(
        c.ok(&s, set(&[("b", "2"), ("c", "3")]), fresh).await,
        Reply::Done
    );
    assert_eq!(
        c.ok(&s, get(&["c", "a", "b"]), None).await,
        values(&[Some("3"), Some("1"), Some("2")])
    );
    let all = sorted(c.ok(&s, Op::Entries, fresh).await);
    assert_eq!(all, entries(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let Reply::Entries(all) = all else {
        unreachable!()
    };
    assert!(
        all.iter()
            .all(|(k, _)| k != META_CREATED && !k.starts_with('\0')),
        "metadata leaked into entries: {all:?}"
    );
    assert_eq!(
        c.ok(&s, Op::Remove(vec![]), None).await,
        Reply::Int(0),
        "removing nothing removes nothing"
    );

    // Remove counts what it removed.
    assert_eq!(
        c.ok(&s, Op::Remove(vec!["b".into(), "missing".into()]), fresh)
            .await,
        Reply::Int(1)
    );
    assert_eq!(
        c.ok(&s, Op::Remove(vec!["b".into()]), None).await,
        Reply::Int(0)
    );
    assert_eq!(
        c.ok(&s, get(&["a", "b"]), None).await,
        values(&[Some("1"), None])
    );

    // Incr: a missing field counts as 0; an existing one is added to.
    assert_eq!(c.ok(&s, incr("n", 5), fresh).await, Reply::Int(5));
    assert_eq!(c.ok(&s, incr("n", -2), None).await, Reply::Int(3));
    assert_eq!(c.ok(&s, incr("a", 10), None).await, Reply::Int(11));
    assert_eq!(
        c.ok(&s, get(&["n", "a"]), None).await,
        values(&[Some("3"), Some("11")])
    );

    // Incr of a non-integer fails with NotAnInteger naming the field, and changes nothing.
    assert_eq!(c.ok(&s, set(&[("word", "hello")]), None).await, Reply::Done);
    match c.run(&s, incr("word", 1), None).await {
        Err(Error::NotAnInteger(field)) => assert_eq!(field, "word"),
        other => panic!("incr of a non-integer gave {other:?}"),
    }
    assert_eq!(
        c.ok(&s, get(&["word"]), None).await,
        values(&[Some("hello")])
    );
    match c.run(&s, incr("n", i64::MAX), None).await {
        Err(Error::NotAnInteger(field)) => assert_eq!(field, "n"),
        other => panic!("overflowing incr gave {other:?}"),
    }
    assert_eq!(c.ok(&s, get(&["n"]), None).await, values(&[Some("3")]));

    // SetIfAbsent sets once.
    let once = |v: &str| Op::SetIfAbsent(WriteMode::Existing, "once".into(), v.into());
    assert_eq!(c.ok(&s, once("x"), fresh).await, Reply::Bool(true));
    assert_eq!(c.ok(&s, once("y"), fresh).await, Reply::Bool(false));
    assert_eq!(c.ok(&s, get(&["once"]), None).await, values(&[Some("x")]));

    // Touch of a live session.
    assert_eq!(c.ok(&s, Op::Touch, fresh).await, Reply::Bool(true));
    assert_eq!(c.ok(&s, Op::Touch, None).await, Reply::Bool(true));

    // Existing-mode writes to a missing session are Gone and create nothing.
    let ghost = tagged("a", "ghost");
    for op in [
        set(&[("a", "1")]),
        Op::Remove(vec!["a".into()]),
        incr("n", 1),
        Op::SetIfAbsent(WriteMode::Existing, "a".into(), b"1".to_vec()),
    ] {
        let what = format!("{op:?}");
        assert_eq!(c.ok(&ghost, op, fresh).await, Reply::Gone, "{what}");
    }
    assert_eq!(c.ok(&ghost, Op::Touch, None).await, Reply::Bool(false));
    assert_eq!(c.ok(&ghost, Op::Entries, None).await, entries(&[]));

    // Creating writes of every kind create.
    let counter = tagged("b", "counter");
    let op = Op::Incr(create(TTL), "n".into(), 2);
    assert_eq!(c.ok(&counter, op, fresh).await, Reply::Int(2));
    assert_eq!(c.ok(&counter, Op::Touch, None).await, Reply::Bool(true));
    let flag = tagged("c", "flag");
    let op = Op::SetIfAbsent(create(TTL), "f".into(), b"on".to_vec());
    assert_eq!(c.ok(&flag, op, fresh).await, Reply::Bool(true));
    assert_eq!(
        sorted(c.ok(&flag, Op::Entries, None).await),
        entries(&[("f", "on")])
    );
    // A creating write to a session that exists just writes (no reset of its data).
    assert_eq!(
        c.ok(&flag, set_new(TTL, &[("g", "2")]), fresh).await,
        Reply::Done
    );
    assert_eq!(
        sorted(c.ok(&flag, Op::Entries, None).await),
        entries(&[("f", "on"), ("g", "2")])
    );

    // Renew moves the data to the new key; the old key is gone.
    let before = sorted(c.ok(&s, Op::Entries, None).await);
    let renewed = tagged("a", "acceptance-renewed");
    let renew = |to: &Arc<str>| Op::Renew {
        to: to.clone(),
        ttl: TTL,
    };
    assert_eq!(c.ok(&s, renew(&renewed), None).await, Reply::Done);
    assert_eq!(sorted(c.ok(&renewed, Op::Entries, fresh).await), before);
    assert_eq!(c.ok(&s, get(&["a"]), fresh).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Touch, None).await, Reply::Bool(false));
    // Renew of a missing session is Gone and creates nothing.
    let nowhere = tagged("a", "nowhere");
    assert_eq!(c.ok(&s, renew(&nowhere), None).await, Reply::Gone);
    assert_eq!(c.ok(&ghost, renew(&nowhere), None).await, Reply::Gone);
    assert_eq!(c.ok(&nowhere, Op::Touch, None).await, Reply::Bool(false));

    // Invalidate: true once, then false; the session is gone.
    assert_eq!(
        c.ok(&renewed, Op::Invalidate, None).await,
        Reply::Bool(true)
    );
    assert_eq!(
        c.ok(&renewed, Op::Invalidate, None).await,
        Reply::Bool(false)
    );
    assert_eq!(c.ok(&renewed, get(&["a"]), fresh).await, Reply::Gone);
    assert_eq!(c.ok(&renewed, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&renewed, set(&[("a", "1")]), fresh).await, Reply::Gone);

    // Nothing above was refused by the store.
    let stats = c.stats();
    assert_eq!(stats.errors_unavailable + stats.errors_timeout, 0);
    assert_eq!(stats.queue_depth, 0);
}
