//! Sessions by user over HTTP, on a private redis-server: log in as a user from two browsers,
//! list the sessions, log out everywhere, the per-user cap, and remember-me.

use std::time::Duration;

use actix_web::cookie::Key;
use circumflex_session::{SessionEngine, SessionMiddleware};
use serde_json::json;

use crate::support::app::*;
use crate::support::users::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn two_browsers_of_one_user_see_each_other_and_logout_everywhere_ends_the_other() {
    let server = RedisServer::start();
    two_browsers_flow(redis_engine(&server).await, |_, _| {}).await;
}

#[actix_web::test]
async fn a_cap_of_two_revokes_the_oldest_of_three_logins() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::builder(engine.clone(), Key::generate())
        .max_sessions_per_user(2)
        .build()
        .unwrap();
    let app = user_app(mw).await;
    let mut browsers: Vec<Visitor> = (0..3).map(|_| Visitor::default()).collect();
    for browser in &mut browsers {
        browser.get(&app, "/bind?user=bob").await;
    }
    assert_eq!(
        user_of(&browsers[0].get(&app, "/whoami").await),
        json!(null)
    );
    assert_eq!(
        user_of(&browsers[1].get(&app, "/whoami").await),
        json!("bob")
    );
    assert_eq!(
        user_of(&browsers[2].get(&app, "/whoami").await),
        json!("bob")
    );
    assert_eq!(engine.sessions_of("bob").await.unwrap().len(), 2);
}

#[actix_web::test]
async fn a_remembered_session_outlives_a_short_one_next_to_it() {
    let server = RedisServer::start();
    let engine: SessionEngine = redis_engine(&server).await;
    let mw = SessionMiddleware::builder(engine.clone(), Key::generate())
        .tti(Duration::from_secs(2))
        .tti_bounds(Duration::from_secs(1), Duration::from_secs(3600))
        .build()
        .unwrap();
    let app = user_app(mw).await;
    let (mut short, mut long) = (Visitor::default(), Visitor::default());
    short.get(&app, "/bind?user=cy").await;
    long.get(&app, "/bind?user=cy").await;
    let remembered = long.get(&app, "/remember-me?secs=1800").await;
    let max_age = remembered.cookies[0].max_age().map(|d| d.whole_seconds());
    assert_eq!(max_age, Some(1800), "a remembered cookie is persistent");
    let listed = engine.sessions_of("cy").await.unwrap();
    assert_eq!(listed.len(), 2);

    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(user_of(&short.get(&app, "/whoami").await), json!(null));
    assert_eq!(user_of(&long.get(&app, "/whoami").await), json!("cy"));
    assert_eq!(engine.sessions_of("cy").await.unwrap().len(), 1);
    let bad = long.get(&app, "/remember-me?secs=7200").await;
    assert_eq!(bad.status, 500, "outside the bounds");
}
