//! Helpers of the fault tests: the default app on a server, Redis administration
//! (`CONFIG SET`, `CLIENT KILL`, a connection with a password), and a run of counter requests
//! that must all succeed.

use actix_web::http::StatusCode;
use circumflex_session::{RedisBackend, RedisConfig, SessionEngine};

use super::app::*;
use super::RedisServer;

pub async fn engine(config: RedisConfig) -> SessionEngine {
    SessionEngine::new(RedisBackend::connect(config).await.expect("valid config"))
}

/// The test app with every default, on `server`.
pub async fn default_app(
    server: &RedisServer,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    app_on(engine(RedisConfig::new(server.url())).await).await
}

/// `redis://` with a password, for the test's own inspection connections.
pub fn connection_with_password(server: &RedisServer, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{}", server.port()))
        .and_then(|c| c.get_connection())
        .expect("connect with the password")
}

pub fn config_set(conn: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(conn)
        .expect("CONFIG SET");
}

pub fn client_kill_normal(conn: &mut redis::Connection) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(conn)
        .expect("CLIENT KILL")
}

/// Sends `count` counter requests one after another and checks each is a 200 whose counter
/// is one more than the last: no request failed, and none was applied twice.
pub async fn counter_requests_all_succeed<S, B>(
    app: &S,
    visitor: &mut Visitor,
    count: i64,
    what: &str,
) where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let mut last = None;
    for i in 0..count {
        let reply = visitor.get(app, "/counter").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{what}: request {i}: {}",
            reply.text()
        );
        let counter = reply.json()["counter"].as_i64().expect("a counter");
        if let Some(last) = last {
            assert_eq!(counter, last + 1, "{what}: request {i}");
        }
        last = Some(counter);
    }
}
