//! Acceptance: every op's documented semantics (`support::acceptance`), run step by step on
//! Redis and on the memory backend, so both stores are known to behave alike.

use std::sync::Arc;

use circumflex_session::testing::{self, Reply};
use circumflex_session::{MemoryBackend, SessionEngine};

use crate::support::acceptance::acceptance;
use crate::support::engine::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn every_op_behaves_as_documented_on_redis() {
    let server = RedisServer::start();
    acceptance(SessionEngine::new(redis_backend(&server).await)).await;
}

#[actix_web::test]
async fn every_op_behaves_as_documented_in_memory() {
    acceptance(SessionEngine::new(MemoryBackend::new())).await;
}

#[actix_web::test]
async fn a_backend_from_a_redis_client_you_built_uses_its_connection_info() {
    let server = RedisServer::start();
    // The client names database 3; the config's own url is not used.
    let client = redis::Client::open(format!("{}/3", server.url())).expect("a valid URL");
    let config = circumflex_session::RedisConfig::new("redis://127.0.0.1:1").key_prefix("app");
    let backend = circumflex_session::RedisBackend::from_client(client, config).expect("valid");
    let c = testing::start(&SessionEngine::new(backend));
    let s = Arc::<str>::from("app:from-client");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    let mut db3 = server.connection();
    redis::cmd("SELECT")
        .arg(3)
        .exec(&mut db3)
        .expect("SELECT 3");
    let stored: Option<String> = redis::cmd("HGET")
        .arg(&*s)
        .arg("a")
        .query(&mut db3)
        .expect("HGET");
    assert_eq!(stored.as_deref(), Some("1"));
    assert_eq!(raw_exists(&server, &s), 0, "nothing in database 0");
}
