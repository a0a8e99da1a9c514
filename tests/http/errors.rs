//! Errors at the edge: an unreachable or silent Redis is an opaque 503 that sends no cookie, a
//! session without its middleware is a 500, and an oversized value is refused before Redis.

use std::net::TcpListener;

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use actix_web::test::init_service;
use actix_web::App;
use circumflex_session::{
    ActorConfig, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware,
};
use serde_json::{json, Value};

use crate::support::app::*;
use crate::support::RedisServer;

async fn engine_at(url: String) -> SessionEngine {
    let backend = RedisBackend::connect(RedisConfig::new(url))
        .await
        .expect("the pool connects lazily");
    SessionEngine::with_config(
        backend,
        ActorConfig {
            deadline_ms: 500,
            ..Default::default()
        },
    )
    .unwrap()
}

fn assert_opaque_503(reply: &Reply, port: u16) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    let body = reply.text();
    assert_eq!(body, "Service Unavailable");
    for secret in [
        port.to_string().as_str(),
        "redis",
        "127.0.0.1",
        "refused",
        "timed out",
    ] {
        assert!(
            !body.to_lowercase().contains(secret),
            "{body:?} leaks {secret}"
        );
    }
}

#[actix_web::test]
async fn a_session_route_answers_an_opaque_503_when_nothing_listens_at_the_redis_port() {
    let port = crate::support::unused_port();
    let engine = engine_at(format!("redis://127.0.0.1:{port}")).await;
    let app = app_on(engine).await;

    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_opaque_503(&reply, port);
    let reply = send(&app, get("/login?user=ann", None).to_request()).await;
    assert_opaque_503(&reply, port);

    // On demand: what does not need the store still works.
    let anonymous = send(&app, get("/whoami", None).to_request()).await;
    assert_eq!(user_of(&anonymous), Value::Null);
    assert_eq!(
        send(&app, get("/plain", None).to_request()).await.status,
        StatusCode::OK
    );
}

/// The middleware sends a cookie only when the request issued a session; a first write that
/// Redis never received issued none, so its error response must not hand out an id that names
/// nothing.
#[actix_web::test]
async fn a_first_write_that_fails_sends_no_cookie_for_the_session_it_could_not_store() {
    let port = crate::support::unused_port();
    let engine = engine_at(format!("redis://127.0.0.1:{port}")).await;
    let app = app_on(engine).await;

    for uri in ["/counter", "/login?user=ann", "/kv/set?key=a&value=b"] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        reply.assert_no_cookie(&format!("{uri} failed with 503"));
    }
}

#[actix_web::test]
async fn a_session_route_answers_an_opaque_503_when_redis_never_answers() {
    // Accepts connections (the kernel does) but never speaks: only the deadline ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let engine = engine_at(format!("redis://127.0.0.1:{port}")).await;
    let app = app_on(engine.clone()).await;

    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_opaque_503(&reply, port);
    drop(silent);
}

#[actix_web::test]
async fn a_handler_using_the_session_without_the_middleware_gets_a_500() {
    let app = init_service(App::new().configure(routes)).await;

    for uri in ["/whoami", "/counter", "/untouched"] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{uri} ran with a detached session: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "Internal Server Error", "{uri}");
        reply.assert_no_cookie(uri);
    }
    assert_eq!(
        send(&app, get("/plain", None).to_request()).await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn an_oversized_value_is_refused_by_set_and_nothing_is_stored() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .max_value_bytes(64)
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    // No session yet: the refusal creates none.
    let refused = send(&app, get("/big?bytes=100", None).to_request()).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        refused.text()
    );
    // JSON adds the two quotes.
    assert_eq!(
        refused.json(),
        json!({ "key": "note", "size": 102, "max": 64 })
    );
    refused.assert_no_cookie("refused first write");
    assert!(
        session_ids(&server).is_empty(),
        "a refused write created a session"
    );

    // With a session: the field stays absent.
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let id = only_session_id(&server);
    let refused = send(&app, get("/big?bytes=63", Some(&cookie)).to_request()).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refused.json()["size"], json!(65));
    let stored: bool = redis::cmd("HEXISTS")
        .arg(session_key(&id))
        .arg("note")
        .query(&mut server.connection())
        .unwrap();
    assert!(!stored, "the oversized value reached Redis");

    // Control: exactly the limit is accepted.
    let fits = send(&app, get("/big?bytes=62", Some(&cookie)).to_request()).await;
    assert_eq!(fits.status, StatusCode::OK, "{}", fits.text());
    let stored: Option<String> = redis::cmd("HGET")
        .arg(session_key(&id))
        .arg("note")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored, Some(format!("\"{}\"", "x".repeat(62))));
}
