//! Concurrent requests with one cookie: no update is lost, every increment is counted.

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use circumflex_session::SessionMiddleware;
use futures::future::join_all;
use serde_json::json;

use crate::support::app::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn parallel_writes_with_one_cookie_lose_no_update() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::new(engine.clone(), Key::generate());
    let app = test_app(mw).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let id = only_session_id(&server);

    for round in 0..20 {
        let requests = (0..4).map(|i| {
            let uri = format!("/kv/set?key=r{round}k{i}&value=v{round}-{i}");
            send(&app, get(&uri, Some(&cookie)).to_request())
        });
        for reply in join_all(requests).await {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            reply.assert_no_cookie("write to an existing session");
        }
    }
    assert!(
        engine.stats().max_batch >= 2,
        "the requests never overlapped, so this test proves nothing: {:?}",
        engine.stats()
    );

    let mut lost = Vec::new();
    for round in 0..20 {
        for i in 0..4 {
            let uri = format!("/kv/get?key=r{round}k{i}");
            let reply = send(&app, get(&uri, Some(&cookie)).to_request()).await;
            if reply.json()["value"] != json!(format!("v{round}-{i}")) {
                lost.push(format!("r{round}k{i}"));
            }
        }
    }
    assert!(lost.is_empty(), "lost updates: {lost:?}");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(session_key(&id))
        .query(&mut server.connection())
        .unwrap();
    let user_fields = fields.iter().filter(|f| !f.starts_with('\0')).count();
    assert_eq!(user_fields, 80 + 1, "80 writes and `user`: {fields:?}");
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        json!("ann")
    );
}

#[actix_web::test]
async fn parallel_increments_with_one_cookie_are_all_counted() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let cookie = send(&app, get("/counter", None).to_request())
        .await
        .cookie();
    for round in 0..20 {
        let requests = (0..4).map(|_| send(&app, get("/counter", Some(&cookie)).to_request()));
        let mut seen: Vec<i64> = join_all(requests)
            .await
            .iter()
            .map(|r| r.json()["counter"].as_i64().expect("a number"))
            .collect();
        seen.sort();
        let first = 2 + 4 * round;
        assert_eq!(
            seen,
            (first..first + 4).collect::<Vec<_>>(),
            "round {round}"
        );
    }
    let last = send(&app, get("/counter", Some(&cookie)).to_request()).await;
    assert_eq!(last.json(), json!({ "counter": 1 + 80 + 1 }));
}
