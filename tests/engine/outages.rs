//! When the store cannot serve: Redis killed under a batch, Redis down from the start, a full
//! queue, and commands whose deadline passes while they wait in the queue. Every waiter gets
//! an answer, none hangs, and the engine serves again once Redis is back.

use std::time::Duration;

use circumflex_session::testing::{self, Command, Op, Reply, WriteMode};
use circumflex_session::{ActorConfig, Error, RedisBackend, RedisConfig, SessionEngine};
use futures::future::join_all;

use crate::support::engine::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn redis_killed_with_a_batch_in_flight_fails_every_waiter_and_the_engine_recovers() {
    let mut server = RedisServer::start();
    let config = ActorConfig {
        deadline_ms: 1000,
        ..ActorConfig::default()
    };
    let c = redis_client_with(&server, config).await;
    let s = key("doomed");
    // Warm up: a pooled connection exists and the scripts are loaded.
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );

    // Freeze Redis so the next batch stays in flight, then kill it under that batch.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("ALL")
        .query::<()>(&mut server.connection())
        .expect("CLIENT PAUSE");
    let before = c.stats();
    let commands = (0..10)
        .map(|i| match i % 3 {
            0 => cmd(&s, get(&["a"]), Some(TTL)),
            1 => cmd(&s, incr("n", 1), Some(TTL)),
            _ => cmd(&key(&format!("other-{i}")), Op::Touch, None),
        })
        .collect();
    // Real time: the batch must be on the wire to the paused Redis when it dies.
    let kill = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.kill();
    };
    let (results, ()) =
        tokio::time::timeout(NO_HANG, futures::future::join(c.batch(commands), kill))
            .await
            .expect("every waiter is answered; none hangs");

    for (i, result) in results.iter().enumerate() {
        assert!(is_store_down(result), "command {i}: {result:?}");
    }
    let after = c.stats();
    assert!(after.pipelines > before.pipelines, "the batch was sent");
    assert_eq!(
        (after.errors_unavailable + after.errors_timeout)
            - (before.errors_unavailable + before.errors_timeout),
        10
    );

    // A new Redis on the same port (empty: no persistence): the same engine serves again.
    server.restart();
    let revived = key("revived");
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = tokio::time::timeout(
            NO_HANG,
            c.run(&revived, set_new(TTL, &[("a", "2")]), Some(TTL)),
        )
        .await
        .expect("no hang after restart");
        match result {
            Ok(reply) => {
                assert_eq!(reply, Reply::Done);
                break;
            }
            Err(Error::Unavailable(_) | Error::Timeout(_)) if attempts < 50 => {
                // Real time: the pool reconnects to the restarted Redis over the network.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("engine still failing after {attempts} attempts: {e}"),
        }
    }
    assert_eq!(
        c.ok(&revived, get(&["a"]), Some(TTL)).await,
        values(&[Some("2")])
    );
    assert_eq!(raw_hget(&server, &revived, "a").as_deref(), Some("2"));
    assert_eq!(c.stats().queue_depth, 0);
}

#[actix_web::test]
async fn redis_down_from_the_start_fails_calls_instead_of_hanging() {
    let url = format!("redis://127.0.0.1:{}", crate::support::unused_port());
    let backend =
        RedisBackend::connect(RedisConfig::new(url).connect_timeout(Duration::from_millis(300)))
            .await
            .expect("connect is lazy: no Redis needed yet");
    let config = ActorConfig {
        deadline_ms: 1000,
        ..ActorConfig::default()
    };
    let c = testing::start(&SessionEngine::with_config(backend, config).unwrap());
    let s = key("nobody-home");

    for op in [get(&["a"]), set_new(TTL, &[("a", "1")])] {
        let result = tokio::time::timeout(NO_HANG, c.run(&s, op, Some(TTL)))
            .await
            .expect("the call returns; it does not hang");
        assert!(is_store_down(&result), "{result:?}");
    }
    let stats = c.stats();
    assert_eq!(stats.errors_unavailable + stats.errors_timeout, 2);
    assert_eq!(stats.queue_depth, 0);
}

#[actix_web::test]
async fn full_queue_refuses_the_excess_with_overloaded_and_drains_to_zero() {
    let server = RedisServer::start();
    let config = ActorConfig {
        queue_depth: 5,
        ..ActorConfig::default()
    };
    let c = redis_client_with(&server, config).await;
    let s = key("crowded");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("n", "0")]), Some(TTL)).await,
        Reply::Done
    );
    let before = c.stats();

    let results = c
        .batch((0..50).map(|_| cmd(&s, incr("n", 1), None)).collect())
        .await;

    let done = results.iter().filter(|r| r.is_ok()).count();
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Overloaded(_))))
        .count();
    assert_eq!(done + overloaded, 50, "only successes and refusals");
    assert!(done >= 5, "the queue takes 5, {done} got through");
    assert!(overloaded > 0, "nothing was refused");
    let after = c.stats();
    assert_eq!(
        after.errors_overloaded - before.errors_overloaded,
        overloaded as u64
    );
    assert_eq!(after.queue_depth, 0);
    // Refused commands never ran: the counter saw exactly the accepted ones.
    assert_eq!(
        c.ok(&s, get(&["n"]), None).await,
        values(&[Some(&done.to_string())])
    );
}

/// How many `EVALSHA` Redis has run (`INFO commandstats`).
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn commands_still_queued_when_their_deadline_passes_are_never_sent() {
    let server = RedisServer::start();
    let backend = RedisBackend::connect(RedisConfig::new(server.url()))
        .await
        .expect("valid config");
    let config = ActorConfig {
        deadline_ms: 200,
        ..ActorConfig::default()
    };
    let engine = SessionEngine::with_config(backend, config).unwrap();
    let actor = testing::start(&engine);
    let write = |id: usize| Command {
        key: format!("session:queued{id}").into(),
        op: Op::Set(
            WriteMode::Create {
                created: 1,
                ttl: Duration::from_secs(60),
            },
            vec![("a".to_owned(), b"1".to_vec())].into(),
        ),
        refresh: None,
        limits: Default::default(),
        reindex: false,
    };
    // One write first, on the real clock, so that the pool is connected and the scripts are
    // loaded.
    actor.call(write(0)).await.expect("first write");
    let evalsha_before = evalsha_calls(&server);

    // From here on nothing should touch the network, so Tokio's clock (which command
    // deadlines read) can be the test's: paused, and moved past the deadlines by hand.
    tokio::time::pause();
    let mut calls = Box::pin(join_all((1..=5).map(|i| actor.call(write(i)))));
    // Polled once: the five commands are in the actor's queue, and the actor has not run.
    assert!(futures::poll!(&mut calls).is_pending());
    // The deadlines pass while the commands wait in the queue, as they do when a handler
    // blocks the worker the actor shares. (`advance` moves the clock before it yields.)
    tokio::time::advance(Duration::from_millis(300)).await;
    for result in calls.await {
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    }
    tokio::time::resume();
    // Real time, only to catch a failure: had a queued command been sent, its EVALSHA would
    // be on its way to Redis over the pool's connection; give it time to arrive before
    // asking Redis over another connection.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        evalsha_calls(&server),
        evalsha_before,
        "no queued command reached Redis"
    );
    let mut conn = server.connection();
    for i in 1..=5 {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("session:queued{i}"))
            .query(&mut conn)
            .unwrap();
        assert!(!exists, "session:queued{i} was written");
    }
}
