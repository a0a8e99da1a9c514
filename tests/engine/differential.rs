//! Differential test: random batches of commands run on Redis and on the memory backend must
//! get the same replies (`support::differential`).

use circumflex_session::{RedisBackend, RedisConfig, SessionEngine};

use crate::support::differential::random_batches_agree_with_memory;
use crate::support::RedisServer;

#[actix_web::test]
async fn random_batches_get_the_same_replies_from_redis_and_from_memory() {
    let server = RedisServer::start();
    let redis = SessionEngine::new(
        RedisBackend::connect(RedisConfig::new(server.url()))
            .await
            .expect("redis config"),
    );
    random_batches_agree_with_memory(redis).await;
}
