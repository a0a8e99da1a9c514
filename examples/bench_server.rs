//! Baseline servers for the session benchmark: the same routes, answered by different session
//! layers, so that `loadtest` can compare them.
//!
//! ```text
//! cargo run --release --example bench_server -- --mode actix-session --port 8080 \
//!     --redis-url redis://127.0.0.1:6390 --workers 1
//! ```
//!
//! Modes:
//! - `none`: the ceiling. No session layer; `/login` sets a plain random `sid` cookie and `/incr`
//!   keeps a per-`sid` counter in an in-process map, so the load tool's checks pass unchanged.
//! - `actix-session`: actix-session 0.11 with its `RedisSessionStore`.
//! - `circumflex`: this crate (`AsyncSession` over its per-worker actor and `RedisBackend`).
//!   `--max-batch N` tunes the actor; `--bind-user` makes every login a user's (`bind_user`,
//!   one user per login), so that reads and writes run on bound sessions; `--metrics` installs
//!   a Prometheus recorder, as the demo does.
//!
//! Routes (all `GET`, all answering JSON):
//! - `/login?filler=N`: creates the session with `a` = "alpha", `b` = "beta", `counter` = 0 and
//!   N filler keys `f0..f{N-1}` of 200 bytes each. Answers `{"ok":true}`.
//! - `/read`: reads `a` and `b`, answers `{"a":..,"b":..}`.
//! - `/incr`: reads `counter`, adds one, writes it back, answers `{"counter":N}`.
//! - `/noop`: does not touch the session, answers `{"ok":true}`.
//!
//! `/read` and `/incr` answer 401 when there is no session, so that a lost session shows up as
//! an error in the load tool instead of as a fast answer.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{Cookie, Key};
use actix_web::http::header::{self, ContentType};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use circumflex_session::{
    ActorConfig, MemoryBackend, RedisBackend, RedisConfig, SessionConfig, SessionEngine,
    SessionMiddleware as CircumflexMiddleware,
};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Most filler keys a login may ask for.
const MAX_FILLER: usize = 10_000;
/// Size of one filler value.
const FILLER_BYTES: usize = 200;
const OK_BODY: &str = r#"{"ok":true}"#;
const NO_SESSION_BODY: &str = r#"{"error":"no session"}"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Mode {
    None,
    ActixSession,
    Circumflex,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Store {
    Redis,
    /// The session layer alone, without Redis.
    Memory,
}

/// Baseline servers for the session benchmark (see the module docs).
#[derive(Parser)]
#[command(name = "bench_server")]
struct Config {
    /// Which session layer answers
    #[arg(long, value_enum)]
    mode: Mode,
    /// Port on 127.0.0.1; 0 picks a free one
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Redis for the session store
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// circumflex: a Redis Cluster instead (some nodes' URLs, comma-separated); `--redis-url`
    /// is then not used
    #[arg(long, value_delimiter = ',')]
    redis_cluster_nodes: Vec<String>,
    /// actix-web workers
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// circumflex: commands per pipeline at most
    #[arg(long, default_value_t = ActorConfig::default().max_batch)]
    max_batch: usize,
    /// circumflex: the store behind the session layer
    #[arg(long, value_enum, default_value_t = Store::Redis)]
    backend: Store,
    /// circumflex: skip TTL refreshes within P% of the time to idle (default: the crate's)
    #[arg(long, default_value_t = SessionConfig::default().refresh_after_percent, value_parser = clap::value_parser!(u8).range(0..100))]
    refresh_after_percent: u8,
    /// circumflex: `/login` binds the session to a user of its own (`bind_user`) first, so
    /// that `/read` and `/incr` run on bound sessions
    #[arg(long)]
    bind_user: bool,
    /// circumflex: install a Prometheus recorder for the engine's metrics
    #[arg(long)]
    metrics: bool,
}

#[derive(Deserialize)]
struct LoginQuery {
    filler: Option<usize>,
}

#[derive(Serialize)]
struct ReadBody<'a> {
    a: &'a str,
    b: &'a str,
}

fn json(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(body)
}

fn ok() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(OK_BODY)
}

fn no_session() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(ContentType::json())
        .body(NO_SESSION_BODY)
}

fn counter_body(n: u64) -> String {
    format!(r#"{{"counter":{n}}}"#)
}

async fn noop() -> HttpResponse {
    ok()
}

/// Starts a mode's server: every mode gets the same workers, shutdown and address, so that
/// the comparison stays fair.
macro_rules! listen {
    ($cfg:expr, $factory:expr) => {{
        let server = HttpServer::new($factory)
            .workers(usize::from($cfg.workers))
            .shutdown_timeout(1)
            .bind(("127.0.0.1", $cfg.port))?;
        announce(&server.addrs());
        server.run()
    }};
}

fn announce(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        println!("listening on http://{addr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Mode `none`: the ceiling, no session layer at all.

/// Per-login counters, keyed by the random `sid` cookie value.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, u64>>);

/// The `sid` value from the request's `Cookie` header(s), without parsing every cookie.
fn sid(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sid="))
}

mod plain {
    use super::*;

    pub async fn login(counters: web::Data<Counters>) -> HttpResponse {
        let sid = format!("{:016x}", rand::random::<u64>());
        match counters.0.lock() {
            Ok(mut map) => {
                map.insert(sid.clone(), 0);
            }
            Err(_) => return HttpResponse::InternalServerError().finish(),
        }
        HttpResponse::Ok()
            .insert_header(ContentType::json())
            .cookie(Cookie::build("sid", sid).path("/").http_only(true).finish())
            .body(OK_BODY)
    }

    pub async fn read(req: HttpRequest) -> HttpResponse {
        if sid(&req).is_none() {
            return no_session();
        }
        match serde_json::to_string(&ReadBody {
            a: "alpha",
            b: "beta",
        }) {
            Ok(body) => json(body),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    pub async fn incr(req: HttpRequest, counters: web::Data<Counters>) -> HttpResponse {
        let Some(sid) = sid(&req) else {
            return no_session();
        };
        let n = match counters.0.lock() {
            Ok(mut map) => match map.get_mut(sid) {
                Some(n) => {
                    *n += 1;
                    *n
                }
                None => return no_session(),
            },
            Err(_) => return HttpResponse::InternalServerError().finish(),
        };
        json(counter_body(n))
    }
}

async fn serve_none(cfg: &Config) -> std::io::Result<()> {
    let counters = web::Data::new(Counters::default());
    let server = listen!(cfg, move || {
        App::new()
            .app_data(counters.clone())
            .route("/login", web::get().to(plain::login))
            .route("/read", web::get().to(plain::read))
            .route("/incr", web::get().to(plain::incr))
            .route("/noop", web::get().to(noop))
    });
    server.await
}

// ---------------------------------------------------------------------------------------------
// Mode `actix-session`: actix-session 0.11 with its Redis store.

mod actix_sess {
    use super::*;

    pub async fn login(
        session: Session,
        query: web::Query<LoginQuery>,
    ) -> actix_web::Result<HttpResponse> {
        let filler = query.filler.unwrap_or(0).min(MAX_FILLER);
        session.insert("a", "alpha")?;
        session.insert("b", "beta")?;
        session.insert("counter", 0u64)?;
        let value = "x".repeat(FILLER_BYTES);
        for i in 0..filler {
            session.insert(format!("f{i}"), &value)?;
        }
        Ok(ok())
    }

    pub async fn read(session: Session) -> actix_web::Result<HttpResponse> {
        let (Some(a), Some(b)) = (session.get::<String>("a")?, session.get::<String>("b")?) else {
            return Ok(no_session());
        };
        Ok(json(serde_json::to_string(&ReadBody { a: &a, b: &b })?))
    }

    pub async fn incr(session: Session) -> actix_web::Result<HttpResponse> {
        let Some(n) = session.get::<u64>("counter")? else {
            return Ok(no_session());
        };
        let n = n + 1;
        session.insert("counter", n)?;
        Ok(json(counter_body(n)))
    }
}

async fn serve_actix_session(cfg: &Config) -> std::io::Result<()> {
    let store = RedisSessionStore::new(cfg.redis_url.clone())
        .await
        .map_err(|e| std::io::Error::other(format!("redis {}: {e}", cfg.redis_url)))?;
    let key = Key::generate();
    let server = listen!(cfg, move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .build(),
            )
            .route("/login", web::get().to(actix_sess::login))
            .route("/read", web::get().to(actix_sess::read))
            .route("/incr", web::get().to(actix_sess::incr))
            .route("/noop", web::get().to(noop))
    });
    server.await
}

// ---------------------------------------------------------------------------------------------
// Mode `circumflex`: this crate.

mod circ {
    use super::*;
    use circumflex_session::AsyncSession;

    /// Whether `/login` binds the session to a user (`--bind-user`).
    pub struct BindUsers(pub bool);

    /// Users handed out so far: each login is a user of its own.
    static USERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    pub async fn login(
        session: AsyncSession,
        query: web::Query<LoginQuery>,
        bind: web::Data<BindUsers>,
    ) -> actix_web::Result<HttpResponse> {
        if bind.0 {
            let user = USERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            session.bind_user(&format!("user{user}")).await?;
        }
        let filler = query.filler.unwrap_or(0).min(MAX_FILLER);
        let value = serde_json::Value::String("x".repeat(FILLER_BYTES));
        let mut entries = vec![
            ("a".to_owned(), serde_json::json!("alpha")),
            ("b".to_owned(), serde_json::json!("beta")),
            ("counter".to_owned(), serde_json::json!(0)),
        ];
        entries.extend((0..filler).map(|i| (format!("f{i}"), value.clone())));
        session.set_many(entries).await?;
        Ok(ok())
    }

    pub async fn read(session: AsyncSession) -> actix_web::Result<HttpResponse> {
        let values = session.mget::<String>(&["a", "b"]).await?;
        let [Some(a), Some(b)] = &values[..] else {
            return Ok(no_session());
        };
        Ok(json(serde_json::to_string(&ReadBody { a, b })?))
    }

    /// A get then a set, as in the other modes (`AsyncSession::incr` would do it in one).
    pub async fn incr(session: AsyncSession) -> actix_web::Result<HttpResponse> {
        let Some(n) = session.get::<u64>("counter").await? else {
            return Ok(no_session());
        };
        let n = n + 1;
        session.set("counter", &n).await?;
        Ok(json(counter_body(n)))
    }
}

async fn serve_circumflex(cfg: &Config) -> std::io::Result<()> {
    if cfg.metrics {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(std::io::Error::other)?;
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            handle.run_upkeep(); // drains histogram samples, as a scraper would
        });
    }
    let max_batch = cfg.max_batch;
    let actor = ActorConfig {
        max_batch,
        ..ActorConfig::default()
    };
    let engine = match cfg.backend {
        Store::Memory => SessionEngine::with_config(MemoryBackend::new(), actor),
        Store::Redis => {
            let redis = if cfg.redis_cluster_nodes.is_empty() {
                RedisConfig::new(cfg.redis_url.clone())
            } else {
                RedisConfig::cluster(cfg.redis_cluster_nodes.iter().cloned())
            };
            let backend = RedisBackend::connect(redis).await;
            SessionEngine::with_config(backend.map_err(std::io::Error::other)?, actor)
        }
    }
    .map_err(std::io::Error::other)?;
    let key = Key::generate();
    let refresh_after_percent = cfg.refresh_after_percent;
    let bind_user = cfg.bind_user;
    let stats = engine.clone();
    let server = listen!(cfg, move || {
        App::new()
            .app_data(web::Data::new(circ::BindUsers(bind_user)))
            .wrap(
                CircumflexMiddleware::builder(engine.clone(), key.clone())
                    .cookie_secure(false)
                    .refresh_after_percent(refresh_after_percent)
                    .build()
                    .expect("valid session settings"),
            )
            .route("/login", web::get().to(circ::login))
            .route("/read", web::get().to(circ::read))
            .route("/incr", web::get().to(circ::incr))
            .route("/noop", web::get().to(noop))
    });
    let result = server.await;
    let s = stats.stats();
    println!(
        "engine stats: commands {} pipelines {} average batch {:.1} max batch {} redis commands {} \
         round trips {} redis commands per round trip {:.1} redirects {} \
         fused reads {} fused refreshes {} errors: overloaded {} timeout {} unavailable {} server {}",
        s.commands,
        s.pipelines,
        s.average_batch(),
        s.max_batch,
        s.redis_commands,
        s.round_trips,
        s.redis_commands as f64 / s.round_trips.max(1) as f64,
        s.redirects,
        s.fused_reads,
        s.fused_refreshes,
        s.errors_overloaded,
        s.errors_timeout,
        s.errors_unavailable,
        s.errors_server
    );
    result
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cfg = Config::parse();
    match cfg.mode {
        Mode::None => serve_none(&cfg).await,
        Mode::ActixSession => serve_actix_session(&cfg).await,
        Mode::Circumflex => serve_circumflex(&cfg).await,
    }
}
