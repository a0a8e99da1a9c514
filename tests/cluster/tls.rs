//! A cluster that speaks only TLS, to clients and on its bus (`RedisCluster::start_tls`), as
//! managed services with in-transit encryption run it: one `rediss://` seed is enough, the
//! nodes it names in `CLUSTER SLOTS` are reached over TLS on their TLS ports, and a client that
//! does not trust the CA fails the check saying so. Built with either TLS feature;
//! `scripts/test.sh` runs this module with both.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::http::StatusCode;
use circumflex_session::{testing, Error, RedisBackend, RedisConfig, SessionEngine};
use futures::future::join_all;

use crate::support::app::*;
use crate::support::flow::login_flow;
use crate::support::{owner_in, RedisCluster};

/// The config of an app that knows only the first node of `cluster`, trusting its CA.
fn one_seed(cluster: &RedisCluster) -> RedisConfig {
    let ca = &cluster.tls().expect("a TLS cluster").ca;
    RedisConfig::cluster([cluster.urls()[0].clone()]).tls_ca_file(ca)
}

#[actix_web::test]
async fn a_tls_only_cluster_known_by_one_seed_passes_the_check_and_serves_sessions_on_every_primary(
) {
    let cluster = RedisCluster::start_tls(0, &[]);
    let seed = cluster.urls()[0].clone();
    assert!(seed.starts_with("rediss://127.0.0.1:"), "{seed}");
    // Over TLS, with `tls-cluster yes`, the nodes announce their TLS ports: those are the only
    // ports they listen on (`--port 0`).
    let primaries: BTreeSet<u16> = cluster.primaries().into_iter().collect();
    let ports: BTreeSet<u16> = cluster.ports().into_iter().collect();
    assert_eq!(primaries, ports, "CLUSTER SLOTS names the TLS ports");

    let backend = checked_backend(one_seed(&cluster)).await;
    let engine = SessionEngine::new(backend);
    login_flow(engine.clone(), &cluster).await;

    // Thirty users: sessions on all three primaries, two of which the app learned of from the
    // seed's `CLUSTER SLOTS` only, so it reached them over TLS on the ports announced.
    let app = app_on(engine.clone()).await;
    let logins = join_all((0..30).map(|i| {
        let uri = format!("/login?user=u{i}");
        send(&app, get(&uri, None).to_request())
    }))
    .await;
    assert!(logins.iter().all(|r| r.status == StatusCode::OK));
    // (All thirty on two primaries or fewer: odds of 3 * (2/3)^30, below 1 in 50,000.)
    // One view for all: every connection of the test's inspection costs a TLS handshake.
    let view = cluster.view(cluster.ports()[0]);
    let owners: BTreeSet<u16> = session_ids(&cluster)
        .iter()
        .map(|id| owner_in(&view, testing::cluster_slot(&session_key(id))).expect("a served slot"))
        .collect();
    assert_eq!(owners, ports, "sessions on every primary");
    let stats = engine.stats();
    assert_eq!(
        stats.redirects, 0,
        "the slot map routed every command: {stats:?}"
    );
}

#[actix_web::test]
async fn a_client_that_does_not_trust_the_clusters_ca_fails_the_check_clearly_and_gets_503s() {
    let cluster = RedisCluster::start_tls(0, &[]);
    let without_ca = RedisConfig::cluster(cluster.urls());
    // Not shorter: a handshake that fails takes native-tls 200-350 ms here (it loads the
    // system's trust store for each connection), more under load, and a pool that times out
    // first reports the timeout instead of the handshake's error. The failure ends the
    // check as soon as it comes.
    let backend = RedisBackend::connect(without_ca.connect_timeout(Duration::from_secs(5)))
        .await
        .expect("a valid cluster config");
    let refused = backend
        .check()
        .await
        .expect_err("the startup check must fail");
    let message = refused.to_string();
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
    assert!(
        message.contains("TLS handshake") && message.contains("certificate"),
        "the message says the certificate did not verify: {message}"
    );
    assert!(message.contains("redis.tls.ca_file"), "{message}");
    assert!(message.contains("cluster node 127.0.0.1:"), "{message}");

    let app = app_on(SessionEngine::new(backend)).await;
    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[actix_web::test]
async fn a_tls_cluster_that_announces_host_names_is_reached_by_those_names() {
    // As managed services do, so that the names in the nodes' certificates can be checked:
    // `CLUSTER SLOTS` names `localhost`, which the server certificate names too.
    let cluster = RedisCluster::start_tls(
        0,
        &[
            "--cluster-announce-hostname",
            "localhost",
            "--cluster-preferred-endpoint-type",
            "hostname",
        ],
    );
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut cluster.connection(cluster.ports()[0]))
        .expect("CLUSTER SLOTS");
    for range in &ranges {
        let redis::Value::Array(primary) = &range[2] else {
            panic!("a CLUSTER SLOTS node is {:?}", range[2])
        };
        assert_eq!(
            primary[0],
            redis::Value::BulkString(b"localhost".to_vec()),
            "CLUSTER SLOTS names the nodes by host name: {ranges:?}"
        );
    }

    let backend = checked_backend(one_seed(&cluster)).await;
    login_flow(SessionEngine::new(backend), &cluster).await;
}
