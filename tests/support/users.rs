//! Sessions by user through the middleware: the demo's user routes (log in as a user, list the
//! user's sessions, log out everywhere, remember-me) and the two-browser flow every Redis store
//! must serve, run by the HTTP tests on a standalone server (also as an ACL user with only the
//! documented permissions) and by the cluster tests on a cluster.

use std::time::Duration;

use actix_web::cookie::Key;
use actix_web::{web, HttpRequest, HttpResponse};
use circumflex_session::{AsyncSession, SessionEngine, SessionMiddleware};
use serde::Deserialize;
use serde_json::json;

use super::app::*;

#[derive(Deserialize)]
pub struct Everywhere {
    pub all: Option<u8>,
}

/// The demo's login: binds the user, labelled with the user agent.
pub async fn bind(session: AsyncSession, req: HttpRequest, query: web::Query<Login>) -> Answer {
    let agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    session.bind_user_labelled(&query.user, agent).await?;
    session.set("user", &query.user).await?;
    Ok(HttpResponse::Ok().json(json!({ "user": query.user, "id": session.id() })))
}

pub async fn sessions(session: AsyncSession) -> Answer {
    let list = session.sessions().await?;
    let ids: Vec<_> = list.iter().map(|s| s.id.clone()).collect();
    let labels: Vec<_> = list.iter().map(|s| s.label.clone()).collect();
    Ok(HttpResponse::Ok().json(json!({ "ids": ids, "labels": labels, "me": session.id() })))
}

pub async fn everywhere(session: AsyncSession, query: web::Query<Everywhere>) -> Answer {
    let revoked = session.logout_everywhere(query.all == Some(1)).await?;
    Ok(HttpResponse::Ok().json(json!({ "revoked": revoked })))
}

#[derive(Deserialize)]
pub struct Tti {
    pub secs: u64,
}

pub async fn remember(session: AsyncSession, query: web::Query<Tti>) -> Answer {
    session.set_tti(Duration::from_secs(query.secs)).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

pub fn user_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bind", web::get().to(bind))
        .route("/sessions", web::get().to(sessions))
        .route("/logout-everywhere", web::get().to(everywhere))
        .route("/remember-me", web::get().to(remember));
}

/// The app under test with the user routes.
pub async fn user_app(
    middleware: SessionMiddleware,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    app_with(middleware, user_routes).await
}

pub fn ids(reply: &Reply) -> Vec<String> {
    let mut ids: Vec<String> = serde_json::from_value(reply.json()["ids"].clone()).unwrap();
    ids.sort();
    ids
}

/// Two browsers of one user, on `engine`: the laptop's anonymous session is carried over at
/// login, both see both sessions, logging out everywhere from the laptop ends the phone's,
/// and then the laptop's own. `while_both` gets the two session ids (laptop, phone) while
/// both are bound.
pub async fn two_browsers_flow(engine: SessionEngine, while_both: impl FnOnce(&str, &str)) {
    let mw = SessionMiddleware::builder(engine.clone(), Key::generate())
        .build()
        .unwrap();
    let app = user_app(mw).await;
    let (mut laptop, mut phone) = (Visitor::default(), Visitor::default());

    // The laptop had an anonymous session before login: its data is carried over.
    laptop.get(&app, "/kv/set?key=theme&value=dark").await;
    let before = laptop.cookie.clone();
    let a = laptop.get(&app, "/bind?user=ann").await;
    assert_ne!(laptop.cookie, before, "login moves the session to a new id");
    assert_eq!(a.status, 200, "{}", a.text());
    let b = phone.get(&app, "/bind?user=ann").await;
    assert_eq!(b.status, 200, "{}", b.text());
    let (a_id, b_id) = (
        a.json()["id"].as_str().unwrap().to_owned(),
        b.json()["id"].as_str().unwrap().to_owned(),
    );
    let theme = laptop.get(&app, "/kv/get?key=theme").await;
    assert_eq!(theme.json()["value"], "dark");

    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(ids(&laptop.get(&app, "/sessions").await), both);
    assert_eq!(ids(&phone.get(&app, "/sessions").await), both);
    let admin: Vec<String> = engine
        .sessions_of("ann")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(admin.len(), 2);
    while_both(&a_id, &b_id);

    let revoked = laptop.get(&app, "/logout-everywhere").await;
    assert_eq!(revoked.json()["revoked"], 1);
    assert_eq!(user_of(&phone.get(&app, "/whoami").await), json!(null));
    assert_eq!(user_of(&laptop.get(&app, "/whoami").await), json!("ann"));
    assert_eq!(ids(&laptop.get(&app, "/sessions").await), vec![a_id]);

    let all = laptop.get(&app, "/logout-everywhere?all=1").await;
    assert_eq!(all.json()["revoked"], 1);
    assert_eq!(user_of(&laptop.get(&app, "/whoami").await), json!(null));
    assert!(engine.sessions_of("ann").await.unwrap().is_empty());
}
