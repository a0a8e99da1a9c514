//! The circumflex-session demo: `cargo run --example demo`.
//!
//! Listens on 127.0.0.1:$PORT (default 8080). Settings come from `config/default.toml` and the
//! environment: `PORT`, and whichever Redis is named by `REDIS_URL` (`rediss://` for TLS, with
//! `REDIS_TLS_CA=<PEM path>` for a private CA, `REDIS_TLS_CERT`/`REDIS_TLS_KEY` for mutual
//! TLS), `REDIS_CLUSTER_NODES` (comma-separated URLs) or `REDIS_SENTINEL`
//! (`redis+sentinel://host:port[,host:port...]/<master>`), or by the config file. The demo
//! checks that Redis answers before it listens, and stops with the reason if it does not (a
//! wrong password, a certificate that does not verify). With no Redis named, a private
//! `redis-server` is started on a free port (and stopped on exit); failing that, the in-memory
//! backend is used, loudly. TLS needs the feature: `cargo run --example demo --features
//! tls-rustls`.
//!
//! Routes (also listed on `/`):
//!
//! | route | what it does |
//! |---|---|
//! | `/login?user=ann` | logs in as `ann` (`bind_user_labelled`, labelled with the `User-Agent`) and stores `user` |
//! | `/whoami` | reads `user` |
//! | `/counter` | increments `counter` atomically |
//! | `/kv/set?key=&value=`, `/kv/get?key=` | store and read any key |
//! | `/sessions` | the logged-in user's sessions, the caller's marked `current` |
//! | `/logout-everywhere` | revokes the user's other sessions (`?all=1`: this one too); answers how many |
//! | `/remember-me?days=30` | gives the session its own time to idle (`set_tti`): a persistent cookie |
//! | `/logout` | invalidates the session |
//! | `/metrics` | the engine's metrics in the Prometheus text format (batch sizes, flush times, commands by operation, errors by kind, round trips, session events) |
//!
//! Every session event (created, renewed, bound, invalidated, revoked, gone) is logged at INFO
//! with its kind and user, never the session id. The metrics recorder is installed before the
//! engine is built, as it must be (see the README's "Metrics and tracing").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::cookie::Key;
use actix_web::http::header::USER_AGENT;
use actix_web::http::StatusCode;
use actix_web::{get, web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use circumflex_session::{
    AsyncSession, Config, Error, MemoryBackend, RedisBackend, RedisConfig, SessionEngine,
    SessionEvent, SessionMiddleware,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;

// The tests' private-Redis starter: a free loopback port (never 6379), killed by PID on drop.
#[path = "../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>circumflex-session demo</title></head>
<body>
<h1>circumflex-session demo</h1>
<p>Sessions live in Redis, one hash each, read and written per key on demand.</p>
<ul>
<li><a href="/login?user=ann">/login?user=ann</a> logs in as <code>ann</code> (a new session id,
    listed under the user with your User-Agent) and stores <code>user</code></li>
<li><a href="/whoami">/whoami</a> reads <code>user</code></li>
<li><a href="/counter">/counter</a> increments <code>counter</code> atomically</li>
<li><a href="/kv/set?key=color&amp;value=blue">/kv/set?key=color&amp;value=blue</a> and
    <a href="/kv/get?key=color">/kv/get?key=color</a> store and read any key</li>
<li><a href="/sessions">/sessions</a> lists your user's sessions; yours is <code>"current"</code></li>
<li><a href="/logout-everywhere">/logout-everywhere</a> ends your user's other sessions;
    <a href="/logout-everywhere?all=1">?all=1</a> this one too</li>
<li><a href="/remember-me">/remember-me</a> (<code>?days=</code>, default 30) keeps this session
    for that long without use, in a persistent cookie</li>
<li><a href="/logout">/logout</a> invalidates the session</li>
<li><a href="/metrics">/metrics</a> shows the engine's metrics, in the Prometheus text format</li>
</ul>
<p>This page never touches the session: no Redis command, no cookie. Nor does /metrics.</p>
</body></html>"#;

/// Session errors for this app, a playground where the client chooses keys and values: a bad
/// key, a value too large, a session full, a value read as the wrong type (a counter read as a
/// string), or an argument out of range (an empty user name, a remember-me beyond the allowed
/// days) are the client's fault here (400, with the reason); everything else is the library's
/// opaque 500/503.
struct DemoError(Error);

impl From<Error> for DemoError {
    fn from(e: Error) -> Self {
        DemoError(e)
    }
}

impl std::fmt::Debug for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for DemoError {
    fn status_code(&self) -> StatusCode {
        match self.0 {
            Error::InvalidKey(_)
            | Error::ValueTooLarge { .. }
            | Error::NotAnInteger(_)
            | Error::Serialization { .. }
            | Error::SessionFull { .. }
            | Error::TooManyKeys { .. }
            | Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            _ => self.0.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self.status_code() {
            StatusCode::BAD_REQUEST => {
                HttpResponse::BadRequest().json(json!({ "error": self.0.to_string() }))
            }
            _ => self.0.error_response(),
        }
    }
}

type Answer = Result<HttpResponse, DemoError>;

#[get("/")]
async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// Logs in: a new session id with the user's slot tag, listed under the user (what the session
/// held is kept). `user` is stored too, for `/whoami`.
#[get("/login")]
async fn login(session: AsyncSession, req: HttpRequest, query: web::Query<Login>) -> Answer {
    session
        .bind_user_labelled(&query.user, user_agent(&req))
        .await?;
    session.set("user", &query.user).await?;
    Ok(HttpResponse::Ok().json(json!({ "user": query.user })))
}

/// The client's `User-Agent` as a session label: at most the 256 bytes a label may have, cut at
/// a character boundary; empty when absent or not text.
fn user_agent(req: &HttpRequest) -> &str {
    let agent = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut end = agent.len().min(256);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    &agent[..end]
}

#[get("/whoami")]
async fn whoami(session: AsyncSession) -> Answer {
    let user: Option<String> = session.get("user").await?;
    Ok(HttpResponse::Ok().json(json!({ "user": user })))
}

#[get("/counter")]
async fn counter(session: AsyncSession) -> Answer {
    let counter = session.incr("counter", 1).await?;
    Ok(HttpResponse::Ok().json(json!({ "counter": counter })))
}

#[derive(Deserialize)]
struct KvSet {
    key: String,
    value: String,
}

#[get("/kv/set")]
async fn kv_set(session: AsyncSession, query: web::Query<KvSet>) -> Answer {
    session.set(&query.key, &query.value).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct KvGet {
    key: String,
}

#[get("/kv/get")]
async fn kv_get(session: AsyncSession, query: web::Query<KvGet>) -> Answer {
    let value: Option<String> = session.get(&query.key).await?;
    Ok(HttpResponse::Ok().json(json!({ "key": query.key, "value": value })))
}

/// Unix seconds, for JSON.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The sessions of the caller's user, most recently used first; none when not logged in.
#[get("/sessions")]
async fn sessions(session: AsyncSession) -> Answer {
    let own = session.id();
    let list: Vec<_> = session
        .sessions()
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "current": own.as_deref() == Some(s.id.as_str()),
                "id": s.id,
                "created": unix_secs(s.created),
                "last_refresh": unix_secs(s.last_refresh),
                "expires": unix_secs(s.expires),
                "label": s.label,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "sessions": list })))
}

#[derive(Deserialize)]
struct Everywhere {
    all: Option<u8>,
}

/// Revokes the user's other sessions, or all of them with `?all=1` (this one's cookie is then
/// removed); answers how many.
#[get("/logout-everywhere")]
async fn logout_everywhere(session: AsyncSession, query: web::Query<Everywhere>) -> Answer {
    let revoked = session.logout_everywhere(query.all == Some(1)).await?;
    Ok(HttpResponse::Ok().json(json!({ "revoked": revoked })))
}

#[derive(Deserialize)]
struct Remember {
    days: Option<u64>,
}

/// Remember-me: the session idles out after `days` (default 30) instead of the configured
/// time to idle, and its cookie becomes persistent. Outside `session.min_tti_secs` to
/// `session.max_tti_secs`: a 400.
#[get("/remember-me")]
async fn remember_me(session: AsyncSession, query: web::Query<Remember>) -> Answer {
    let days = query.days.unwrap_or(30);
    session
        .set_tti(Duration::from_secs(days.saturating_mul(24 * 3600)))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "days": days })))
}

#[get("/logout")]
async fn logout(session: AsyncSession) -> Answer {
    session.invalidate().await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

/// The engine's metrics, for a Prometheus scrape. No session: no Redis command, no cookie.
#[get("/metrics")]
async fn metrics(scrape: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(scrape.render())
}

/// Bucket bounds of the two histograms, so that Prometheus can add them up across instances
/// (without buckets the exporter renders summaries, whose quantiles cannot be added): batch
/// sizes up to the default `max_batch` of 1024, flush times from 100 µs to 2 s (the default
/// deadline).
const BATCH_SIZE_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const FLUSH_SECONDS_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0,
];

/// Installs the Prometheus recorder, before any engine is built (an engine registers its
/// metrics with the recorder installed when it is built), and drains its histograms every
/// five seconds, so that samples do not pile up between scrapes.
fn install_metrics() -> std::io::Result<PrometheusHandle> {
    let scrape = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("circumflex_session_batch_size".to_owned()),
            &BATCH_SIZE_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("circumflex_session_flush_duration_seconds".to_owned()),
                &FLUSH_SECONDS_BUCKETS,
            )
        })
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(std::io::Error::other)?;
    let upkeep = scrape.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(scrape)
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The reason in words (a wrong password, a certificate that does not verify), not
            // `Debug` of an io::Error.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    // The engine logs a store outage once when it starts and once when it ends.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let scrape = install_metrics()?;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let config = Config::load(path).map_err(std::io::Error::other)?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| std::io::Error::other(format!("PORT={p:?} is not a port number")))?,
        Err(_) => 8080,
    };

    let mut private_redis = None;
    let redis = &config.redis;
    let named = redis.url.is_some() || !redis.cluster_nodes.is_empty() || redis.sentinel.is_some();
    let engine = if named {
        // `Debug` of the config hides any password, in the URLs or apart.
        println!("using Redis: {redis:?}");
        redis_engine(&config, redis.clone()).await?
    } else {
        match RedisServer::try_start() {
            Ok(server) => {
                let url = server.url();
                println!("started a private redis-server at {url} (stopped on exit)");
                private_redis = Some(server);
                redis_engine(
                    &config,
                    RedisConfig {
                        url: Some(url),
                        ..redis.clone()
                    },
                )
                .await?
            }
            Err(problem) => {
                eprintln!("==================================================================");
                eprintln!(" WARNING: no Redis named, and no private redis-server: {problem}");
                eprintln!(" Falling back to the IN-MEMORY backend: sessions vanish on exit.");
                eprintln!(" Install Redis (apt-get install redis-server) or set REDIS_URL.");
                eprintln!("==================================================================");
                SessionEngine::with_config(
                    MemoryBackend::with_prefix(redis.key_prefix.clone()),
                    config.actor.clone(),
                )
                .map_err(std::io::Error::other)?
            }
        }
    };

    let engine = engine.on_event(log_event);

    // A fresh key per run: cookies from an earlier run are simply not recognised. Load a fixed
    // 64-byte key from a secret store in a real deployment.
    let key = Key::generate();
    let middleware =
        SessionMiddleware::from_config(engine, key, &config).map_err(std::io::Error::other)?;
    let scrape = web::Data::new(scrape);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(scrape.clone())
            .wrap(middleware.clone())
            .service(index)
            .service(login)
            .service(whoami)
            .service(counter)
            .service(kv_set)
            .service(kv_get)
            .service(sessions)
            .service(logout_everywhere)
            .service(remember_me)
            .service(logout)
            .service(metrics)
    })
    .bind(("127.0.0.1", port))?;
    println!("listening on http://127.0.0.1:{port}");
    let result = server.run().await;
    drop(private_redis);
    result
}

/// The session event listener: runs on the engine's event thread, never in a request. The
/// session id is left out: it names someone's session, and logs travel further than cookies.
fn log_event(event: &SessionEvent) {
    let user = event.user_id.as_deref().unwrap_or("-");
    tracing::info!(kind = ?event.kind, %user, "session event");
}

/// Connects, and checks that Redis answers before the demo listens: a wrong password or a
/// certificate that does not verify stops the demo with the reason.
async fn redis_engine(config: &Config, redis: RedisConfig) -> std::io::Result<SessionEngine> {
    let backend = RedisBackend::connect(redis)
        .await
        .map_err(std::io::Error::other)?;
    backend
        .check()
        .await
        .map_err(|e| std::io::Error::other(format!("Redis is not usable: {e}")))?;
    SessionEngine::with_config(backend, config.actor.clone()).map_err(std::io::Error::other)
}
