//! Two app instances on one Redis, as two processes behind a load balancer would be: each with
//! its own `SessionEngine`, backend and connection pool, sharing only Redis and the cookie key.
//! A visitor whose requests alternate between them has one session.

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use circumflex_session::SessionMiddleware;
use serde_json::{json, Value};

use crate::support::app::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn two_instances_with_one_key_share_login_writes_renewal_and_logout() {
    let server = RedisServer::start();
    let key = Key::generate();
    let one = test_app(SessionMiddleware::new(
        redis_engine(&server).await,
        key.clone(),
    ))
    .await;
    let two = test_app(SessionMiddleware::new(
        redis_engine(&server).await,
        key.clone(),
    ))
    .await;
    let mut visitor = Visitor::default();

    assert_eq!(
        user_of(&visitor.get(&one, "/login?user=ann").await),
        json!("ann")
    );
    assert_eq!(user_of(&visitor.get(&two, "/whoami").await), json!("ann"));

    // Writes on either are seen by the other.
    for (expected, app) in [(1, &one), (2, &two), (3, &one)] {
        let reply = visitor.get(app, "/counter").await;
        assert_eq!(reply.json(), json!({ "counter": expected }));
    }
    let set = visitor.get(&two, "/kv/set?key=color&value=teal").await;
    assert_eq!(set.status, StatusCode::OK);
    let read = visitor.get(&one, "/kv/get?key=color").await;
    assert_eq!(read.json()["value"], json!("teal"));

    // A login on the second renews the id; the first follows the new cookie and forgets the
    // old one.
    let before = visitor.cookie.clone().expect("a session cookie");
    assert_eq!(
        user_of(&visitor.get(&two, "/login?user=bob").await),
        json!("bob")
    );
    assert_ne!(
        visitor.cookie.as_ref(),
        Some(&before),
        "login renews the id"
    );
    assert_eq!(user_of(&visitor.get(&one, "/whoami").await), json!("bob"));
    let stale = send(&one, get("/whoami", Some(&before)).to_request()).await;
    assert_eq!(
        user_of(&stale),
        Value::Null,
        "the pre-login id is gone on the other instance"
    );

    // A logout on the first is a logout on the second.
    let after_login = visitor.cookie.clone();
    assert_eq!(visitor.get(&one, "/logout").await.status, StatusCode::OK);
    let on_two = send(&two, get("/whoami", after_login.as_ref()).to_request()).await;
    assert_eq!(user_of(&on_two), Value::Null);
    assert!(session_ids(&server).is_empty(), "the logout left the hash");
}

#[actix_web::test]
async fn an_instance_with_another_key_does_not_accept_the_others_cookie() {
    let server = RedisServer::start();
    let one = app_on(redis_engine(&server).await).await;
    let other = app_on(redis_engine(&server).await).await;
    let mut visitor = Visitor::default();
    assert_eq!(
        user_of(&visitor.get(&one, "/login?user=ann").await),
        json!("ann")
    );
    let cookie = visitor.cookie.clone().expect("a session cookie");
    let reply = send(
        &other,
        TestRequest::get()
            .uri("/whoami")
            .cookie(cookie)
            .to_request(),
    )
    .await;
    assert_eq!(user_of(&reply), Value::Null);
    assert_eq!(
        session_ids(&server).len(),
        1,
        "the session itself is untouched"
    );
}
