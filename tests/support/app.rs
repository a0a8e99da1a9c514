//! The app the HTTP tests drive: routes like the demo's behind `SessionMiddleware`, and helpers
//! to send requests and look at the replies.
//!
//! Cookies travel the way the actix test client carries them: read from `Set-Cookie` with
//! `response().cookies()` and sent back with `TestRequest::cookie` (which percent-encodes the
//! value), except where a test sends a raw `Cookie` header on purpose, as a browser would.

use std::time::Duration;

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, Key};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse};
use circumflex_session::{
    ActorConfig, AsyncSession, Error, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{RedisCluster, RedisServer};

// ---------------------------------------------------------------------------------------------
// The app under test: the demo's routes, plus a route that ignores the session, one that
// extracts it without using it, and one that reports `set`'s error as data.
// ---------------------------------------------------------------------------------------------

pub type Answer = actix_web::Result<HttpResponse>;

#[derive(Deserialize)]
pub struct Login {
    pub user: String,
}

pub async fn login(session: AsyncSession, query: web::Query<Login>) -> Answer {
    session.renew().await?;
    session.set("user", &query.user).await?;
    Ok(HttpResponse::Ok().json(json!({ "user": query.user })))
}

pub async fn whoami(session: AsyncSession) -> Answer {
    let user: Option<String> = session.get("user").await?;
    Ok(HttpResponse::Ok().json(json!({ "user": user })))
}

pub async fn counter(session: AsyncSession) -> Answer {
    let counter = session.incr("counter", 1).await?;
    Ok(HttpResponse::Ok().json(json!({ "counter": counter })))
}

#[derive(Deserialize)]
pub struct KvSet {
    pub key: String,
    pub value: String,
}

pub async fn kv_set(session: AsyncSession, query: web::Query<KvSet>) -> Answer {
    session.set(&query.key, &query.value).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

#[derive(Deserialize)]
pub struct KvGet {
    pub key: String,
}

pub async fn kv_get(session: AsyncSession, query: web::Query<KvGet>) -> Answer {
    let value: Option<String> = session.get(&query.key).await?;
    Ok(HttpResponse::Ok().json(json!({ "key": query.key, "value": value })))
}

pub async fn logout(session: AsyncSession) -> Answer {
    session.invalidate().await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

/// Never mentions the session.
pub async fn plain() -> HttpResponse {
    HttpResponse::Ok().body("plain")
}

/// Extracts the session but never calls it.
pub async fn untouched(_session: AsyncSession) -> HttpResponse {
    HttpResponse::Ok().body("untouched")
}

/// Two extractions of one request's session: a write through one is seen through the other,
/// and the new session's cookie goes out once.
pub async fn twice(first: AsyncSession, second: AsyncSession) -> Answer {
    first.set("color", "teal").await?;
    let seen: Option<String> = second.get("color").await?;
    Ok(HttpResponse::Ok().json(json!({ "seen": seen, "same_id": first.id() == second.id() })))
}

#[derive(Deserialize)]
pub struct Big {
    pub bytes: usize,
}

/// Stores a string of `bytes` characters under `note` and reports what `set` answered.
pub async fn big(session: AsyncSession, query: web::Query<Big>) -> Answer {
    match session.set("note", &"x".repeat(query.bytes)).await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({ "stored": true }))),
        Err(Error::ValueTooLarge { key, size, max }) => {
            Ok(HttpResponse::PayloadTooLarge()
                .json(json!({ "key": key, "size": size, "max": max })))
        }
        Err(other) => Err(other.into()),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login))
        .route("/whoami", web::get().to(whoami))
        .route("/counter", web::get().to(counter))
        .route("/kv/set", web::get().to(kv_set))
        .route("/kv/get", web::get().to(kv_get))
        .route("/logout", web::get().to(logout))
        .route("/plain", web::get().to(plain))
        .route("/untouched", web::get().to(untouched))
        .route("/big", web::get().to(big))
        .route("/twice", web::get().to(twice));
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The app under test: `routes` behind `middleware`.
pub async fn test_app(
    middleware: SessionMiddleware,
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    app_with(middleware, |_| {}).await
}

/// The app under test with every default setting, on `engine` and a fresh key.
pub async fn app_on(
    engine: impl Into<SessionEngine>,
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    test_app(SessionMiddleware::new(engine, Key::generate())).await
}

/// `routes` and a test's own `extra` routes behind `middleware`.
pub async fn app_with(
    middleware: SessionMiddleware,
    extra: impl FnOnce(&mut web::ServiceConfig),
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    init_service(
        App::new()
            .wrap(middleware)
            .configure(extra)
            .configure(routes),
    )
    .await
}

/// A backend for `config` that passed its startup check (`RedisBackend::check`).
pub async fn checked_backend(config: RedisConfig) -> RedisBackend {
    let backend = RedisBackend::connect(config)
        .await
        .expect("valid redis config");
    backend
        .check()
        .await
        .unwrap_or_else(|e| panic!("the startup check failed: {e}"));
    backend
}

pub async fn redis_engine(server: &RedisServer) -> SessionEngine {
    SessionEngine::new(
        RedisBackend::connect(RedisConfig::new(server.url()))
            .await
            .expect("valid redis config"),
    )
}

/// An engine on `server` that gives up quickly once the server is gone: connections wait
/// 200 ms, operations 500 ms, so that an outage test waits out short deadlines.
pub async fn impatient_engine(server: &RedisServer) -> SessionEngine {
    let config = RedisConfig::new(server.url()).connect_timeout(Duration::from_millis(200));
    let backend = RedisBackend::connect(config)
        .await
        .expect("valid redis config");
    let actor = ActorConfig {
        deadline_ms: 500,
        ..ActorConfig::default()
    };
    SessionEngine::with_config(backend, actor).expect("valid actor config")
}

/// What a test looks at in a response.
pub struct Reply {
    pub status: StatusCode,
    /// Every `Set-Cookie` header, as sent.
    pub raw_set_cookies: Vec<String>,
    /// The same, parsed as the actix test client parses them.
    pub cookies: Vec<Cookie<'static>>,
    /// Every response header.
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): status {}, body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The one session cookie this response sets; panics unless there is exactly one.
    pub fn cookie(&self) -> Cookie<'static> {
        assert_eq!(
            self.raw_set_cookies.len(),
            1,
            "expected exactly one Set-Cookie, got {:?}",
            self.raw_set_cookies
        );
        assert_eq!(self.cookies.len(), 1, "Set-Cookie did not parse");
        self.cookies[0].clone()
    }

    /// The value of the response header `name`, if it was sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("a visible ASCII header").to_owned())
    }

    pub fn assert_no_cookie(&self, context: &str) {
        assert!(
            self.raw_set_cookies.is_empty(),
            "{context}: expected no Set-Cookie, got {:?}",
            self.raw_set_cookies
        );
    }
}

pub async fn send<S, R, B>(app: &S, request: R) -> Reply
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = call_service(app, request).await;
    let status = response.status();
    let raw_set_cookies = response
        .headers()
        .get_all(SET_COOKIE)
        .map(|v| v.to_str().expect("Set-Cookie is ASCII").to_owned())
        .collect();
    let cookies = response
        .response()
        .cookies()
        .map(Cookie::into_owned)
        .collect();
    let headers = response.headers().clone();
    let body = read_body(response).await;
    Reply {
        status,
        raw_set_cookies,
        cookies,
        headers,
        body,
    }
}

/// A GET, carrying `cookie` the way the actix test client does.
pub fn get(uri: &str, cookie: Option<&Cookie<'static>>) -> TestRequest {
    let request = TestRequest::get().uri(uri);
    match cookie {
        Some(cookie) => request.cookie(cookie.clone()),
        None => request,
    }
}

/// A GET with a raw `Cookie` header, byte for byte.
pub fn get_with_header(uri: &str, cookie_header: HeaderValue) -> TestRequest {
    TestRequest::get()
        .uri(uri)
        .insert_header((COOKIE, cookie_header))
}

/// A Redis a test looks into through a connection of its own: a private server, the same over
/// TLS, or one database of it as an ACL user.
pub trait Inspect {
    /// A new synchronous connection, selected on the database the sessions go to.
    fn inspect(&self) -> redis::Connection;
}

impl Inspect for RedisServer {
    fn inspect(&self) -> redis::Connection {
        self.connection()
    }
}

/// A store whose session keys a test can list: anything it can [`Inspect`], or every primary
/// of a cluster.
pub trait SessionKeys {
    /// Every key matching `session:*`.
    fn session_keys(&self) -> Vec<String>;
}

impl<T: Inspect> SessionKeys for T {
    fn session_keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("session:*")
            .query(&mut self.inspect())
            .expect("KEYS")
    }
}

impl SessionKeys for RedisCluster {
    fn session_keys(&self) -> Vec<String> {
        self.keys("session:*")
    }
}

/// The ids of the session hashes in Redis, sorted. A key is `session:{<tag>}:<rest>`, and the
/// id is `<tag><rest>`, as the cookie carries it.
pub fn session_ids(store: &impl SessionKeys) -> Vec<String> {
    let mut ids: Vec<String> = store
        .session_keys()
        .into_iter()
        .map(|k| {
            let tagged = k
                .strip_prefix("session:{")
                .expect("KEYS session:* answers tagged session keys");
            let (tag, rest) = tagged.split_once("}:").expect("session:{tag}:rest");
            format!("{tag}{rest}")
        })
        .collect();
    ids.sort();
    ids
}

/// The Redis key of the session with this id (as [`session_ids`] lists it).
pub fn session_key(id: &str) -> String {
    format!("session:{{{}}}:{}", &id[..4], &id[4..])
}

/// The one session id in Redis; panics unless there is exactly one.
pub fn only_session_id(store: &impl SessionKeys) -> String {
    let ids = session_ids(store);
    assert_eq!(ids.len(), 1, "expected exactly one session, found {ids:?}");
    ids.into_iter().next().unwrap()
}

/// Flips one character of `s` at byte `at` to another character of the same class.
pub fn flip_char(s: &str, at: usize) -> String {
    let mut bytes = s.as_bytes().to_vec();
    bytes[at] = match bytes[at] {
        b'0' => b'1',
        b'A' => b'B',
        b'a' => b'b',
        _ => b'0',
    };
    String::from_utf8(bytes).unwrap()
}

pub fn user_of(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.text());
    reply.json()["user"].clone()
}

/// A browser: keeps the session cookie the server last set (or removed) and sends it back.
#[derive(Default)]
pub struct Visitor {
    pub cookie: Option<Cookie<'static>>,
}

impl Visitor {
    /// GETs `uri` with the current cookie and keeps the cookie the reply sets.
    pub async fn get<S, B>(&mut self, app: &S, uri: &str) -> Reply
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let reply = send(app, get(uri, self.cookie.as_ref()).to_request()).await;
        if let Some(cookie) = reply.cookies.first() {
            self.cookie = (!cookie.value().is_empty()).then(|| cookie.clone());
        }
        reply
    }
}

/// Counts the Redis commands a request costs, through the engine's stats.
pub async fn redis_cost<S, R, B>(app: &S, engine: &SessionEngine, request: R) -> (Reply, u64)
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let before = engine.stats().redis_commands;
    let reply = send(app, request).await;
    (reply, engine.stats().redis_commands - before)
}
