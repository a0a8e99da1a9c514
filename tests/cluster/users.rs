//! Sessions by user on a cluster: a user's sessions and index share a slot, so the per-user
//! scripts, which touch both, never cross slots.

use circumflex_session::testing;

use crate::load::cluster_engine;
use crate::support::app::session_key;
use crate::support::users::two_browsers_flow;
use crate::support::RedisCluster;

/// Errors of one kind a primary has answered since it started (`INFO errorstats`).
fn errors_of_kind(cluster: &RedisCluster, port: u16, kind: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut cluster.connection(port))
        .expect("INFO errorstats");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("errorstat_{kind}:count=")))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[actix_web::test]
async fn two_browsers_of_one_user_on_a_cluster_keep_their_sessions_and_index_in_one_slot() {
    let cluster = RedisCluster::start(0, &[]);
    let engine = cluster_engine(&cluster).await;
    let mut checked = false;
    two_browsers_flow(engine.clone(), |laptop, phone| {
        let index = format!("session:{{{}}}:u:ann", &laptop[..4]);
        let keys = [session_key(laptop), session_key(phone), index.clone()];
        let slot = testing::cluster_slot(&index);
        for key in &keys {
            assert_eq!(testing::cluster_slot(key), slot, "{key}");
            assert_eq!(cluster.keyslot(key), slot, "{key}, as the cluster says");
        }
        let owner = cluster.owner(slot);
        let held: Vec<String> = cluster
            .keys("session:*")
            .into_iter()
            .filter(|k| keys.contains(k))
            .collect();
        assert_eq!(held.len(), 3, "all three keys are in the cluster: {held:?}");
        let on_owner: u64 = redis::cmd("EXISTS")
            .arg(&keys[..])
            .query(&mut cluster.connection(owner))
            .expect("EXISTS");
        assert_eq!(on_owner, 3, "all three on the primary of slot {slot}");
        checked = true;
    })
    .await;
    assert!(checked);
    for port in cluster.primaries() {
        assert_eq!(errors_of_kind(&cluster, port, "CROSSSLOT"), 0, "on {port}");
    }
    let stats = engine.stats();
    assert_eq!(
        stats.redirects, 0,
        "the slot map routed every command: {stats:?}"
    );
}
