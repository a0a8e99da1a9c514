//! A healthy cluster: the suites every store passes, where sessions land, and what a batch
//! costs.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use circumflex_session::testing;
use futures::future::join_all;
use serde_json::json;

use crate::load::*;
use crate::support::acceptance::acceptance;
use crate::support::app::*;
use crate::support::differential::random_batches_agree_with_memory;
use crate::support::flow::login_flow;
use crate::support::RedisCluster;

#[actix_web::test]
async fn every_op_behaves_as_documented_on_a_cluster() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    acceptance(engine.clone()).await;
    let stats = engine.stats();
    assert_eq!(
        stats.redirects, 0,
        "the slot map routed every command: {stats:?}"
    );
}

#[actix_web::test]
async fn random_batches_get_the_same_replies_from_a_cluster_and_from_memory() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    random_batches_agree_with_memory(engine.clone()).await;
    let stats = engine.stats();
    assert!(
        stats.round_trips > stats.pipelines + 3,
        "batches were split over several primaries: {stats:?}"
    );
    assert_eq!(stats.redirects, 0, "{stats:?}");
}

#[actix_web::test]
async fn the_slot_of_every_key_is_the_one_cluster_keyslot_gives() {
    let cluster = RedisCluster::start(0, &[]);
    let mut keys: Vec<String> = tags()
        .step_by(131)
        .map(|(tag, _)| format!("session:{{{tag}}}:0123456789abcdef0123456789abcdef"))
        .collect();
    keys.extend(
        [
            "plain",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "foo{bar}{zap}",
            "{",
            "}{",
            "{user1000}.following",
            "123456789",
            "app:{0a1b}:x",
        ]
        .map(String::from),
    );
    assert!(keys.len() > 500);
    for key in &keys {
        assert_eq!(testing::cluster_slot(key), cluster.keyslot(key), "{key}");
    }
}

#[actix_web::test]
async fn login_whoami_counter_renew_and_logout_work_end_to_end_on_a_cluster() {
    let cluster = RedisCluster::start(0, &[]);
    login_flow(cluster_engine(&cluster).await, &cluster).await;
}

#[actix_web::test]
async fn a_hundred_users_spread_over_all_three_primaries_and_a_batch_costs_a_pipeline_per_primary()
{
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    let app = app_on(engine.clone()).await;

    let logins = join_all((0..100).map(|i| {
        let uri = format!("/login?user=u{i}");
        send(&app, get(&uri, None).to_request())
    }))
    .await;
    let cookies: Vec<_> = logins.iter().map(Reply::cookie).collect();
    let ids = session_ids(&cluster);
    assert_eq!(ids.len(), 100);

    let mut per_primary: BTreeMap<u16, usize> = BTreeMap::new();
    for id in &ids {
        let owner = cluster.owner(cluster.keyslot(&session_key(id)));
        *per_primary.entry(owner).or_default() += 1;
    }
    eprintln!("sessions per primary: {per_primary:?}");
    assert_eq!(per_primary.len(), 3, "{per_primary:?}");
    // 100 random tags over three equal shares: fewer than 15 on one has odds below 1 in 10^4.
    assert!(per_primary.values().all(|&n| n >= 15), "{per_primary:?}");

    // Everyone at once: each sees their own name, and each batch costs at most one pipeline
    // per primary.
    let before = engine.stats();
    let replies = join_all(
        cookies
            .iter()
            .map(|c| send(&app, get("/whoami", Some(c)).to_request())),
    )
    .await;
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(user_of(reply), json!(format!("u{i}")));
    }
    let after = engine.stats();
    let batches = after.pipelines - before.pipelines;
    let round_trips = after.round_trips - before.round_trips;
    let commands = after.redis_commands - before.redis_commands;
    eprintln!(
        "100 whoami: {batches} batches, {round_trips} round trips, {:.1} commands per round trip",
        commands as f64 / round_trips as f64
    );
    assert!(round_trips <= 3 * batches, "{before:?} -> {after:?}");
    assert_eq!(after.redirects, 0, "{after:?}");
}
