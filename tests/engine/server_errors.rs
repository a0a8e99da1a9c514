//! Per-command server errors: a command Redis refuses (WRONGTYPE) fails alone, and the rest
//! of its batch succeeds.

use std::sync::Arc;

use circumflex_session::testing::{Handle, Op, Reply};
use circumflex_session::Error;

use crate::support::engine::*;
use crate::support::RedisServer;

/// A session hash, and a plain string under another session key.
async fn good_and_bad(server: &RedisServer, c: &Handle) -> (Arc<str>, Arc<str>) {
    let good = key("good");
    let bad = key("bad");
    assert_eq!(
        c.ok(&good, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    redis::cmd("SET")
        .arg(&*bad)
        .arg("not a hash")
        .query::<()>(&mut server.connection())
        .expect("SET");
    (good, bad)
}

fn assert_wrongtype(result: &Result<Reply, Error>) {
    match result {
        Err(Error::Server(msg)) => assert!(msg.contains("WRONGTYPE"), "{msg}"),
        other => panic!("expected a WRONGTYPE server error, got {other:?}"),
    }
}

#[actix_web::test]
async fn wrongtype_read_fails_only_that_command_of_the_batch() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (good, bad) = good_and_bad(&server, &c).await;
    let other = key("other");
    let before = c.stats();

    let results = c
        .batch(vec![
            cmd(&good, get(&["a"]), Some(TTL)),
            cmd(&bad, get(&["a"]), Some(TTL)),
            cmd(&good, set(&[("b", "2")]), None),
            cmd(&good, incr("n", 1), None),
            cmd(&good, Op::Touch, Some(TTL)),
            cmd(&other, get(&["a", "b"]), None),
        ])
        .await;

    let after = c.stats();
    assert_eq!(after.pipelines - before.pipelines, 1, "one batch");
    assert_eq!(after.errors_server - before.errors_server, 1);
    assert_eq!(results[0].as_ref().unwrap(), &values(&[Some("1")]));
    assert_wrongtype(&results[1]);
    assert_eq!(results[2].as_ref().unwrap(), &Reply::Done);
    assert_eq!(results[3].as_ref().unwrap(), &Reply::Int(1));
    assert_eq!(results[4].as_ref().unwrap(), &Reply::Bool(true));
    assert_eq!(results[5].as_ref().unwrap(), &values(&[None, None]));
    assert_eq!(raw_hget(&server, &good, "b").as_deref(), Some("2"));
}

#[actix_web::test]
async fn wrongtype_write_fails_only_that_command_of_the_batch() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (good, bad) = good_and_bad(&server, &c).await;
    let before = c.stats();

    let results = c
        .batch(vec![
            cmd(&good, set(&[("b", "2")]), Some(TTL)),
            cmd(&bad, set(&[("b", "2")]), Some(TTL)),
            cmd(&good, get(&["a", "b"]), None),
        ])
        .await;

    let after = c.stats();
    assert_eq!(after.pipelines - before.pipelines, 1, "one batch");
    assert_eq!(results[0].as_ref().unwrap(), &Reply::Done);
    assert_wrongtype(&results[1]);
    assert_eq!(
        results[2].as_ref().unwrap(),
        &values(&[Some("1"), Some("2")])
    );
    let raw: String = redis::cmd("GET")
        .arg(&*bad)
        .query(&mut server.connection())
        .expect("GET");
    assert_eq!(raw, "not a hash", "the bad key was left alone");
}
