//! Redirects on a live cluster: a slot moved behind the backend's back (`MOVED`), a slot in
//! the middle of a migration (`ASK`), and a primary that lost its scripts (`NOSCRIPT`). Each
//! write must run exactly once, and only the redirected commands are sent again.

use std::sync::Arc;

use circumflex_session::testing::{self, Op, Reply};

use crate::load::*;
use crate::support::engine::*;
use crate::support::{owner_in, RedisCluster};

/// Two sessions on the first primary (in different slots) and one on the second.
fn three_sessions(cluster: &RedisCluster) -> (Arc<str>, Arc<str>, Arc<str>, u16, u16) {
    let primaries = cluster.primaries();
    let (p, q) = (primaries[0], primaries[1]);
    let view = cluster.view(p);
    let on = |port: u16, n: usize, name: &str| {
        let (tag, _) = tags()
            .filter(|(_, slot)| owner_in(&view, *slot) == Some(port))
            .nth(n)
            .expect("tags on every primary");
        tagged(&tag, name)
    };
    (
        on(p, 0, "moving"),
        on(p, 1, "staying"),
        on(q, 0, "other"),
        p,
        q,
    )
}

#[actix_web::test]
async fn a_moved_slot_resends_only_its_commands_and_each_write_runs_once() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    let c = testing::start(&engine);
    let (moving, staying, other, p, q) = three_sessions(&cluster);
    create_sessions(&c, &[moving.clone(), staying.clone(), other.clone()]).await;

    // The backend's map still says `p`.
    cluster.move_slot(cluster.keyslot(&moving), p, q);
    let before = engine.stats();
    let results = c
        .batch(vec![
            cmd(&moving, incr("n", 1), None),
            cmd(&staying, incr("n", 1), None),
            cmd(&other, incr("n", 1), None),
            cmd(&moving, get(&["n"]), None),
            cmd(&staying, get(&["n"]), None),
        ])
        .await;
    let results: Vec<Reply> = results.into_iter().map(|r| r.expect("served")).collect();
    assert_eq!(
        results,
        vec![
            Reply::Int(1),
            Reply::Int(1),
            Reply::Int(1),
            values(&[Some("1")]),
            values(&[Some("1")]),
        ]
    );
    let after = engine.stats();
    assert_eq!(
        after.redirects - before.redirects,
        2,
        "only the moved session's two commands went again: {after:?}"
    );
    assert_eq!(
        after.round_trips - before.round_trips,
        3,
        "two primaries, then the new owner: {after:?}"
    );
    for key in [&moving, &staying, &other] {
        assert_eq!(counter(&cluster, key), 1, "{key} ran once");
    }

    // The map was patched: the moved session is served without a redirect.
    let before = engine.stats();
    assert_eq!(c.ok(&moving, incr("n", 1), None).await, Reply::Int(2));
    assert_eq!(engine.stats().redirects, before.redirects);
}

#[actix_web::test]
async fn a_migrating_slot_sends_each_redirected_command_after_its_own_asking() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    let c = testing::start(&engine);
    let (moving, _, _, p, q) = three_sessions(&cluster);
    // Three sessions of one slot: one migrated already, one not yet, one created during it.
    let tag = &moving[moving.find('{').unwrap() + 1..moving.find('}').unwrap()];
    let (moved, unmoved, fresh) = (
        tagged(tag, "moved"),
        tagged(tag, "unmoved"),
        tagged(tag, "fresh"),
    );
    create_sessions(&c, &[moved.clone(), unmoved.clone()]).await;
    let slot = cluster.keyslot(&moved);
    cluster.begin_migration(slot, p, q);
    cluster.migrate_keys(p, q, &[&moved]);

    let before = engine.stats();
    let results = c
        .batch(vec![
            cmd(&moved, incr("n", 1), None),
            cmd(&unmoved, incr("n", 1), None),
            cmd(&moved, get(&["n"]), None),
            cmd(&unmoved, get(&["n"]), None),
            cmd(&fresh, Op::Incr(create(TTL), "n".into(), 5), Some(TTL)),
            cmd(&fresh, get(&["n"]), None),
        ])
        .await;
    let results: Vec<Reply> = results.into_iter().map(|r| r.expect("served")).collect();
    assert_eq!(
        results,
        vec![
            Reply::Int(1),
            Reply::Int(1),
            values(&[Some("1")]),
            values(&[Some("1")]),
            Reply::Int(5),
            values(&[Some("5")]),
        ]
    );
    let after = engine.stats();
    assert_eq!(
        after.redirects - before.redirects,
        4,
        "the migrated and the new session's commands were asked elsewhere: {after:?}"
    );

    // No command left a copy on the wrong side: the migration of the rest of the slot meets
    // no key that exists on both nodes (MIGRATE would fail with BUSYKEY).
    cluster.migrate_slot_keys(slot, p, q);
    cluster.finish_migration(slot, q);
    assert_eq!(counter(&cluster, &moved), 1);
    assert_eq!(counter(&cluster, &unmoved), 1);
    assert_eq!(counter(&cluster, &fresh), 5);
    // The backend learns the slot's new owner from the next MOVED.
    assert_eq!(c.ok(&unmoved, incr("n", 1), None).await, Reply::Int(2));
}

#[actix_web::test]
async fn a_primary_that_lost_its_scripts_loads_them_and_runs_each_write_once() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    let c = testing::start(&engine);
    let sessions: Vec<(Arc<str>, u16)> = sessions_on_every_primary(&cluster, 2, "scripted");
    let keys: Vec<Arc<str>> = sessions.iter().map(|(k, _)| k.clone()).collect();
    create_sessions(&c, &keys).await;
    let flushed = sessions[0].1;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut cluster.connection(flushed))
        .expect("SCRIPT FLUSH");

    let before = engine.stats();
    let mut commands = Vec::new();
    for key in &keys {
        commands.push(cmd(key, incr("n", 1), None));
        commands.push(cmd(key, get(&["n"]), None));
    }
    for (i, result) in c.batch(commands).await.into_iter().enumerate() {
        let expected = if i % 2 == 0 {
            Reply::Int(1)
        } else {
            // A read after a write that met NOSCRIPT is sent again after it.
            values(&[Some("1")])
        };
        assert_eq!(result.expect("served"), expected, "command {i}");
    }
    let after = engine.stats();
    assert_eq!(
        after.round_trips - before.round_trips,
        4,
        "three primaries, then the one that lost its scripts again: {after:?}"
    );
    for key in &keys {
        assert_eq!(counter(&cluster, key), 1, "{key} ran once");
    }
}
