//! The whole flow (`support::flow`, which `tls`, `acl` and the cluster tests run again) and the
//! rest of the handle API through the middleware, on Redis and on the memory backend, and what
//! a request that does not use the session costs (nothing).

use actix_web::cookie::{time, Key};
use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::test::init_service;
use actix_web::web::{self};
use actix_web::{App, HttpResponse};
use circumflex_session::{AsyncSession, SessionMiddleware};
use serde_json::{json, Value};

use crate::support::app::*;
use crate::support::flow::login_flow;
use crate::support::RedisServer;

#[actix_web::test]
async fn login_whoami_counter_renew_and_logout_work_end_to_end() {
    let server = RedisServer::start();
    login_flow(redis_engine(&server).await, &server).await;
}

#[actix_web::test]
async fn a_cookie_sent_back_byte_for_byte_as_set_is_accepted() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let login = send(&app, get("/login?user=ann", None).to_request()).await;
    // A browser sends back exactly the `name=value` it was given, unencoded.
    let raw = login.raw_set_cookies[0]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(raw.starts_with("session="), "{raw}");
    let reply = send(
        &app,
        get_with_header("/whoami", HeaderValue::from_str(&raw).unwrap()).to_request(),
    )
    .await;
    assert_eq!(user_of(&reply), json!("ann"));
    reply.assert_no_cookie("whoami with the raw cookie");
}

#[actix_web::test]
async fn a_request_that_does_not_use_the_session_costs_no_redis_command_even_with_a_cookie() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::new(engine.clone(), Key::generate());
    let app = test_app(mw).await;

    // Warm up: the pool has a connection and the scripts are loaded.
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();

    let stats = engine.stats();
    let c0 = server.commands_processed();
    for uri in ["/plain", "/untouched"] {
        let reply = send(&app, get(uri, Some(&cookie)).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.assert_no_cookie(uri);
    }
    let c1 = server.commands_processed();
    let c2 = server.commands_processed();
    assert_eq!(engine.stats(), stats, "the engine saw session commands");
    // Each `commands_processed` is itself counted (an INFO, plus whatever the client sends on
    // connect); c1..c2 measures exactly that overhead, with nothing in between.
    let overhead = c2 - c1;
    assert_eq!(c1 - c0, overhead, "Redis saw commands from the requests");

    // Control: the same measurement does see a request that reads the session.
    let reply = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&reply), json!("ann"));
    let c3 = server.commands_processed();
    assert!(c3 - c2 > overhead, "a session read went unnoticed");
    assert!(engine.stats().commands > stats.commands);
}

async fn tour(session: AsyncSession) -> Answer {
    assert_eq!(session.id(), None, "no session before the first write");
    session
        .set_many([("a", json!(1)), ("b", json!("two")), ("c", json!([3]))])
        .await?;
    let id = session.id();
    let mut entries: Vec<(String, Value)> = session.entries::<Value>().await?.into_iter().collect();
    entries.sort_by(|x, y| x.0.cmp(&y.0));
    let first_nx = session.set_if_absent("a", &json!(100)).await?;
    let second_nx = session.set_if_absent("d", &json!(4)).await?;
    let removed = session.remove_many(&["a", "b", "zzz"]).await?;
    let removed_again = session.remove("a").await?;
    let left = session.mget::<Value>(&["a", "b", "c", "d"]).await?;
    let touched = session.touch().await?;
    // The handle is `Send`: it works from a spawned task on another thread.
    // (The worker must stay free to run its actor, so wait for the thread without blocking.)
    let handle = session.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let value =
            actix_web::rt::System::new().block_on(async move { handle.get::<Value>("c").await });
        let _ = tx.send(value);
    });
    let from_thread = rx.await.expect("the thread answers")?;
    Ok(HttpResponse::Ok().json(json!({
        "id_is_set": id.is_some(),
        "entries": entries,
        "nx": [first_nx, second_nx],
        "removed": [removed, u64::from(removed_again)],
        "left": left,
        "touched": touched,
        "from_thread": from_thread,
    })))
}

#[actix_web::test]
async fn every_handle_method_works_through_the_middleware() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = init_service(
        App::new()
            .wrap(mw)
            .route("/tour", web::get().to(tour))
            .configure(routes),
    )
    .await;
    let reply = send(&app, get("/tour", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "id_is_set": true,
            "entries": [["a", 1], ["b", "two"], ["c", [3]]],
            "nx": [false, true],
            "removed": [2, 0],
            "left": [null, null, [3], 4],
            "touched": true,
            "from_thread": [3],
        })
    );
    reply.cookie();
}

#[actix_web::test]
async fn the_memory_backend_serves_the_same_flow_without_redis() {
    let mw = SessionMiddleware::new(circumflex_session::MemoryBackend::new(), Key::generate());
    let app = test_app(mw).await;
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        json!("ann")
    );
    let count = send(&app, get("/counter", Some(&cookie)).to_request()).await;
    assert_eq!(count.json(), json!({ "counter": 1 }));
    let out = send(&app, get("/logout", Some(&cookie)).to_request()).await;
    assert_eq!(out.cookie().max_age(), Some(time::Duration::ZERO));
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        Value::Null
    );
}
