//! `SessionEngine`: a backend, its actors and their counters, shared by every worker.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::{Actor, Addr, Arbiter};
use tokio::sync::oneshot;

use crate::actor::message::{Command, Envelope, Reply};
use crate::actor::SessionActor;
use crate::backend::Backend;
use crate::config::{ActorConfig, Placement};
use crate::error::Error;
use crate::stats::{DepthGuard, Stats, StatsSnapshot};

/// A session store with its batching actors. Cheap to clone; clones share everything.
///
/// Create one in `main` and clone it into the `HttpServer` factory:
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
    /// The shared actor and the arbiter (thread) it runs on, for `Placement::Shared`.
    shared: OnceLock<(Arbiter, Addr<SessionActor>)>,
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
    pub fn new(backend: impl Backend) -> Self {
        Self::with_config(backend, ActorConfig::default())
            .expect("the default actor config is valid")
    }

    /// An engine with explicit actor settings.
    pub fn with_config(backend: impl Backend, config: ActorConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Arc::new(backend),
                stats: Arc::new(Stats::default()),
                config,
                shared: OnceLock::new(),
            }),
        })
    }

    /// The actor settings.
    pub fn config(&self) -> &ActorConfig {
        &self.inner.config
    }

    /// The key prefix of the backend.
    pub fn key_prefix(&self) -> &str {
        self.inner.backend.key_prefix()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The live counters, for exporters that poll.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// The actor that serves the calling worker: a new one on the current arbiter
    /// (`PerWorker`), or the one shared actor, started on its own arbiter on first use
    /// (`Shared`). Must be called on an actix system thread (inside `HttpServer`, an
    /// `actix_web::main`, `actix_web::test` or `actix::System`).
    pub fn actor(&self) -> Addr<SessionActor> {
        match self.inner.config.placement {
            Placement::PerWorker => self.new_actor().start(),
            Placement::Shared => {
                let (_, addr) = self.inner.shared.get_or_init(|| {
                    let arbiter = Arbiter::new();
                    let actor = self.new_actor();
                    let addr = SessionActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
                    (arbiter, addr)
                });
                addr.clone()
            }
        }
    }

    fn new_actor(&self) -> SessionActor {
        let c = &self.inner.config;
        SessionActor::new(
            self.inner.backend.clone(),
            self.inner.stats.clone(),
            c.max_batch,
            c.max_in_flight,
            c.deadline(),
        )
    }

    /// Sends one command through `actor` and waits for its reply, within the deadline.
    ///
    /// This is the low-level path under [`AsyncSession`](crate::AsyncSession); use it for
    /// tooling and tests that work on raw session hashes.
    ///
    /// Fails at once with [`Error::Overloaded`] when the engine's queue is full, with
    /// [`Error::Timeout`] past the deadline, and with [`Error::ActorClosed`] if the actor
    /// stopped.
    pub async fn call(&self, actor: &Addr<SessionActor>, command: Command) -> Result<Reply, Error> {
        let config = &self.inner.config;
        let depth = DepthGuard::acquire(&self.inner.stats, config.queue_depth)
            .map_err(Error::Overloaded)?;
        let (reply, answer) = oneshot::channel();
        actor.do_send(Envelope {
            command,
            reply,
            deadline: Instant::now() + config.deadline(),
            depth,
        });
        // No timer here: the actor answers every command by its deadline (see `actor`), and a
        // stopped actor drops the reply channel.
        let result = answer.await.unwrap_or(Err(Error::ActorClosed));
        if let Err(Error::Timeout(_)) = result {
            let stats = &self.inner.stats;
            stats
                .errors_timeout
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}
