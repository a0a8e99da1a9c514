//! Sessions by user over HTTP, on a private redis-server: log in as a user from two browsers,
//! list the sessions, log out everywhere, the per-user cap, and remember-me.

use std::time::Duration;

use actix_web::cookie::Key;
use actix_web::test::init_service;
use actix_web::{web, App, HttpRequest, HttpResponse};
use std::sync::{Arc, Mutex};

use circumflex_session::{
    AsyncSession, MemoryBackend, SessionEngine, SessionEvent, SessionEventKind, SessionMiddleware,
};
use serde::Deserialize;
use serde_json::json;

use crate::support::app::*;
use crate::support::RedisServer;

#[derive(Deserialize)]
struct Everywhere {
    all: Option<u8>,
}

/// The demo's login: binds the user, labelled with the user agent.
async fn bind(session: AsyncSession, req: HttpRequest, query: web::Query<Login>) -> Answer {
    let agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    session.bind_user_labelled(&query.user, agent).await?;
    session.set("user", &query.user).await?;
    Ok(HttpResponse::Ok().json(json!({ "user": query.user, "id": session.id() })))
}

async fn sessions(session: AsyncSession) -> Answer {
    let list = session.sessions().await?;
    let ids: Vec<_> = list.iter().map(|s| s.id.clone()).collect();
    let labels: Vec<_> = list.iter().map(|s| s.label.clone()).collect();
    Ok(HttpResponse::Ok().json(json!({ "ids": ids, "labels": labels, "me": session.id() })))
}

async fn everywhere(session: AsyncSession, query: web::Query<Everywhere>) -> Answer {
    let revoked = session.logout_everywhere(query.all == Some(1)).await?;
    Ok(HttpResponse::Ok().json(json!({ "revoked": revoked })))
}

#[derive(Deserialize)]
struct Tti {
    secs: u64,
}

async fn remember(session: AsyncSession, query: web::Query<Tti>) -> Answer {
    session.set_tti(Duration::from_secs(query.secs)).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

fn user_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bind", web::get().to(bind))
        .route("/sessions", web::get().to(sessions))
        .route("/logout-everywhere", web::get().to(everywhere))
        .route("/remember-me", web::get().to(remember));
    routes(cfg);
}

async fn user_app(
    middleware: SessionMiddleware,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    init_service(App::new().wrap(middleware).configure(user_routes)).await
}

fn ids(reply: &Reply) -> Vec<String> {
    let mut ids: Vec<String> = serde_json::from_value(reply.json()["ids"].clone()).unwrap();
    ids.sort();
    ids
}

#[actix_web::test]
async fn two_browsers_of_one_user_see_each_other_and_logout_everywhere_ends_the_other() {
    let server = RedisServer::start();
    two_browsers(redis_engine(&server).await).await;
}

#[actix_web::test]
async fn the_memory_backend_lists_and_revokes_a_users_sessions_alike() {
    two_browsers(SessionEngine::new(MemoryBackend::new())).await;
}

async fn two_browsers(engine: SessionEngine) {
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
    let b = phone.get(&app, "/bind?user=ann").await;
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

#[actix_web::test]
async fn every_lifecycle_event_reaches_the_hook_and_a_panicking_hook_breaks_no_request() {
    let server = RedisServer::start();
    let seen: Arc<Mutex<Vec<SessionEvent>>> = Arc::default();
    let log = seen.clone();
    let engine = redis_engine(&server).await.on_event(move |event| {
        log.lock().unwrap().push(event.clone());
        // Every other event makes the hook panic: requests must not notice.
        if log.lock().unwrap().len().is_multiple_of(2) {
            panic!("a hook that panics");
        }
    });
    let mw = SessionMiddleware::builder(engine.clone(), Key::generate())
        .max_sessions_per_user(1)
        .build()
        .unwrap();
    let app = user_app(mw).await;
    let (mut first, mut second) = (Visitor::default(), Visitor::default());
    assert_eq!(first.get(&app, "/kv/set?key=k&value=v").await.status, 200); // created
    assert_eq!(first.get(&app, "/bind?user=dee").await.status, 200); // bound
    assert_eq!(second.get(&app, "/bind?user=dee").await.status, 200); // bound, first revoked
    assert_eq!(user_of(&first.get(&app, "/whoami").await), json!(null)); // gone
    assert_eq!(second.get(&app, "/login?user=dee").await.status, 200); // renewed
    assert_eq!(second.get(&app, "/logout").await.status, 200); // invalidated

    let wanted = [
        SessionEventKind::Created,
        SessionEventKind::Bound,
        SessionEventKind::Revoked,
        SessionEventKind::Gone,
        SessionEventKind::Renewed,
        SessionEventKind::Invalidated,
    ];
    // Events arrive on the hook's own thread: wait for them, without a time limit on success.
    for _ in 0..500 {
        let kinds: Vec<_> = seen.lock().unwrap().iter().map(|e| e.kind).collect();
        if wanted.iter().all(|k| kinds.contains(k)) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let events = seen.lock().unwrap().clone();
    for kind in wanted {
        assert!(
            events.iter().any(|e| e.kind == kind),
            "{kind:?} missing: {events:?}"
        );
    }
    let bound: Vec<_> = events
        .iter()
        .filter(|e| e.kind == SessionEventKind::Bound)
        .collect();
    assert_eq!(bound.len(), 2);
    assert!(bound.iter().all(|e| e.user_id.as_deref() == Some("dee")));
    let revoked = events
        .iter()
        .find(|e| e.kind == SessionEventKind::Revoked)
        .unwrap();
    assert_eq!(
        revoked.session_id, bound[0].session_id,
        "the cap revoked the first login"
    );
    // Every other call panicked: by the time the sixth event arrived, the panics of the
    // second and fourth were counted (by the hook thread, read through the stats).
    let panicked = engine.stats().events_panicked;
    assert!(
        panicked >= 2,
        "{panicked} panics counted for {} events",
        events.len()
    );
}
