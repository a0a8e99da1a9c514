//! `SessionEngine`: a backend and the counters of every worker's actor.

use std::sync::Arc;

use crate::actor::message::{Command, Reply};
use crate::actor::{Handle, SessionActor};
use crate::backend::Backend;
use crate::config::ActorConfig;
use crate::error::Error;
use crate::events::{Events, SessionEvent};
use crate::stats::{Stats, StatsSnapshot, Tally};
use crate::users::{SessionInfo, UserIndex};

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
    events: Events,
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
    /// use circumflex_session::{ActorConfig, Error, MemoryBackend, SessionEngine};
    ///
    /// let config = ActorConfig { deadline_ms: 500, ..ActorConfig::default() };
    /// let engine = SessionEngine::with_config(MemoryBackend::new(), config)?;
    /// # let _ = engine;
    /// let no_queue = ActorConfig { queue_depth: 0, ..ActorConfig::default() };
    /// let refused = SessionEngine::with_config(MemoryBackend::new(), no_queue);
    /// assert!(matches!(refused, Err(Error::Config(_))));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] if a setting is out of range (the same check as [`Config::load`](crate::Config::load)).
    pub fn with_config(backend: impl Backend, config: ActorConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::build(backend, config))
    }

    fn build(backend: impl Backend, config: ActorConfig) -> Self {
        // With the recorder installed now: see `metrics` for why once, and why here.
        let (metrics, session_metrics) = crate::metrics::register(backend.name());
        Self {
            inner: Arc::new(Inner {
                backend: Arc::new(backend),
                stats: Arc::new(Stats {
                    metrics,
                    ..Stats::default()
                }),
                config,
                events: Events::counted(session_metrics),
            }),
        }
    }

    /// Calls `listener` for every session event of this engine: created, renewed, bound,
    /// invalidated, revoked, and a cookie that pointed at a session that is gone. Events come
    /// from this process only (no keyspace notifications, which managed Redis services often
    /// forbid), in order, on a thread of their own: a slow listener delays only later events,
    /// and past 4096 waiting events new ones are dropped and counted; a listener that panics
    /// is logged and called again for the next event. No request waits for a listener.
    /// Replaces any listener set before; call it before cloning the engine into workers.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionEngine};
    /// use circumflex_session::{SessionEventKind, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // An audit log; here a channel the example reads.
    /// let (audit, log) = mpsc::channel();
    /// let engine = SessionEngine::new(MemoryBackend::new()).on_event(move |event| {
    ///     if event.kind == SessionEventKind::Bound {
    ///         let _ = audit.send(event.user_id.clone());
    ///     }
    /// });
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(engine, Key::generate()))
    ///     .route("/login", web::post().to(login));
    /// let app = test::init_service(app).await;
    /// test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    /// // The listener runs on its own thread, soon after the request:
    /// let logged_in = log.recv_timeout(Duration::from_secs(10));
    /// assert_eq!(logged_in, Ok(Some("ann".to_owned())));
    /// # });
    /// ```
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        let Inner {
            backend,
            stats,
            config,
            events,
        } = &*self.inner;
        Self {
            inner: Arc::new(Inner {
                backend: backend.clone(),
                stats: stats.clone(),
                config: config.clone(),
                events: events.clone().with_listener(Arc::new(listener)),
            }),
        }
    }

    /// The engine's lifecycle hooks, for the sessions of its workers.
    pub(crate) fn events(&self) -> Events {
        self.inner.events.clone()
    }

    /// Runs one command on the backend directly, within the deadline: for admin calls, which
    /// must work outside actix-web (a CLI, a job) and are too rare to batch.
    async fn run(&self, command: Command) -> Result<Reply, Error> {
        let Inner {
            backend,
            stats,
            config,
            ..
        } = &*self.inner;
        let batch = std::slice::from_ref(&command);
        let tally = Tally::default();
        let mut replies = Vec::with_capacity(1);
        let run = backend.execute(batch, &mut replies, &tally);
        let outcome = tokio::time::timeout(config.deadline(), run).await;
        stats.add(&tally);
        outcome.map_err(|_| Error::Timeout(config.deadline()))??;
        replies
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Error::Server("no reply".to_owned())))
    }

    /// The live sessions of a user (bound with
    /// [`AsyncSession::bind_user`](crate::AsyncSession::bind_user)), most recently used first,
    /// at most 1000. Works from any Tokio context: a handler, a CLI, an admin job.
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend};
    /// use circumflex_session::{SessionEngine, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user_labelled("ann", "Firefox on Linux").await
    /// }
    ///
    /// let engine = SessionEngine::new(MemoryBackend::new());
    /// actix_web::rt::System::new().block_on(async {
    ///     let app = App::new()
    ///         .wrap(SessionMiddleware::new(engine.clone(), Key::generate()))
    ///         .route("/login", web::post().to(login));
    ///     let app = test::init_service(app).await;
    ///     test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    /// });
    ///
    /// // An admin job on the same engine, outside actix-web:
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let sessions = runtime.block_on(engine.sessions_of("ann"))?;
    /// assert_eq!(sessions.len(), 1);
    /// assert_eq!(sessions[0].label.as_deref(), Some("Firefox on Linux"));
    /// assert!(sessions[0].expires > sessions[0].last_refresh);
    /// assert!(runtime.block_on(engine.sessions_of("bob"))?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Redis: one `EVALSHA` of the listing script on the user's index (`ZREVRANGEBYSCORE`, an
    /// `HMGET` per session, pruning what expired).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty user id or one over 256 bytes, and the store's
    /// errors.
    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let index = UserIndex::new(self.key_prefix(), user_id)?;
        index.infos(self.run(index.list()).await?)
    }

    /// Revokes one session of a user: it is deleted and its next request has no session.
    /// Answers whether it was there; an id that is not one of the user's sessions is left
    /// alone (`false`).
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend};
    /// use circumflex_session::{SessionEngine, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await
    /// }
    ///
    /// async fn whoami(session: AsyncSession) -> Result<String, Error> {
    ///     Ok(session.user_id().await?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let engine = SessionEngine::new(MemoryBackend::new());
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(engine.clone(), Key::generate()))
    ///     .route("/login", web::post().to(login))
    ///     .route("/whoami", web::get().to(whoami));
    /// let app = test::init_service(app).await;
    /// let request = test::TestRequest::post().uri("/login").to_request();
    /// let response = test::call_service(&app, request).await;
    /// let cookie = response.response().cookies().next().unwrap().into_owned();
    ///
    /// let id = engine.sessions_of("ann").await?[0].id.clone();
    /// assert!(engine.revoke("ann", &id).await?);
    /// assert!(!engine.revoke("ann", &id).await?); // already gone
    /// // The browser still holds the cookie, but it finds no session:
    /// let request = test::TestRequest::get().uri("/whoami").cookie(cookie);
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "");
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Redis: one `EVALSHA` of the revoke script (`HGET`, `UNLINK`, `ZREM`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user id or a string that is not a session id, and
    /// the store's errors.
    pub async fn revoke(&self, user_id: &str, session_id: &str) -> Result<bool, Error> {
        let index = UserIndex::new(self.key_prefix(), user_id)?;
        index
            .revoke(session_id, |c| self.run(c), &self.inner.events)
            .await
    }

    /// Revokes every session of a user, except `except` (a session id, for example the
    /// caller's own). Answers how many were revoked.
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend};
    /// use circumflex_session::{SessionEngine, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let engine = SessionEngine::new(MemoryBackend::new());
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(engine.clone(), Key::generate()))
    ///     .route("/login", web::post().to(login));
    /// let app = test::init_service(app).await;
    /// for _device in 0..3 {
    ///     test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    /// }
    /// let keep = engine.sessions_of("ann").await?[0].id.clone();
    ///
    /// assert_eq!(engine.revoke_all("ann", Some(&keep)).await?, 2);
    /// let left = engine.sessions_of("ann").await?;
    /// assert_eq!(left.len(), 1);
    /// assert_eq!(left[0].id, keep);
    /// assert_eq!(engine.revoke_all("ann", None).await?, 1);
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Redis: the revoke script, each call deleting at most 256 sessions (`UNLINK` and `ZREM`
    /// each), called again while some are left, so that Redis serves others in between.
    ///
    /// # Errors
    /// As [`revoke`](Self::revoke).
    pub async fn revoke_all(&self, user_id: &str, except: Option<&str>) -> Result<u64, Error> {
        let index = UserIndex::new(self.key_prefix(), user_id)?;
        index
            .revoke_all(except, |c| self.run(c), &self.inner.events)
            .await
    }

    /// A copy of the counters of every actor of this engine.
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend};
    /// use circumflex_session::{SessionEngine, SessionMiddleware};
    ///
    /// async fn visit(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("seen", &true).await
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let engine = SessionEngine::new(MemoryBackend::new());
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(engine.clone(), Key::generate()))
    ///     .route("/", web::post().to(visit));
    /// let app = test::init_service(app).await;
    /// test::call_service(&app, test::TestRequest::post().to_request()).await;
    ///
    /// let stats = engine.stats();
    /// assert_eq!(stats.commands, 1); // the write
    /// assert_eq!(stats.pipelines, 1);
    /// assert_eq!(stats.average_batch(), 1.0);
    /// assert_eq!(stats.errors_timeout + stats.errors_unavailable, 0);
    /// # });
    /// ```
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            events_dropped: self.inner.events.dropped(),
            events_panicked: self.inner.events.panicked(),
            ..self.inner.stats.snapshot()
        }
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
            ..
        } = &*self.inner;
        let actor = SessionActor::start(
            backend.clone(),
            stats.clone(),
            config.max_batch,
            config.deadline(),
        );
        Handle::new(actor, stats.clone(), config.queue_depth, config.deadline())
    }
}
