//! Atomic read-modify-write over HTTP, on a private redis-server: `update` under fifty
//! concurrent requests of one browser, and `compare_and_set`'s three answers.

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use circumflex_session::{AsyncSession, SessionMiddleware};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;

use crate::support::app::*;
use crate::support::RedisServer;

/// Adds one to `n`, with `update`; answers the value it stored.
async fn bump(session: AsyncSession) -> Answer {
    let n = session
        .update("n", |n: Option<i64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "n": n })))
}

#[derive(Deserialize)]
struct Swap {
    key: String,
    expected: Option<String>,
    new: String,
}

/// `compare_and_set` of one string value; answers whether it stored it.
async fn swap(session: AsyncSession, query: web::Query<Swap>) -> Answer {
    let q = query.into_inner();
    let swapped = session
        .compare_and_set(&q.key, q.expected.as_ref(), &q.new)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "swapped": swapped })))
}

async fn app(
    middleware: SessionMiddleware,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    app_with(middleware, |cfg| {
        cfg.route("/bump", web::get().to(bump))
            .route("/swap", web::get().to(swap));
    })
    .await
}

/// A field of the one session in Redis, as stored (JSON).
fn stored(server: &RedisServer, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(session_key(&only_session_id(server)))
        .arg(field)
        .query(&mut server.connection())
        .expect("HGET")
}

#[actix_web::test]
async fn concurrent_updates_of_one_key_lose_nothing() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = app(SessionMiddleware::new(engine.clone(), Key::generate())).await;
    let cookie = send(&app, get("/kv/set?key=user&value=ann", None).to_request())
        .await
        .cookie();

    let replies =
        join_all((0..50).map(|_| send(&app, get("/bump", Some(&cookie)).to_request()))).await;
    let mut stored_by_each: Vec<i64> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["n"].as_i64().expect("a number")
        })
        .collect();
    stored_by_each.sort();
    assert_eq!(
        stored_by_each,
        (1..=50).collect::<Vec<i64>>(),
        "each update stored a value of its own"
    );
    assert_eq!(stored(&server, "n").as_deref(), Some("50"));
    assert!(
        engine.stats().max_batch >= 2,
        "the updates never met in a batch, so this test proves nothing: {:?}",
        engine.stats()
    );
}

#[actix_web::test]
async fn compare_and_set_creates_on_none_refuses_a_wrong_expectation_and_swaps_a_right_one() {
    let server = RedisServer::start();
    let app = app(SessionMiddleware::new(
        redis_engine(&server).await,
        Key::generate(),
    ))
    .await;
    let mut visitor = Visitor::default();
    let mut swap = async |uri: &str| {
        let reply = visitor.get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        reply.json()["swapped"].clone()
    };

    // Expecting nothing, with no session yet: the session is created with the value.
    assert_eq!(swap("/swap?key=k&new=a").await, json!(true));
    assert_eq!(stored(&server, "k").as_deref(), Some("\"a\""));

    // A wrong expectation, or expecting nothing where there is something: nothing written.
    assert_eq!(swap("/swap?key=k&expected=z&new=b").await, json!(false));
    assert_eq!(swap("/swap?key=k&new=b").await, json!(false));
    assert_eq!(swap("/swap?key=other&expected=z&new=b").await, json!(false));
    assert_eq!(stored(&server, "k").as_deref(), Some("\"a\""));
    assert_eq!(stored(&server, "other"), None);

    // The right expectation swaps.
    assert_eq!(swap("/swap?key=k&expected=a&new=b").await, json!(true));
    assert_eq!(stored(&server, "k").as_deref(), Some("\"b\""));
}

#[actix_web::test]
async fn a_compare_and_set_that_misses_on_a_new_session_leaves_a_session_its_cookie_finds() {
    let server = RedisServer::start();
    let app = app(SessionMiddleware::new(
        redis_engine(&server).await,
        Key::generate(),
    ))
    .await;
    let mut visitor = Visitor::default();
    let missed = visitor.get(&app, "/swap?key=k&expected=z&new=b").await;
    assert_eq!(missed.json()["swapped"], json!(false));
    let cookie = missed.cookie();
    assert_eq!(stored(&server, "k"), None, "nothing written");

    // The cookie it issued points at a session that exists: the next request keeps it.
    let next = send(&app, get("/swap?key=k&new=c", Some(&cookie)).to_request()).await;
    assert_eq!(next.json()["swapped"], json!(true));
    next.assert_no_cookie("the session the cookie names exists");
    assert_eq!(stored(&server, "k").as_deref(), Some("\"c\""));
}
