//! `SessionEngine`: a backend and the counters of every worker's actor.

use std::sync::Arc;

use actix::Actor;

use crate::actor::{Handle, SessionActor};
use crate::backend::Backend;
use crate::config::ActorConfig;
use crate::error::Error;
use crate::stats::{Stats, StatsSnapshot};

/// A session store with its batching settings and counters. Cheap to clone; clones share
/// everything.
///
/// Create one in `main` and clone it into the `HttpServer` factory, so that every worker's
/// actor counts into the same [`stats`](Self::stats):
///
/// ```no_run
/// use actix_web::{cookie::Key, App, HttpServer};
/// use circumflex_session::{RedisBackend, RedisConfig, SessionEngine, SessionMiddleware};
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379"))
///         .await
///         .expect("valid redis config");
///     let engine = SessionEngine::new(backend);
///     let key = Key::generate();
///     HttpServer::new(move || {
///         App::new().wrap(SessionMiddleware::new(engine.clone(), key.clone()))
///     })
///     .bind(("127.0.0.1", 8080))?
///     .run()
///     .await
/// }
/// ```
#[derive(Clone)]
pub struct SessionEngine {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    config: ActorConfig,
}

impl std::fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEngine")
            .field("backend", &self.inner.backend.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<B: Backend> From<B> for SessionEngine {
    fn from(backend: B) -> Self {
        SessionEngine::new(backend)
    }
}

impl SessionEngine {
    /// An engine with the default [`ActorConfig`].
    ///
    /// ```
    /// use circumflex_session::{MemoryBackend, SessionEngine};
    /// let engine = SessionEngine::new(MemoryBackend::new());
    /// assert_eq!(engine.stats().commands, 0);
    /// ```
    pub fn new(backend: impl Backend) -> Self {
        Self::build(backend, ActorConfig::default())
    }

    /// An engine with explicit actor settings.
    ///
    /// ```
    /// use circumflex_session::{ActorConfig, MemoryBackend, SessionEngine};
    /// let config = ActorConfig { deadline_ms: 500, ..ActorConfig::default() };
    /// let engine = SessionEngine::with_config(MemoryBackend::new(), config).unwrap();
    /// # let _ = engine;
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] if a setting is out of range (the same check as [`Config::load`](crate::Config::load)).
    pub fn with_config(backend: impl Backend, config: ActorConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::build(backend, config))
    }

    fn build(backend: impl Backend, config: ActorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend: Arc::new(backend),
                stats: Arc::new(Stats::default()),
                config,
            }),
        }
    }

    /// A copy of the counters of every actor of this engine.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The prefix of the store's session keys: a session is the hash `<prefix>:{<tag>}:<id>`.
    pub(crate) fn key_prefix(&self) -> &str {
        self.inner.backend.key_prefix()
    }

    /// Starts an actor on the current arbiter (the calling actix-web worker) and returns the
    /// handle requests reach it through. Must be called on an actix system thread.
    pub(crate) fn start(&self) -> Handle {
        let Inner {
            backend,
            stats,
            config,
        } = &*self.inner;
        let actor = SessionActor::new(
            backend.clone(),
            stats.clone(),
            config.max_batch,
            config.deadline(),
        )
        .start();
        Handle::new(actor, stats.clone(), config.queue_depth, config.deadline())
    }
}
