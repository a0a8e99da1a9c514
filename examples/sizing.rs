//! Sizing: how many bytes of Redis memory one session costs, and how many sessions fit in a GiB.
//!
//! ```sh
//! cargo run --release --example sizing                          # 50,000 sessions per shape
//! cargo run --release --example sizing -- --sessions 10000 --large-sessions 100
//! ```
//!
//! It starts a private `redis-server` on a free loopback port (no persistence) and builds the
//! real stack, `RedisBackend` → `SessionEngine` → `SessionMiddleware` around a tiny actix-web
//! app, driven in-process with `actix_web::test` (no HTTP sockets). For each session shape it
//! sends N requests without a cookie, each of which creates one session, and reads `INFO memory`
//! `used_memory` before and after. The delta divided by N is what a session really costs:
//! the hash with its metadata fields, the key, the expiry entry, the allocator's rounding and
//! the keyspace's hash tables, which `MEMORY USAGE` of a single key (shown for comparison)
//! leaves out. Redis is flushed between shapes.
//!
//! It also prints the TTL Redis holds for one session of each shape, which shows the shorter
//! idle timeout of sessions that never logged in (`anonymous_tti_secs`) next to the one of
//! logged-in sessions (`tti_secs`).
//!
//! Why this file is long: it is one measurement from end to end, and each part is short: the
//! four session shapes and the handlers that create them, settling and sampling Redis's
//! memory, and the two tables of the report.

use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use actix_web::cookie::Key;
use actix_web::http::header::SET_COOKIE;
use actix_web::http::StatusCode;
use actix_web::test::{init_service, read_body, try_call_service, TestRequest};
use actix_web::{web, App, HttpResponse};
use circumflex_session::{
    AsyncSession, RedisBackend, RedisConfig, SessionConfig, SessionEngine, SessionMiddleware,
};
use futures::{StreamExt, TryStreamExt};
use redis::aio::MultiplexedConnection;
use serde::Serialize;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// Requests in flight at once: enough for the actor to batch them into pipelines, so that
/// 50,000 sessions take seconds, not minutes. Memory per session does not depend on it.
const IN_FLIGHT: usize = 64;

/// The rate behind the steady-state line: new anonymous sessions per second.
const NEW_SESSIONS_PER_SEC: f64 = 10_000.0;

const GIB: f64 = (1u64 << 30) as f64;

/// How many bytes of Redis memory one session costs, per session shape.
#[derive(clap::Parser)]
#[command(name = "sizing")]
struct Args {
    /// Sessions created per small shape
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    sessions: u64,
    /// Sessions created at the size limit, about 240 KiB each
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    large_sessions: u64,
}

// ---------------------------------------------------------------------------------------------
// The private Redis
// ---------------------------------------------------------------------------------------------

// The tests' starter, a `redis-server` child process on a free loopback port (never 6379),
// killed by its own PID when dropped, so that an error or a panic in the middle of a
// measurement does not leave it running.
#[path = "../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

/// A connection of our own for INFO and inspection, apart from the session pool.
async fn connect(redis: &RedisServer) -> redis::RedisResult<MultiplexedConnection> {
    redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await
}

// ---------------------------------------------------------------------------------------------
// The session shapes and the app that creates them
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Shape {
    Anonymous,
    LoggedIn,
    AtSizeLimit,
    TwentyKeys,
}

impl Shape {
    const ALL: [Shape; 4] = [
        Shape::Anonymous,
        Shape::LoggedIn,
        Shape::AtSizeLimit,
        Shape::TwentyKeys,
    ];

    fn name(self) -> &'static str {
        match self {
            Shape::Anonymous => "anonymous, 1 key (`cart_id`)",
            Shape::LoggedIn => "logged in: renew + `user` + 3 keys",
            Shape::AtSizeLimit => "at the size limit: 4 × 60 KiB",
            Shape::TwentyKeys => "20 small keys",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Shape::Anonymous => "/anonymous",
            Shape::LoggedIn => "/logged-in",
            Shape::AtSizeLimit => "/at-size-limit",
            Shape::TwentyKeys => "/twenty-keys",
        }
    }

    fn sessions(self, args: &Args) -> u64 {
        match self {
            Shape::AtSizeLimit => args.large_sessions,
            _ => args.sessions,
        }
    }
}

/// What a login typically stores about the user.
#[derive(Serialize)]
struct User {
    id: u64,
    name: &'static str,
}

/// A random id in the 36-character UUID layout, as a shop would use for a cart.
fn uuid_like() -> String {
    let n: u128 = rand::random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A 60 KiB value: four of them (plus their keys) stay under the default 256 KiB per session,
/// and each stays under the default 64 KiB per value once serialised as a JSON string.
static LARGE_VALUE: LazyLock<String> = LazyLock::new(|| "x".repeat(60 * 1024));

async fn anonymous(session: AsyncSession) -> actix_web::Result<HttpResponse> {
    session.set("cart_id", &uuid_like()).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn logged_in(session: AsyncSession) -> actix_web::Result<HttpResponse> {
    // Without a session, renew marks the session the next write creates as logged in, so it
    // gets `tti_secs` instead of `anonymous_tti_secs`; that is what a login request does.
    session.renew().await?;
    let user = User {
        id: 4_294_967_296 + u64::from(rand::random::<u32>()),
        name: "Ann Example",
    };
    session.set("user", &user).await?;
    let csrf = format!(
        "{:032x}{:011x}",
        rand::random::<u128>(),
        rand::random::<u64>()
    );
    session
        .set_many([
            ("csrf_token", csrf),
            ("locale", "en-GB".to_owned()),
            ("cart_id", uuid_like()),
        ])
        .await?;
    Ok(HttpResponse::Ok().finish())
}

async fn at_size_limit(session: AsyncSession) -> actix_web::Result<HttpResponse> {
    let value: &str = &LARGE_VALUE;
    session
        .set_many([
            ("blob_0", value),
            ("blob_1", value),
            ("blob_2", value),
            ("blob_3", value),
        ])
        .await?;
    Ok(HttpResponse::Ok().finish())
}

async fn twenty_keys(session: AsyncSession) -> actix_web::Result<HttpResponse> {
    let entries: Vec<(String, String)> = (0..20)
        .map(|i| (format!("pref_{i:02}"), format!("value-{i:02}-abcdef")))
        .collect();
    session.set_many(entries).await?;
    Ok(HttpResponse::Ok().finish())
}

/// Sends `count` cookie-less requests to `shape`'s route, `IN_FLIGHT` at a time, and checks
/// that each one answered 200 with exactly one `Set-Cookie`: one new session each.
async fn create_sessions<S, B>(app: &S, shape: Shape, count: u64) -> Fallible<()>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    futures::stream::iter(0..count)
        .map(|_| async move {
            let request = TestRequest::get().uri(shape.path()).to_request();
            let response = try_call_service(app, request)
                .await
                .map_err(|e| format!("{}: the app failed: {e}", shape.path()))?;
            let status = response.status();
            let cookies = response.headers().get_all(SET_COOKIE).count();
            if status != StatusCode::OK || cookies != 1 {
                let body = read_body(response).await;
                return Err(format!(
                    "{}: expected 200 with one Set-Cookie, got {status} with {cookies} ({})",
                    shape.path(),
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

async fn info(conn: &mut MultiplexedConnection, section: &str) -> Fallible<redis::InfoDict> {
    Ok(redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(|e| format!("INFO {section}: {e}"))?)
}

/// One field of an `INFO` section.
fn field<T: redis::FromRedisValue>(info: &redis::InfoDict, name: &str) -> Fallible<T> {
    info.get(name)
        .ok_or_else(|| format!("no {name} in INFO").into())
}

/// `used_memory` once Redis has settled: nothing left for the lazy-free thread, and a moment
/// for the server cron (10 times a second) to shrink idle clients' buffers, which would
/// otherwise be counted as session memory.
async fn settled_used_memory(conn: &mut MultiplexedConnection) -> Fallible<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let memory = info(conn, "memory").await?;
        if field::<u64>(&memory, "lazyfree_pending_objects")? == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err("lazy-free still pending after 30 s".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    field(&info(conn, "memory").await?, "used_memory")
}

async fn flush(conn: &mut MultiplexedConnection) -> Fallible<()> {
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async(conn)
        .await
        .map_err(|e| format!("FLUSHALL: {e}"))?;
    Ok(())
}

/// One session picked by Redis, as stored.
struct Sample {
    pttl_ms: i64,
    fields: u64,
    encoding: String,
    memory_usage: u64,
}

async fn sample(conn: &mut MultiplexedConnection) -> Fallible<Sample> {
    let key: Option<String> = redis::cmd("RANDOMKEY")
        .query_async(conn)
        .await
        .map_err(|e| format!("RANDOMKEY: {e}"))?;
    let key = key.ok_or("no session in Redis to sample")?;
    let pttl_ms: i64 = redis::cmd("PTTL").arg(&key).query_async(conn).await?;
    let fields: u64 = redis::cmd("HLEN").arg(&key).query_async(conn).await?;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query_async(conn)
        .await?;
    // SAMPLES 0: every field counted, not an estimate from the first five.
    let memory_usage: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await?;
    Ok(Sample {
        pttl_ms,
        fields,
        encoding,
        memory_usage,
    })
}

struct Measurement {
    shape: Shape,
    sessions: u64,
    delta: i64,
    sample: Sample,
}

impl Measurement {
    fn bytes_per_session(&self) -> f64 {
        self.delta as f64 / self.sessions as f64
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn run(args: Args) -> Fallible<()> {
    let redis = RedisServer::try_start()?;
    let mut conn = connect(&redis).await?;
    let server = info(&mut conn, "server").await?;
    let memory = info(&mut conn, "memory").await?;
    let version: String = field(&server, "redis_version")?;
    let allocator: String = field(&memory, "mem_allocator")?;

    let backend = RedisBackend::connect(RedisConfig::new(redis.url()))
        .await
        .map_err(|e| format!("connect the session backend: {e}"))?;
    let engine = SessionEngine::new(backend);
    // The defaults, as a deployment that changes nothing gets them.
    let middleware = SessionMiddleware::new(engine, Key::generate());
    let defaults = SessionConfig::default();
    let app = init_service(
        App::new()
            .wrap(middleware)
            .route(Shape::Anonymous.path(), web::get().to(anonymous))
            .route(Shape::LoggedIn.path(), web::get().to(logged_in))
            .route(Shape::AtSizeLimit.path(), web::get().to(at_size_limit))
            .route(Shape::TwentyKeys.path(), web::get().to(twenty_keys)),
    )
    .await;

    // Warm-up: load the Lua scripts into Redis's script cache and grow the pool's connections
    // and their buffers to their working size, so that none of that is counted as sessions.
    for shape in Shape::ALL {
        create_sessions(&app, shape, shape.sessions(&args).min(1000)).await?;
    }

    let mut results = Vec::new();
    for shape in Shape::ALL {
        let sessions = shape.sessions(&args);
        flush(&mut conn).await?;
        let before = settled_used_memory(&mut conn).await?;
        let started = Instant::now();
        create_sessions(&app, shape, sessions).await?;
        let took = started.elapsed();
        let after = settled_used_memory(&mut conn).await?;
        let stored: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
        if stored != sessions {
            return Err(format!(
                "{}: {sessions} requests left {stored} sessions in Redis",
                shape.name()
            )
            .into());
        }
        let sample = sample(&mut conn).await?;
        eprintln!(
            "{}: {sessions} sessions in {:.1} s",
            shape.name(),
            took.as_secs_f64()
        );
        results.push(Measurement {
            shape,
            sessions,
            delta: after as i64 - before as i64,
            sample,
        });
    }
    flush(&mut conn).await?;

    println!("Redis {version}, mem_allocator {allocator}; `used_memory` delta over N new sessions");
    println!();
    println!("| shape | N | used_memory delta | bytes/session | sessions per GiB |");
    println!("|---|---:|---:|---:|---:|");
    for m in &results {
        let per_session = m.bytes_per_session();
        println!(
            "| {} | {} | {} | {} | {} |",
            m.shape.name(),
            thousands(m.sessions),
            thousands(m.delta.max(0) as u64),
            thousands(per_session.round() as u64),
            thousands((GIB / per_session).round() as u64),
        );
    }
    println!();
    println!("One session of each shape, as Redis holds it:");
    println!();
    println!("| shape | PTTL | fields (2 metadata) | encoding | MEMORY USAGE |");
    println!("|---|---:|---:|---|---:|");
    for m in &results {
        println!(
            "| {} | {} ms | {} | {} | {} |",
            m.shape.name(),
            thousands(m.sample.pttl_ms.max(0) as u64),
            m.sample.fields,
            m.sample.encoding,
            thousands(m.sample.memory_usage),
        );
    }
    println!();
    println!(
        "Idle timeouts (defaults): anonymous_tti_secs = {}, tti_secs = {}",
        defaults.anonymous_tti().as_secs(),
        defaults.tti().as_secs()
    );
    let anonymous = &results[0];
    let per_session = anonymous.bytes_per_session();
    let held = |tti: Duration| NEW_SESSIONS_PER_SEC * tti.as_secs_f64() * per_session / GIB;
    println!(
        "Steady state at {} new anonymous sessions/s, each used once: {:.2} GiB with the \
         {} s anonymous idle timeout, {:.2} GiB if they had the {} s one",
        thousands(NEW_SESSIONS_PER_SEC as u64),
        held(defaults.anonymous_tti()),
        defaults.anonymous_tti().as_secs(),
        held(defaults.tti()),
        defaults.tti().as_secs(),
    );
    drop(redis);
    Ok(())
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    match actix_web::rt::System::new().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sizing: {e}");
            ExitCode::FAILURE
        }
    }
}
