//! The Lua scripts: a script cache flushed under us (NOSCRIPT) is reloaded and the batch
//! replayed without running any command twice, and a write wider than one `unpack` is applied
//! whole.

use std::time::Duration;

use circumflex_session::testing::{Command, Limits, Op, Reply};

use crate::support::engine::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn writes_succeed_after_script_flush() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("scripted");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );

    script_flush(&server);
    assert_eq!(c.ok(&s, set(&[("a", "2")]), Some(TTL)).await, Reply::Done);
    assert_eq!(raw_hget(&server, &s, "a").as_deref(), Some("2"));

    script_flush(&server);
    assert_eq!(c.ok(&s, incr("n", 4), None).await, Reply::Int(4));
    assert_eq!(raw_hget(&server, &s, "n").as_deref(), Some("4"));

    script_flush(&server);
    let renewed = key("scripted-renewed");
    let renew = Op::Renew {
        to: renewed.clone(),
        ttl: TTL,
    };
    assert_eq!(c.ok(&s, renew, None).await, Reply::Done);
    assert_eq!(raw_hget(&server, &renewed, "a").as_deref(), Some("2"));
    assert_eq!(raw_exists(&server, &s), 0);
}

#[actix_web::test]
async fn batch_replayed_after_script_flush_reports_each_command_once() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("replayed");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );

    // The scripts are gone; the batch meets NOSCRIPT and is retried after loading them.
    // The write ran before the invalidate, so it succeeded and the invalidate found the session.
    script_flush(&server);
    let results = c
        .batch(vec![
            cmd(&s, set(&[("a", "2")]), Some(TTL)),
            cmd(&s, Op::Invalidate, None),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(replies, vec![Reply::Done, Reply::Bool(true)]);
    assert_eq!(raw_exists(&server, &s), 0);
}

#[actix_web::test]
async fn a_write_of_more_fields_than_one_lua_unpack_takes_is_applied_whole() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let session = key("session:wide");
    let ttl = Duration::from_secs(60);
    // 1200 fields = 2400 arguments: more than one chunk of the write script's unpack.
    let wide: Vec<(String, Vec<u8>)> = (0..1200)
        .map(|i| (format!("f{i}"), format!("{i}").into_bytes()))
        .collect();
    let limits = Limits {
        max_keys: 1200,
        max_bytes: 1 << 20,
    };
    let write = |op| Command {
        key: session.clone(),
        op,
        refresh: None,
        limits,
        reindex: false,
    };
    let replies = client
        .batch(vec![write(Op::Set(create(ttl), wide.clone().into()))])
        .await;
    assert!(matches!(replies[..], [Ok(Reply::Done)]), "{replies:?}");
    let stored = raw_hgetall(&server, &session);
    assert_eq!(
        stored.len(),
        1202,
        "1200 fields, the creation stamp and the size"
    );
    let replies = client
        .batch(vec![write(Op::Remove(
            wide.iter().map(|(k, _)| k.clone()).collect(),
        ))])
        .await;
    assert!(matches!(replies[..], [Ok(Reply::Int(1200))]), "{replies:?}");
    assert_eq!(
        raw_hgetall(&server, &session).len(),
        2,
        "only the metadata is left"
    );
    assert_eq!(raw_hget(&server, &session, "\0size").as_deref(), Some("0"));
}
