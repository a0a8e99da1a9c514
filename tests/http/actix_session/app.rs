//! The app the adapter tests drive: actix-session's own `SessionMiddleware` over any
//! `SessionStore` (ours, or actix-session's `RedisSessionStore` for comparison), with handlers
//! that use actix-session's `Session`, and a gate that holds chosen requests after their
//! session was loaded.

use std::sync::Arc;

use ::actix_session::storage::SessionStore;
use ::actix_session::{Session, SessionMiddleware};
use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::cookie::Key;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{init_service, TestRequest};
use actix_web::{web, App, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Barrier;

use crate::support::app::Answer;

/// Where the `/sync/...` handlers wait, after the middleware loaded their session and before
/// they change it: with the test, or with each other.
#[derive(Clone)]
pub struct Gate(pub Arc<Barrier>);

impl Gate {
    /// A gate that opens once `parties` have reached it.
    pub fn of(parties: usize) -> Self {
        Gate(Arc::new(Barrier::new(parties)))
    }

    pub async fn wait(&self) {
        self.0.wait().await;
    }
}

#[derive(Deserialize)]
pub struct Kv {
    pub key: String,
    #[serde(default)]
    pub value: String,
    /// How many times a `/sync/...` handler waits at the gate (default 1).
    pub waits: Option<u32>,
}

async fn insert(session: Session, query: web::Query<Kv>) -> Answer {
    session.insert(&query.key, &query.value)?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

async fn get(session: Session, query: web::Query<Kv>) -> Answer {
    let value: Option<String> = session.get(&query.key)?;
    Ok(HttpResponse::Ok().json(json!({ "value": value })))
}

async fn remove(session: Session, query: web::Query<Kv>) -> Answer {
    let removed = session.remove(&query.key).is_some();
    Ok(HttpResponse::Ok().json(json!({ "removed": removed })))
}

/// The keys `Session::entries()` shows, sorted.
async fn entries(session: Session) -> Answer {
    let mut keys: Vec<String> = session.entries().keys().cloned().collect();
    keys.sort();
    Ok(HttpResponse::Ok().json(json!({ "keys": keys })))
}

/// Logs in the actix-session way: a value, then a new session key.
async fn login(session: Session, query: web::Query<Kv>) -> Answer {
    session.insert("user", &query.value)?;
    session.renew();
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

async fn purge(session: Session) -> Answer {
    session.purge();
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

/// `clear()`, then one key: the state replaces the session.
async fn clear_then_insert(session: Session, query: web::Query<Kv>) -> Answer {
    session.clear();
    session.insert(&query.key, &query.value)?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

async fn sync_insert(session: Session, gate: web::Data<Gate>, query: web::Query<Kv>) -> Answer {
    for _ in 0..query.waits.unwrap_or(1) {
        gate.wait().await;
    }
    insert(session, query).await
}

async fn sync_remove(session: Session, gate: web::Data<Gate>, query: web::Query<Kv>) -> Answer {
    for _ in 0..query.waits.unwrap_or(1) {
        gate.wait().await;
    }
    remove(session, query).await
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/insert", web::get().to(insert))
        .route("/get", web::get().to(get))
        .route("/remove", web::get().to(remove))
        .route("/entries", web::get().to(entries))
        .route("/login", web::get().to(login))
        .route("/purge", web::get().to(purge))
        .route("/clear-then-insert", web::get().to(clear_then_insert))
        .route("/sync/insert", web::get().to(sync_insert))
        .route("/sync/remove", web::get().to(sync_remove));
}

/// `routes` behind actix-session's middleware on `store`, with its defaults (encrypted cookie
/// named `id`, one day of `state_ttl`) except `Secure`, which the test client does not need.
pub async fn app<S: SessionStore + 'static>(
    store: S,
    key: Key,
    gate: Gate,
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    let middleware = SessionMiddleware::builder(store, key)
        .cookie_secure(false)
        .build();
    init_service(
        App::new()
            .app_data(web::Data::new(gate))
            .wrap(middleware)
            // actix-session's middleware fails the request when the store fails; a server
            // answers that error with its response (an opaque 500), so this does the same
            // for the test client, which would otherwise panic. The failed call took the
            // request with it; the reply needs nothing of it.
            .wrap_fn(|req, service| {
                let response = service.call(req);
                async move {
                    Ok(match response.await {
                        Ok(response) => response.map_into_boxed_body(),
                        Err(error) => ServiceResponse::new(
                            TestRequest::default().to_http_request(),
                            error.error_response(),
                        ),
                    })
                }
            })
            .configure(routes),
    )
    .await
}
