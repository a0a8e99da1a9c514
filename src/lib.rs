//! # circumflex-session
//!
//! Asynchronous, on-demand sessions for actix-web, stored in Redis: one hash per session,
//! per-key reads and writes, and a batching actor on each worker that sends the commands of all
//! concurrent requests as pipelines.
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
//! The request path, one file each in `src/`: `middleware.rs` (when a cookie goes out) and
//! `cookie.rs` (what it looks like) → `session.rs` ([`AsyncSession`], the handle) → `actor/`
//! (queue, batch, flush) → `backend/` (Redis pipeline, a pipeline per cluster primary, or
//! memory).
//!
//! # Backends
//! [`RedisBackend`] for production (standalone Redis, from a URL or a `redis::Client` you
//! built, a Redis Cluster from [`RedisConfig::cluster`], or the master that Redis Sentinel
//! names, from [`RedisConfig::sentinel`]) and [`MemoryBackend`], with the same semantics
//! including TTLs, for your own tests and for running without Redis. Both go through the same
//! batching actor, so a test on the memory backend exercises the same code path as
//! production. The [`Backend`] trait is sealed; its docs say why.
//!
//! # Sessions by user
//! [`AsyncSession::bind_user`] logs a session in as a user (a new id, listed in the user's
//! index); [`AsyncSession::sessions`] and [`SessionEngine::sessions_of`] list a user's live
//! sessions, [`AsyncSession::logout_everywhere`], [`SessionEngine::revoke`] and
//! [`SessionEngine::revoke_all`] end them, and `max_sessions_per_user` caps them. The index
//! is kept by the same scripts that change the sessions, and never outlives them (see the
//! README's "Sessions by user"). [`AsyncSession::set_tti`] gives a session its own time to
//! idle (remember-me); [`AsyncSession::update`] and [`AsyncSession::compare_and_set`] change
//! one key atomically; [`SessionEngine::on_event`] reports each session's life to a hook.
//!
//! # Configuration
//! Builders ([`SessionMiddleware::builder`], [`RedisConfig`], [`SessionEngine::with_config`]) or
//! a TOML file ([`Config::load`], see `config/default.toml`); every default is documented on
//! its setter and is the secure choice, and builders reject exactly what the file loader
//! rejects.
//!
//! # Feature flags
//! The crate always builds the Redis and memory backends, on Tokio (as actix-web does). TLS
//! (`rediss://` URLs, [`TlsConfig`]) needs one of:
//! - `tls-rustls`: rustls with the ring crypto provider. The first `rediss://` backend makes
//!   ring rustls's process-wide provider, unless the application installed one before.
//! - `tls-native-tls`: the platform's TLS library (OpenSSL on Linux: needs `libssl-dev` and
//!   `pkg-config` to build). Client keys must be PKCS#8.
//!
//! Without either, a `rediss://` URL or a TLS file is an [`Error::Config`] at connect.
//!
//! - `metrics` (default): batch sizes, flush times, queue depth, commands by operation, errors
//!   by kind, round trips and session events through the [`metrics`](https://docs.rs/metrics)
//!   facade, to whichever recorder the application installs before it builds the engine (the
//!   README's "Metrics and tracing" lists them). Without a recorder each costs nothing but a
//!   check; `default-features = false` leaves the `metrics` crate out.
//!
//! # Errors
//! Every fallible call returns [`Error`]. At the HTTP edge it becomes an opaque `503` (store
//! overloaded, down, slow, refusing our credentials, or out of memory for writes) or `500` (a
//! bug or misuse in the app), with the cause logged through `tracing`: a store outage once when
//! it starts and once when it ends. A `503` after a command was sent may still have been
//! applied; a command still queued at its deadline was never sent. The README's "Guarantees"
//! section says what each fault does.
//!
//! # Limits
//! A session holds at most `session.max_keys` keys (256) and `session.max_session_bytes` bytes
//! of keys and values (256 KiB), checked atomically with each write ([`Error::SessionFull`]),
//! so that no Redis call about one session is unbounded. Sessions that never logged in (were
//! never [renewed](AsyncSession::renew)) idle out after `session.anonymous_tti_secs` (10 min)
//! instead of `session.tti_secs` (30 min).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod actor;
mod backend;
mod clock;
mod config;
mod cookie;
mod engine;
mod error;
mod events;
#[cfg(test)]
mod fuzz;
mod metrics;
mod middleware;
mod session;
mod stats;
#[doc(hidden)]
pub mod testing;
mod ticket;
mod users;

pub use backend::{memory::MemoryBackend, redis::RedisBackend, Backend};
pub use config::{
    ActorConfig, Config, CookieConfig, CookieLifecycle, CookieSecurity, RedisConfig, SameSite,
    SentinelConfig, SessionConfig, TlsConfig, TtlRefresh,
};
pub use engine::SessionEngine;
pub use error::{Error, StoreError};
pub use events::{SessionEvent, SessionEventKind};
pub use middleware::{SessionMiddleware, SessionMiddlewareBuilder};
pub use session::{AsyncSession, MAX_KEY_BYTES};
pub use stats::StatsSnapshot;
pub use users::SessionInfo;
