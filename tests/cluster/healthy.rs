//! A healthy cluster: the suites every store passes, and where sessions land.

use circumflex_session::testing;
use circumflex_session::{RedisBackend, RedisConfig, SessionEngine};

use crate::support::acceptance::acceptance;
use crate::support::RedisCluster;

async fn cluster_engine(cluster: &RedisCluster) -> SessionEngine {
    SessionEngine::new(
        RedisBackend::connect(RedisConfig::cluster(cluster.urls()))
            .await
            .expect("a valid cluster config"),
    )
}

#[actix_web::test]
async fn every_op_behaves_as_documented_on_a_cluster() {
    let started = std::time::Instant::now();
    let cluster = RedisCluster::start(0, &[]);
    eprintln!("cluster up in {:?}", started.elapsed());
    let engine = cluster_engine(&cluster).await;
    acceptance(engine.clone()).await;
    eprintln!("{:?}", engine.stats());
    for key in ["a", "b", "c", "session:{a}:x"] {
        assert_eq!(testing::cluster_slot(key), cluster.keyslot(key));
    }
}
