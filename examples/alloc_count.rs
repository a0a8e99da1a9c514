//! Heap allocations per request through the session layer: a deterministic figure for
//! BENCHMARKS.md, where timings on this machine vary by ±20 %.
//!
//! Runs requests in-process (`actix_web::test`, no sockets) against two apps with the same
//! handlers: one behind `SessionMiddleware` with the memory backend, one with no session layer
//! at all (its handlers get their data from a constant). A global allocator counts every
//! `alloc` and `realloc` of the process; the difference between the apps is what the layer
//! costs in allocations, the actor round trip and the value decoding included.
//!
//! ```sh
//! cargo run --release --example alloc_count
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::cookie::{Cookie, Key};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};
use circumflex_session::{
    AsyncSession, MemoryBackend, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware,
};
use clap::Parser;

/// Heap allocations per request through the session layer.
#[derive(Parser)]
struct Args {
    /// Measure the layer over this Redis instead of the memory backend (the data of the
    /// sessions it makes is left there, to expire)
    #[arg(long)]
    redis_url: Option<String>,
    /// Measure only this path, for a profiler such as callgrind
    #[arg(long, value_parser = PATHS)]
    only: Option<String>,
}

/// The system allocator, counting.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: u64 = 2000;

/// The paths measured, in order.
const PATHS: [&str; 3] = ["/noop", "/read", "/incr"];

fn counter_body(n: u64) -> String {
    format!(r#"{{"counter":{n}}}"#)
}

async fn noop() -> HttpResponse {
    HttpResponse::Ok().body("{}")
}

mod session {
    use super::*;

    pub async fn login(session: AsyncSession) -> actix_web::Result<HttpResponse> {
        session.set("a", "alpha").await?;
        session.set("b", "beta").await?;
        session.set("counter", &0u64).await?;
        Ok(HttpResponse::Ok().finish())
    }

    pub async fn read(session: AsyncSession) -> actix_web::Result<HttpResponse> {
        let values = session.mget::<String>(&["a", "b"]).await?;
        Ok(HttpResponse::Ok().json(values))
    }

    pub async fn incr(session: AsyncSession) -> actix_web::Result<HttpResponse> {
        let n = session.get::<u64>("counter").await?.unwrap_or(0) + 1;
        session.set("counter", &n).await?;
        Ok(HttpResponse::Ok().body(counter_body(n)))
    }
}

mod plain {
    use super::*;

    pub async fn read() -> HttpResponse {
        HttpResponse::Ok().json([Some("alpha"), Some("beta")])
    }

    pub async fn incr() -> HttpResponse {
        HttpResponse::Ok().body(counter_body(1))
    }
}

/// Allocations per request for `path`, after a warm-up.
async fn per_request<S, B>(app: &S, path: &str, cookie: &Cookie<'static>) -> f64
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let request = || {
        test::TestRequest::get()
            .uri(path)
            .cookie(cookie.clone())
            .to_request()
    };
    for _ in 0..200 {
        let response = test::call_service(app, request()).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..REQUESTS {
        let response = test::call_service(app, request()).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / REQUESTS as f64
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let (engine, store) = match &args.redis_url {
        Some(url) => {
            let backend = match RedisBackend::connect(RedisConfig::new(url.clone())).await {
                Ok(backend) => backend,
                Err(e) => {
                    eprintln!("alloc_count: --redis-url: {e}");
                    std::process::exit(2);
                }
            };
            (SessionEngine::new(backend), "Redis backend")
        }
        None => (SessionEngine::new(MemoryBackend::new()), "memory backend"),
    };
    let with_layer = test::init_service(
        App::new()
            .wrap(
                SessionMiddleware::builder(engine, Key::generate())
                    .cookie_secure(false)
                    .build()
                    .expect("valid session settings"),
            )
            .route("/login", web::get().to(session::login))
            .route("/read", web::get().to(session::read))
            .route("/incr", web::get().to(session::incr))
            .route("/noop", web::get().to(noop)),
    )
    .await;
    let without = test::init_service(
        App::new()
            .route("/read", web::get().to(plain::read))
            .route("/incr", web::get().to(plain::incr))
            .route("/noop", web::get().to(noop)),
    )
    .await;

    let login = test::call_service(
        &with_layer,
        test::TestRequest::get().uri("/login").to_request(),
    )
    .await;
    if !login.status().is_success() {
        // The Redis backend connects on first use: a wrong `--redis-url` shows here.
        eprintln!(
            "alloc_count: the login answered {}; is the store reachable?",
            login.status()
        );
        std::process::exit(2);
    }
    let cookie = login
        .response()
        .cookies()
        .next()
        .expect("login sets the session cookie")
        .into_owned();

    println!("| path | no session layer | with the layer ({store}) | added by the layer |");
    println!("|---|---:|---:|---:|");
    let only = args.only.as_deref();
    for path in PATHS
        .into_iter()
        .filter(|p| only.is_none_or(|only| only == *p))
    {
        let base = per_request(&without, path, &cookie).await;
        let layer = per_request(&with_layer, path, &cookie).await;
        println!("| {path} | {base:.1} | {layer:.1} | {:.1} |", layer - base);
    }
}
