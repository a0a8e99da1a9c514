//! Batching and fusion: concurrent commands share pipelines, reads of one session fuse into
//! one HMGET and one refresh, and commands of one batch still behave as if run one after
//! another.

use std::sync::Arc;

use circumflex_session::testing::{Handle, Op, Reply};

use crate::support::engine::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn concurrent_operations_share_few_pipelines() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let sessions: Vec<Arc<str>> = (0..100).map(|i| key(&format!("busy-{i}"))).collect();
    let created = c
        .batch(
            sessions
                .iter()
                .map(|s| cmd(s, set_new(TTL, &[("name", "ann")]), Some(TTL)))
                .collect(),
        )
        .await;
    assert!(created.iter().all(|r| matches!(r, Ok(Reply::Done))));
    let before = c.stats();

    // Five rounds over the 100 sessions, all sent at once: incr, read, incr, set, incr.
    let commands = (0..500)
        .map(|i| {
            let s = &sessions[i % 100];
            let op = match i / 100 {
                0 | 2 | 4 => incr("hits", 1),
                1 => get(&["hits", "name"]),
                _ => set(&[("seen", "yes")]),
            };
            cmd(s, op, Some(TTL))
        })
        .collect();
    let results = c.batch(commands).await;

    for (i, result) in results.iter().enumerate() {
        let expected = match i / 100 {
            0 => Reply::Int(1),
            1 => values(&[Some("1"), Some("ann")]),
            2 => Reply::Int(2),
            3 => Reply::Done,
            _ => Reply::Int(3),
        };
        assert_eq!(result.as_ref().ok(), Some(&expected), "command {i}");
    }
    for s in sessions.iter().step_by(17) {
        assert_eq!(raw_hget(&server, s, "hits").as_deref(), Some("3"));
        assert_eq!(raw_hget(&server, s, "seen").as_deref(), Some("yes"));
    }

    let after = c.stats();
    let commands = after.commands - before.commands;
    let pipelines = after.pipelines - before.pipelines;
    assert_eq!(commands, 500);
    assert!(
        pipelines * 10 <= commands,
        "{commands} commands took {pipelines} pipelines"
    );
    assert!(after.max_batch > 1, "max_batch {}", after.max_batch);
    assert_eq!(
        after.round_trips - before.round_trips,
        pipelines,
        "a standalone server costs one round trip per batch (scripts loaded already)"
    );
    assert_eq!(after.queue_depth, 0);
}

#[actix_web::test]
async fn concurrent_reads_of_one_session_fuse_into_one_hmget_and_one_refresh() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("fused");
    let kv = [("a", "1"), ("b", "2"), ("c", "3")];
    assert_eq!(c.ok(&s, set_new(TTL, &kv), Some(TTL)).await, Reply::Done);
    let before = c.stats();
    let longer = Some(TTL * 2);

    let results = c
        .batch(vec![
            cmd(&s, get(&["a"]), longer),
            cmd(&s, get(&["b", "c"]), longer),
            cmd(&s, get(&["c", "a"]), longer),
            cmd(&s, get(&["zz"]), longer),
            cmd(&s, Op::Touch, longer),
        ])
        .await;

    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        replies,
        vec![
            values(&[Some("1")]),
            values(&[Some("2"), Some("3")]),
            values(&[Some("3"), Some("1")]),
            values(&[None]),
            Reply::Bool(true),
        ]
    );
    let after = c.stats();
    assert_eq!(after.pipelines - before.pipelines, 1, "one batch");
    assert_eq!(
        after.fused_reads - before.fused_reads,
        3,
        "three reads joined"
    );
    assert_eq!(
        after.fused_refreshes - before.fused_refreshes,
        4,
        "one refresh for five commands"
    );
    assert_eq!(
        after.redis_commands - before.redis_commands,
        2,
        "one PEXPIRE and one HMGET"
    );
    // The one refresh that was sent took effect: the TTL is now past the creation TTL.
    assert!(raw_pttl(&server, &s) > TTL.as_millis() as i64);
}

// Commands of one batch must behave as if run one after another (the memory backend does
// exactly that). These pin the cases where fusion could answer from a stale existence check.

/// A refreshing read batched after a write that found the session gone is Gone too.
async fn read_after_gone_write_in_one_batch(c: &Handle) {
    let s = key("expired-elsewhere");
    let results = c
        .batch(vec![
            cmd(&s, set(&[("a", "1")]), Some(TTL)),
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, Op::Entries, Some(TTL)),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(replies, vec![Reply::Gone, Reply::Gone, Reply::Gone]);
}

/// A read batched after the write that created the session sees it.
async fn read_after_creating_write_in_one_batch(c: &Handle) {
    let s = key("born-in-batch");
    let results = c
        .batch(vec![
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, set_new(TTL, &[("a", "1")]), Some(TTL)),
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, Op::Touch, Some(TTL)),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        replies,
        vec![
            Reply::Gone,
            Reply::Done,
            values(&[Some("1")]),
            Reply::Bool(true)
        ]
    );
}

/// A refreshing read batched after an invalidate of the session is Gone.
async fn read_after_invalidate_in_one_batch(c: &Handle) {
    let s = key("logged-out");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    let results = c
        .batch(vec![
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, Op::Invalidate, None),
            cmd(&s, get(&["a"]), Some(TTL)),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        replies,
        vec![values(&[Some("1")]), Reply::Bool(true), Reply::Gone]
    );
}

#[actix_web::test]
async fn read_batched_after_a_write_to_a_missing_session_is_gone_on_redis() {
    let server = RedisServer::start();
    read_after_gone_write_in_one_batch(&redis_client(&server).await).await;
    assert_eq!(raw_exists(&server, "session:expired-elsewhere"), 0);
}

#[actix_web::test]
async fn read_batched_after_a_write_to_a_missing_session_is_gone_in_memory() {
    read_after_gone_write_in_one_batch(&memory_client()).await;
}

#[actix_web::test]
async fn read_batched_after_the_creating_write_sees_the_new_session_on_redis() {
    let server = RedisServer::start();
    read_after_creating_write_in_one_batch(&redis_client(&server).await).await;
}

#[actix_web::test]
async fn read_batched_after_the_creating_write_sees_the_new_session_in_memory() {
    read_after_creating_write_in_one_batch(&memory_client()).await;
}

#[actix_web::test]
async fn read_batched_after_an_invalidate_is_gone_on_redis() {
    let server = RedisServer::start();
    read_after_invalidate_in_one_batch(&redis_client(&server).await).await;
}

#[actix_web::test]
async fn read_batched_after_an_invalidate_is_gone_in_memory() {
    read_after_invalidate_in_one_batch(&memory_client()).await;
}
