mod support;

use std::sync::Arc;
use std::time::Duration;

use circumflex_session::actor::message::{Command, Op, Reply, WriteMode};
use circumflex_session::{RedisBackend, RedisConfig, SessionEngine};

#[actix_web::test]
async fn set_then_get_round_trips_through_redis() {
    let server = support::RedisServer::start();
    let engine = SessionEngine::new(
        RedisBackend::connect(RedisConfig::new(server.url()))
            .await
            .unwrap(),
    );
    let actor = engine.actor();
    let key: Arc<str> = Arc::from("session:abc");
    let ttl = Duration::from_secs(60);
    let set = Command {
        key: key.clone(),
        op: Op::Set(
            WriteMode::Create { created: 1, ttl },
            vec![("a".into(), b"1".to_vec())],
        ),
        refresh: Some(ttl),
    };
    assert_eq!(engine.call(&actor, set).await.unwrap(), Reply::Done);
    let get = Command {
        key,
        op: Op::Get(vec!["a".into(), "b".into()]),
        refresh: Some(ttl),
    };
    assert_eq!(
        engine.call(&actor, get).await.unwrap(),
        Reply::Values(vec![Some(b"1".to_vec()), None])
    );
}
