//! # circumflex-session
//!
//! The guide below is the crate's documentation on docs.rs: quick start, migration from
//! actix-session, guarantees, the cost of each call, the configuration reference and
//! deployment. Its code runs as doctests on the memory backend; the examples that need a
//! Redis server are `no_run`.
//!
//! The request path, one file each in `src/`: `middleware.rs` (when a cookie goes out) and
//! `cookie.rs` (what it looks like) → `session.rs` ([`AsyncSession`], the handle) → `actor/`
//! (queue, batch, flush) → `backend/` (Redis pipeline, a pipeline per cluster primary, or
//! memory).
//!
#![doc = include_str!("../docs/guide.md")]
#![doc = concat!("```toml\n", include_str!("../config/default.toml"), "```")]
//!
#![doc = include_str!("../docs/deploy.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod actor;
#[cfg(feature = "actix-session")]
mod adapter;
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

#[cfg(feature = "actix-session")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-session")))]
pub use adapter::ActixSessionStore;
pub use backend::{memory::MemoryBackend, redis::RedisBackend, Backend};
pub use config::{
    ActorConfig, Config, CookieConfig, CookieLifecycle, CookieSecurity, RedisConfig, SameSite,
    SentinelConfig, SessionConfig, TlsConfig, TtlRefresh,
};
pub use engine::SessionEngine;
pub use error::{Error, StoreError};
pub use events::{SessionEvent, SessionEventKind};
pub use middleware::{builder::SessionMiddlewareBuilder, SessionMiddleware};
pub use session::{AsyncSession, MAX_KEY_BYTES};
pub use stats::StatsSnapshot;
pub use users::SessionInfo;
