//! A Redis that refuses us, each against a real `redis-server`: a password we do not have, a
//! wrong one (which must never reach the logs), a password set live, and a Redis over
//! `maxmemory`.

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use circumflex_session::{RedisConfig, SessionMiddleware};
use serde_json::json;

use crate::support::app::*;
use crate::support::faults::*;
use crate::support::RedisServer;

use crate::support::logs::LogCapture;

#[actix_web::test]
async fn a_redis_that_wants_a_password_we_do_not_send_gives_503s_logged_once() {
    let server = RedisServer::start();
    config_set(&mut server.connection(), "requirepass", "letmein-7f3a");
    let (logs, _guard) = LogCapture::start();
    let app = default_app(&server).await;
    for uri in [
        "/counter",
        "/login?user=ann",
        "/counter",
        "/kv/set?key=a&value=b",
    ] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(reply.text(), "Service Unavailable");
        reply.assert_no_cookie(uri);
    }
    let errors = logs.lines_at("ERROR");
    assert_eq!(errors.len(), 1, "the outage is logged once: {errors:#?}");
    assert!(
        errors[0].contains("NOAUTH"),
        "the cause is named: {}",
        errors[0]
    );

    // The password is removed: the next request succeeds, and the recovery is logged.
    config_set(
        &mut connection_with_password(&server, "letmein-7f3a"),
        "requirepass",
        "",
    );
    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        logs.lines_at("INFO")
            .iter()
            .any(|l| l.contains("reachable again")),
        "{}",
        logs.text()
    );
}

#[actix_web::test]
async fn a_wrong_password_is_a_503_and_never_reaches_the_logs() {
    const WRONG: &str = "wrong-horse-battery-9c1d";
    let server = RedisServer::start();
    config_set(&mut server.connection(), "requirepass", "right-one");
    let (logs, _guard) = LogCapture::start();
    let config = RedisConfig::new(format!("redis://app:{WRONG}@127.0.0.1:{}", server.port()));
    let engine = engine(config.clone().password(WRONG)).await;
    let app = app_on(engine.clone()).await;
    for _ in 0..3 {
        let reply = send(&app, get("/counter", None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let errors = logs.lines_at("ERROR");
    assert_eq!(errors.len(), 1, "logged once: {errors:#?}");
    let text = logs.text();
    assert!(
        text.contains("WRONGPASS") || text.to_lowercase().contains("auth"),
        "the cause is named: {text}"
    );
    assert!(!text.contains(WRONG), "the password leaked into the log");
    for shown in [format!("{config:?}"), format!("{engine:?}")] {
        assert!(!shown.contains(WRONG), "{shown}");
    }
}

#[actix_web::test]
async fn a_password_set_live_gives_503s_until_it_is_removed() {
    let server = RedisServer::start();
    let app = default_app(&server).await;
    let mut visitor = Visitor::default();
    counter_requests_all_succeed(&app, &mut visitor, 2, "before the password").await;

    // A password set live, and connections dropped: ours must authenticate again, and cannot.
    let mut admin = server.connection();
    config_set(&mut admin, "requirepass", "s3t-live");
    client_kill_normal(&mut connection_with_password(&server, "s3t-live"));
    for i in 0..5 {
        let reply = visitor.get(&app, "/counter").await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {i}: {}",
            reply.text()
        );
    }
    config_set(
        &mut connection_with_password(&server, "s3t-live"),
        "requirepass",
        "",
    );
    let reply = visitor.get(&app, "/counter").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["counter"],
        3,
        "the session survived the outage"
    );
}

#[actix_web::test]
async fn over_maxmemory_writes_get_503_while_reads_and_logouts_keep_working() {
    let server = RedisServer::start();
    // Session limits far above what Redis may hold, so that only `maxmemory` stops the writes.
    let mw = SessionMiddleware::builder(
        engine(RedisConfig::new(server.url())).await,
        Key::generate(),
    )
    .max_keys(100_000)
    .max_session_bytes(64 << 20)
    .build()
    .expect("valid session settings");
    let app = test_app(mw).await;
    let mut visitor = Visitor::default();
    assert_eq!(
        visitor.get(&app, "/login?user=ann").await.status,
        StatusCode::OK
    );

    let used = server.info_field("memory", "used_memory");
    let limit = used + 1024 * 1024;
    let mut admin = server.connection();
    config_set(&mut admin, "maxmemory-policy", "noeviction");
    config_set(&mut admin, "maxmemory", &limit.to_string());

    // 30 KB values into the existing session: well past the limit if nothing stopped them.
    let value = "x".repeat(30_000);
    let mut statuses = Vec::new();
    let mut peak = 0;
    for i in 0..100 {
        let reply = visitor
            .get(&app, &format!("/kv/set?key=k{i}&value={value}"))
            .await;
        statuses.push(reply.status);
        peak = peak.max(server.info_field("memory", "used_memory"));
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(refused >= 50, "writes were refused: {statuses:?}");
    // Redis lets a write through whenever it is back under the limit (its buffers shrink
    // and grow), but never one once it is over: it stays within one write of the limit,
    // where 100 unrefused writes would have taken it 2 MB past.
    assert!(
        peak <= limit + 64 * 1024,
        "Redis stayed at its limit: peak {peak}, maxmemory {limit}"
    );

    // Redis's usage moves around its limit as buffers grow and shrink: put the limit clearly
    // below it, so that every write from here on is one Redis must refuse.
    let used = server.info_field("memory", "used_memory");
    config_set(&mut admin, "maxmemory", &(used - 64 * 1024).to_string());
    // Reads still work; a new session cannot be created.
    let reply = visitor.get(&app, "/kv/get?key=k0").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["value"], json!(value));
    assert_eq!(visitor.get(&app, "/whoami").await.json()["user"], "ann");
    assert_eq!(
        send(&app, get("/counter", None).to_request()).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Logging out frees memory and is never refused.
    assert_eq!(visitor.get(&app, "/logout").await.status, StatusCode::OK);
    assert_eq!(
        visitor.get(&app, "/whoami").await.json()["user"],
        json!(null)
    );
}
