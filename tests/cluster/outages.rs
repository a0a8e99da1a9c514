//! Faults that concern some slots only: a slot nobody serves (`CLUSTERDOWN`), a renew whose
//! slot is migrating (`TRYAGAIN`), a primary that died with no replica to replace it, and a
//! password that must reach every node (and never an error message).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use circumflex_session::testing::{self, Op, Reply};
use circumflex_session::{ActorConfig, Error, RedisBackend, RedisConfig, SessionEngine};
use futures::future::join_all;
use serde_json::json;

use crate::load::*;
use crate::support::app::{self, app_on, send, session_ids, session_key};
use crate::support::engine::*;
use crate::support::{unused_port, RedisCluster};

/// The primaries keep serving the slots they have when another is missing.
const PARTIAL_COVERAGE: [&str; 2] = ["--cluster-require-full-coverage", "no"];

#[actix_web::test]
async fn a_slot_that_no_node_serves_gives_503_to_its_sessions_only() {
    let cluster = RedisCluster::start(0, &PARTIAL_COVERAGE);
    let engine = cluster_engine(&cluster).await;
    let app = app_on(engine.clone()).await;
    let mut cookies = Vec::new();
    for i in 0..12 {
        let uri = format!("/login?user=u{i}");
        cookies.push(send(&app, app::get(&uri, None).to_request()).await.cookie());
    }
    let ids = session_ids(&cluster);
    let slot_of = |cookie: &actix_web::cookie::Cookie<'_>| {
        let id = ids
            .iter()
            .find(|id| cookie.value().contains(id.as_str()))
            .expect("a cookie carries its session id");
        cluster.keyslot(&session_key(id))
    };
    let slots: Vec<u16> = cookies.iter().map(slot_of).collect();
    let down = slots[0];
    assert_eq!(slots.iter().filter(|&&s| s == down).count(), 1);
    let owner = cluster.owner(down);
    cluster.unassign_slot(down);

    let before = engine.stats();
    for round in 1..=3 {
        let replies = join_all(
            cookies
                .iter()
                .map(|c| send(&app, app::get("/counter", Some(c)).to_request())),
        )
        .await;
        assert_eq!(replies[0].status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(replies[0].text(), "Service Unavailable");
        for reply in &replies[1..] {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.json(), json!({ "counter": round }));
        }
    }
    let after = engine.stats();
    assert_eq!(after.errors_unavailable - before.errors_unavailable, 3);

    // Served again: nothing of the refused increments ran.
    cluster.assign_slot(down, owner);
    let back = send(&app, app::get("/counter", Some(&cookies[0])).to_request()).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text());
    assert_eq!(back.json(), json!({ "counter": 1 }));
}

#[actix_web::test]
async fn a_renew_while_its_slot_migrates_gets_503_after_a_few_tries_and_others_are_served() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    let c = testing::start(&engine);
    let others: Vec<Arc<str>> = sessions_on_every_primary(&cluster, 1, "bystander")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let (tag, slot) = tags()
        .find(|(_, slot)| others.iter().all(|o| cluster.keyslot(o) != *slot))
        .expect("a free tag");
    let (old, new) = (tagged(&tag, "old"), tagged(&tag, "new"));
    let mut all = others.clone();
    all.push(old.clone());
    create_sessions(&c, &all).await;
    let from = cluster.owner(slot);
    let to = *cluster.primaries().iter().find(|&&p| p != from).unwrap();
    // Nothing migrated yet: the old key is on the source, the new one on neither, so the
    // renew's two keys are split and the source answers TRYAGAIN.
    cluster.begin_migration(slot, from, to);

    let before = engine.stats();
    let renew = Op::Renew {
        to: new.clone(),
        ttl: TTL,
    };
    let mut commands = vec![cmd(&old, renew.clone(), None)];
    commands.extend(others.iter().map(|o| cmd(o, incr("n", 1), None)));
    commands.push(cmd(&old, get(&["n"]), None));
    let results = c.batch(commands).await;
    match &results[0] {
        Err(Error::Unavailable(e)) => assert!(e.to_string().contains("TRYAGAIN"), "{e}"),
        other => panic!("renew during the migration answered {other:?}"),
    }
    for result in &results[1..4] {
        assert_eq!(result.as_ref().ok(), Some(&Reply::Int(1)));
    }
    assert_eq!(
        results[4].as_ref().ok(),
        Some(&values(&[Some("0")])),
        "the session stayed where it was"
    );
    let after = engine.stats();
    assert_eq!(
        after.round_trips - before.round_trips,
        3 + 3,
        "three primaries, then three more tries of the renew: {after:?}"
    );

    cluster.migrate_slot_keys(slot, from, to);
    cluster.finish_migration(slot, to);
    assert_eq!(c.ok(&old, renew, None).await, Reply::Done);
    assert_eq!(counter(&cluster, &new), 0);
}

#[actix_web::test]
async fn a_dead_primary_without_replica_fails_its_sessions_at_once_and_no_others() {
    let mut cluster = RedisCluster::start(0, &PARTIAL_COVERAGE);
    // Were the dead primary's pool to wait out its connect timeout, the whole batch would
    // miss its deadline: healthy sessions too would time out.
    let config = RedisConfig::cluster(cluster.urls()).connect_timeout(Duration::from_secs(5));
    let backend = RedisBackend::connect(config.clone()).await.expect("valid");
    let engine = SessionEngine::with_config(
        backend,
        ActorConfig {
            deadline_ms: 3000,
            ..ActorConfig::default()
        },
    )
    .expect("valid");
    let checker = RedisBackend::connect(config).await.expect("valid");
    checker
        .check()
        .await
        .expect("a healthy cluster passes the check");
    let c = testing::start(&engine);
    let sessions = sessions_on_every_primary(&cluster, 4, "dead-or-alive");
    let keys: Vec<Arc<str>> = sessions.iter().map(|(k, _)| k.clone()).collect();
    create_sessions(&c, &keys).await;
    let dead = sessions[0].1;
    cluster.kill(dead);

    for expected in [1, 2] {
        let results = c
            .batch(keys.iter().map(|k| cmd(k, incr("n", 1), None)).collect())
            .await;
        for ((key, port), result) in sessions.iter().zip(results) {
            if *port == dead {
                assert!(
                    matches!(result, Err(Error::Unavailable(_))),
                    "{key}: {result:?}"
                );
            } else {
                assert_eq!(result.ok(), Some(Reply::Int(expected)), "{key}");
            }
        }
    }
    let error = checker
        .check()
        .await
        .expect_err("a dead primary fails the check");
    assert!(error.to_string().contains(&dead.to_string()), "{error}");

    // Back, empty (no persistence): its sessions are gone, the others carry on.
    cluster.restart(dead);
    cluster.wait_stable();
    let results = c
        .batch(keys.iter().map(|k| cmd(k, incr("n", 1), None)).collect())
        .await;
    for ((key, port), result) in sessions.iter().zip(results) {
        let expected = if *port == dead {
            Reply::Gone
        } else {
            Reply::Int(3)
        };
        assert_eq!(result.ok(), Some(expected), "{key}");
    }
}

#[actix_web::test]
async fn one_seed_url_with_a_password_reaches_every_primary_and_no_error_shows_it() {
    let cluster = RedisCluster::start(0, &[]);
    let keys: Vec<Arc<str>> = sessions_on_every_primary(&cluster, 2, "guarded")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let seed = cluster.primaries()[0];
    for port in cluster.primaries() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg("cl-s3cret")
            .query(&mut cluster.connection(port))
            .expect("CONFIG SET requirepass");
    }

    // Only one node is named; the others are found through it and need the password too.
    let url = format!("redis://:cl-s3cret@127.0.0.1:{seed}");
    let backend = app::checked_backend(RedisConfig::cluster([url])).await;
    let c = testing::start(&SessionEngine::new(backend));
    create_sessions(&c, &keys).await;
    for key in &keys {
        assert_eq!(c.ok(key, incr("n", 1), None).await, Reply::Int(1));
    }

    let wrong = format!("redis://:wrong-s3cret@127.0.0.1:{seed}");
    let backend = RedisBackend::connect(RedisConfig::cluster([wrong]))
        .await
        .expect("valid");
    let shown = format!("{backend:?}");
    let checked = backend.check().await.expect_err("a wrong password fails");
    let c = testing::start(&SessionEngine::new(backend));
    let result = c.run(&keys[0], get(&["n"]), None).await;
    let Err(error @ Error::Unavailable(_)) = result else {
        panic!("a wrong password answered {result:?}")
    };
    for text in [
        shown,
        checked.to_string(),
        error.to_string(),
        format!("{error:?}"),
    ] {
        assert!(!text.contains("s3cret"), "{text}");
    }
    assert!(checked.to_string().contains("WRONGPASS"), "{checked}");
}

#[actix_web::test]
async fn a_cluster_that_cannot_be_reached_fails_calls_with_503_and_says_why() {
    let seeds = [unused_port(), unused_port()].map(|p| format!("redis://127.0.0.1:{p}"));
    let backend = RedisBackend::connect(RedisConfig::cluster(seeds))
        .await
        .expect("nothing is connected before use");
    let checked = backend.check().await.expect_err("no node answers");
    assert!(
        checked.to_string().contains("cluster node 127.0.0.1:"),
        "{checked}"
    );
    let c = testing::start(&SessionEngine::new(backend));
    let s = tagged("x", "nowhere");
    match c.run(&s, get(&["a"]), None).await {
        Err(error @ Error::Unavailable(_)) => assert!(
            error.to_string().contains("slot map"),
            "the error says why: {error}"
        ),
        other => panic!("an unreachable cluster answered {other:?}"),
    }
}
