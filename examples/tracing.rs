//! What the engine's tracing looks like: `cargo run --example tracing`.
//!
//! Starts a private `redis-server` on a free port (the memory backend if there is none),
//! installs `tracing_subscriber::fmt` at DEBUG for this crate (INFO for the rest) with a line
//! when each span closes, then sends two rounds of four concurrent requests through an actix-web
//! test service, each request in an INFO span of its own. A small extra layer prints each
//! `follows_from` link, which `fmt` does not show: exported to a tracing backend (OpenTelemetry
//! span links), they lead from a slow flush to the requests it served. It exits when done.
//!
//! Each round is one flush (`session_batch`, at DEBUG) of four commands. The first round
//! creates four sessions; Redis does not know the write script yet, so that flush takes three
//! round trips (the pipeline, the script load, the pipeline again); the second round, the
//! four sessions' next visits, takes one. At INFO the engine says nothing per request or per
//! flush. A run on a private Redis printed:
//!
//! ```text
//! tracing example on redis-server 127.0.0.1:32929
//! link: session_batch{backend="redis" commands=4} follows from request{round=1 n=0}
//! link: session_batch{backend="redis" commands=4} follows from request{round=1 n=1}
//! link: session_batch{backend="redis" commands=4} follows from request{round=1 n=2}
//! link: session_batch{backend="redis" commands=4} follows from request{round=1 n=3}
//! 2026-11-27T09:05:39.864836Z DEBUG session_batch{backend="redis" commands=4 round_trips=3 outcome="ok" failed=0}: circumflex_session::actor::worker: close time.busy=569µs time.idle=8.67ms
//! 2026-11-27T09:05:39.865149Z  INFO request{round=1 n=0}: tracing: close time.busy=468µs time.idle=9.66ms
//! 2026-11-27T09:05:39.865255Z  INFO request{round=1 n=1}: tracing: close time.busy=142µs time.idle=10.1ms
//! 2026-11-27T09:05:39.865360Z  INFO request{round=1 n=2}: tracing: close time.busy=127µs time.idle=10.2ms
//! 2026-11-27T09:05:39.865547Z  INFO request{round=1 n=3}: tracing: close time.busy=207µs time.idle=10.2ms
//! link: session_batch{backend="redis" commands=4} follows from request{round=2 n=0}
//! link: session_batch{backend="redis" commands=4} follows from request{round=2 n=1}
//! link: session_batch{backend="redis" commands=4} follows from request{round=2 n=2}
//! link: session_batch{backend="redis" commands=4} follows from request{round=2 n=3}
//! 2026-11-27T09:05:39.867298Z DEBUG session_batch{backend="redis" commands=4 round_trips=1 outcome="ok" failed=0}: circumflex_session::actor::worker: close time.busy=186µs time.idle=525µs
//! 2026-11-27T09:05:39.867396Z  INFO request{round=2 n=0}: tracing: close time.busy=210µs time.idle=1.38ms
//! 2026-11-27T09:05:39.867446Z  INFO request{round=2 n=1}: tracing: close time.busy=159µs time.idle=1.43ms
//! 2026-11-27T09:05:39.867490Z  INFO request{round=2 n=2}: tracing: close time.busy=156µs time.idle=1.43ms
//! 2026-11-27T09:05:39.867532Z  INFO request{round=2 n=3}: tracing: close time.busy=150µs time.idle=1.44ms
//! visits after two rounds: [2, 2, 2, 2]
//! ```

use actix_web::cookie::Key;
use actix_web::{test, web, App};
use circumflex_session::{
    AsyncSession, MemoryBackend, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware,
};
use futures::future::join_all;
use tracing::{Instrument as _, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{DefaultFields, FmtSpan};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

// The tests' private-Redis starter: a free loopback port (never 6379), killed by PID on drop.
#[path = "../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

/// Prints each `follows_from` link with both spans' names and fields.
struct PrintLinks;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PrintLinks {
    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let show = |id| {
            ctx.span(id).map_or_else(String::new, |span| {
                let fields = span
                    .extensions()
                    .get::<FormattedFields<DefaultFields>>()
                    .map(|f| f.to_string())
                    .unwrap_or_default();
                format!("{}{{{fields}}}", span.name())
            })
        };
        println!("link: {} follows from {}", show(span), show(follows));
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_span_events(FmtSpan::CLOSE))
        .with(PrintLinks)
        .with(
            Targets::new()
                .with_target("circumflex_session", Level::DEBUG)
                .with_default(Level::INFO),
        )
        .init();

    let (engine, _redis) = match RedisServer::try_start() {
        Ok(server) => {
            println!(
                "tracing example on redis-server {}",
                server.url().trim_start_matches("redis://")
            );
            let backend = RedisBackend::connect(RedisConfig::new(server.url()))
                .await
                .map_err(std::io::Error::other)?;
            (SessionEngine::new(backend), Some(server))
        }
        Err(problem) => {
            println!("no redis-server ({problem}): the memory backend, without round trips");
            (SessionEngine::new(MemoryBackend::new()), None)
        }
    };
    let middleware = SessionMiddleware::builder(engine, Key::generate())
        .cookie_secure(false)
        .build()
        .map_err(std::io::Error::other)?;
    let app = test::init_service(App::new().wrap(middleware).route(
        "/visit",
        web::get().to(|session: AsyncSession| async move {
            session.incr("visits", 1).await.map(|n| n.to_string())
        }),
    ))
    .await;

    let mut cookies: Vec<Option<actix_web::cookie::Cookie<'static>>> = vec![None; 4];
    let mut visits = Vec::new();
    for round in 1..=2 {
        let requests = cookies.iter().enumerate().map(|(n, cookie)| {
            let mut request = test::TestRequest::get().uri("/visit");
            if let Some(cookie) = cookie {
                request = request.cookie(cookie.clone());
            }
            test::call_service(&app, request.to_request())
                .instrument(tracing::info_span!("request", round, n))
        });
        let responses = join_all(requests).await;
        visits.clear();
        for (response, cookie) in responses.into_iter().zip(&mut cookies) {
            if let Some(set) = response.response().cookies().next() {
                *cookie = Some(set.into_owned());
            }
            visits.push(String::from_utf8_lossy(&test::read_body(response).await).into_owned());
        }
    }
    println!("visits after two rounds: [{}]", visits.join(", "));
    Ok(())
}
