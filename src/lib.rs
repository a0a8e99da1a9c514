//! # circumflex-session
//!
//! Asynchronous, on-demand sessions for actix-web, stored in Redis: one hash per session,
//! per-key reads and writes, and a [`SessionActor`] that batches the commands of all concurrent
//! requests into pipelines.
//!
//! ```no_run
//! use actix_web::{cookie::Key, get, web::Json, App, HttpServer, Result};
//! use circumflex_session::{AsyncSession, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware};
//!
//! #[get("/counter")]
//! async fn counter(session: AsyncSession) -> Result<Json<i64>> {
//!     Ok(Json(session.incr("counter", 1).await?))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379"))
//!         .await
//!         .expect("valid redis config");
//!     let engine = SessionEngine::new(backend);
//!     let key = Key::generate();
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(SessionMiddleware::new(engine.clone(), key.clone()))
//!             .service(counter)
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! The request path, one file each: [`middleware`] (cookie in and out) → [`AsyncSession`]
//! (the handle) → [`actor`] (queue, batch, flush) → [`backend`] (Redis pipeline or memory).
//!
//! # Backends
//! [`RedisBackend`] for production (standalone Redis; a cluster backend is planned) and
//! [`MemoryBackend`], with the same semantics including TTLs, for your own tests and for running
//! without Redis. Both go through the same [`SessionActor`], so a test on the memory backend
//! exercises the same code path as production.
//!
//! # Configuration
//! Builders ([`SessionMiddleware::builder`], [`RedisConfig`], [`SessionEngine::with_config`]) or
//! a TOML file ([`Config::load`], see `config/default.toml`); every default is documented on
//! its setter and is the secure choice.
//!
//! # Feature flags
//! None: the crate always builds the Redis and memory backends, on Tokio (as actix-web does).
//!
//! # Errors
//! Every fallible call returns [`Error`]. At the HTTP edge it becomes an opaque `503` (store
//! overloaded, down or slow) or `500`, with the cause logged through `tracing`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod actor;
pub mod backend;
pub mod config;
mod cookie;
mod engine;
mod error;
#[cfg(test)]
mod fuzz;
pub mod middleware;
mod session;
mod stats;

pub use actor::SessionActor;
pub use backend::{memory::MemoryBackend, redis::RedisBackend, Backend};
pub use config::{
    ActorConfig, Config, CookieConfig, CookieLifecycle, CookieSecurity, Placement, RedisConfig,
    SameSite, SessionConfig, TtlRefresh,
};
pub use engine::SessionEngine;
pub use error::Error;
pub use middleware::{SessionMiddleware, SessionMiddlewareBuilder};
pub use session::{AsyncSession, MAX_KEY_BYTES};
pub use stats::{Stats, StatsSnapshot};
