//! `ActixSessionStore`: actix-session's `SessionStore` on a [`SessionEngine`], for apps that
//! keep actix-session's `SessionMiddleware` and its synchronous `Session`.
//!
//! Why this file is long: about 150 of its lines are documentation, most of it the type's
//! account of what the adapter keeps of our guarantees and what it cannot, which users must
//! read where they meet the type; the code is under 300 lines. The pure diffing is apart, in
//! `baseline`.
//!
//! Each call becomes commands for this worker's actor, as an [`AsyncSession`](crate::AsyncSession)'s
//! do; `baseline` says how a save learns what the request changed.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time;
use actix_web::http::StatusCode;
use actix_web::ResponseError;

use crate::actor::message::{Command, Op, Reply, WriteMode};
use crate::actor::Handle;
use crate::config::{Config, SessionConfig};
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::events::SessionEventKind;
use crate::session::values::check_key;
use crate::ticket::Ticket;

mod baseline;

use baseline::{Changes, Diff, Digests, State};

/// A `SessionStore` for [actix-session](https://docs.rs/actix-session)'s `SessionMiddleware`,
/// on any [`SessionEngine`]: keep your handlers and their `Session`, get our Redis layout, our
/// batching and our guarded writes.
///
/// ```
/// use actix_session::{Session, SessionMiddleware};
/// use actix_web::{cookie::Key, test, web, App, HttpResponse};
/// use circumflex_session::{ActixSessionStore, MemoryBackend};
///
/// async fn visit(session: Session) -> actix_web::Result<HttpResponse> {
///     let visits = session.get::<u32>("visits")?.unwrap_or(0) + 1;
///     session.insert("visits", visits)?;
///     Ok(HttpResponse::Ok().body(visits.to_string()))
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = ActixSessionStore::new(MemoryBackend::new());
/// let app = App::new()
///     .wrap(SessionMiddleware::new(store, Key::generate()))
///     .route("/", web::get().to(visit));
/// let app = test::init_service(app).await;
/// let first = test::call_service(&app, test::TestRequest::get().to_request()).await;
/// let cookie = first.response().cookies().next().expect("a session cookie").into_owned();
/// let again = test::TestRequest::get().cookie(cookie).to_request();
/// let second = test::call_service(&app, again).await;
/// assert_eq!(test::read_body(second).await, "2");
/// # });
/// ```
///
/// In a server, build the engine once and the store in the `HttpServer` factory (or clone one
/// into it): each clone starts its own batching actor on the worker that first uses it.
///
/// ```no_run
/// use actix_session::SessionMiddleware;
/// use actix_web::{cookie::Key, App, HttpServer};
/// use circumflex_session::{ActixSessionStore, RedisBackend, RedisConfig, SessionEngine};
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379"))
///         .await
///         .expect("valid redis config");
///     let store = ActixSessionStore::new(SessionEngine::new(backend));
///     let key = Key::generate(); // load a stable 64-byte key in production
///     HttpServer::new(move || {
///         App::new().wrap(SessionMiddleware::new(store.clone(), key.clone()))
///     })
///     .bind(("127.0.0.1", 8080))?
///     .run()
///     .await
/// }
/// ```
///
/// # What it keeps of our guarantees
/// - **Our layout**: a session is one Redis hash, `session:{<tag>}:<id>` with the `\0created`
///   metadata, exactly as [`AsyncSession`](crate::AsyncSession) writes it; the id comes from
///   the same CSPRNG. The session key in actix-session's cookie is `<id>.<created>`, the
///   payload our own cookie carries, so a later move to our
///   [`SessionMiddleware`](crate::SessionMiddleware) keeps the sessions (README,
///   "Migrating from actix-session").
/// - **No lost updates**: a save writes only the keys the request changed (`HSET` through our
///   write script) and deletes only the keys it removed (`HDEL`). Two requests with one cookie
///   that write different keys both keep their writes, and a key another request wrote after
///   this one loaded is not overwritten with what this one loaded. Two requests that write
///   the *same* key still race: the last one wins.
/// - **Guarded writes**: a save never resurrects a session that was deleted (logout) or
///   expired since it was loaded. The save goes to a new session under a new id instead,
///   holding only the keys the request changed, and the response carries its cookie; the
///   deleted session's other keys never come back. (actix-session's `RedisSessionStore` saves
///   the whole stale state again under a new id.)
/// - **Limits**: `session.max_keys` and `session.max_session_bytes` are checked atomically
///   with each write, and `session.max_value_bytes` per value, before any is sent: a save past
///   them fails whole and writes nothing (see [`from_config`](Self::from_config)).
/// - **Batching**: every call goes through the engine's actor on its worker, so the loads and
///   saves of concurrent requests share pipelines, under the engine's deadline and queue bound.
/// - **The TTL** is actix-session's `state_ttl`, given to every save, update and refresh.
///
/// # What it cannot keep
/// - **On demand**: actix-session's middleware loads the whole session (`HGETALL`) on every
///   request that carries a cookie, whether the handler looks at the session or not, and its
///   `Session` has no per-key reads, no `incr` and no compare-and-set. A counter written with
///   `get` then `insert` is a read-modify-write race, as it is with any actix-session store.
/// - **503s**: actix-session's middleware turns every store error into an opaque `500`, and a
///   store cannot change that; with our own middleware an outage is a `503`. The cause is
///   logged here (at `debug` for an outage, which the engine logs once when it starts and once
///   when it ends; at `error` for the rest).
/// - **Renew** is actix-session's delete then save: between the two, a concurrent request with
///   the old cookie finds no session (ours moves the hash with one atomic `RENAME`). The new
///   session is a plain one, not marked as logged in.
/// - **`clear()`** drops the baseline with everything else, so that save replaces the session
///   whole: it reads the session's keys, then deletes those the new state does not have and
///   writes the rest. A key another request writes between that read and the delete survives.
/// - **The reserved entry**: a loaded state carries one extra entry, [`BASELINE`](Self::BASELINE)
///   (its key starts with NUL, so it cannot collide with yours; its value is JSON), which
///   `Session::entries()` shows. Skip it when you list entries; do not write it.
/// - **Old sessions**: a cookie from actix-session's own stores (a 64-character key) names no
///   session here, so its visitor starts a new, empty session: users log in again once.
/// - **Users**: sessions made here are not bound to a user; `bind_user`, the user index and
///   `set_tti` need our middleware.
///
/// # Costs in Redis
/// A request with a cookie: one `HGETALL`. A save: one `EVALSHA` of the write script for the
/// changed keys and one for the removed keys (each only if any), or a `PEXPIRE` when nothing
/// changed; after `clear()`, one `HGETALL` before them. actix-session's TTL refresh on an
/// unchanged session (`TtlExtensionPolicy::OnEveryRequest`): one `PEXPIRE`. Logout (`purge`):
/// one `EVALSHA` of the invalidate script.
pub struct ActixSessionStore {
    engine: SessionEngine,
    session: Arc<SessionConfig>,
    /// This clone's actor, started on the worker that first uses it.
    handle: OnceLock<Handle>,
    digests: Digests,
}

impl std::fmt::Debug for ActixSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActixSessionStore")
            .field("engine", &self.engine)
            .field("max_keys", &self.session.max_keys)
            .field("max_session_bytes", &self.session.max_session_bytes)
            .field("max_value_bytes", &self.session.max_value_bytes)
            .finish_non_exhaustive()
    }
}

impl Clone for ActixSessionStore {
    /// A store on the same engine and limits, with an actor of its own (started on first use,
    /// on the worker that uses it).
    fn clone(&self) -> Self {
        Self::assemble(self.engine.clone(), self.session.clone())
    }
}

impl ActixSessionStore {
    /// The key of the entry a loaded state carries for the store's own use (see the type's
    /// docs): skip it when you list `Session::entries()`.
    pub const BASELINE: &'static str = baseline::BASELINE;

    /// A store on `engine` with the default limits: 256 keys and 256 KiB per session, 64 KiB
    /// per value.
    pub fn new(engine: impl Into<SessionEngine>) -> Self {
        Self::assemble(engine.into(), Arc::new(SessionConfig::default()))
    }

    /// A store on `engine` with the limits of the `[session]` section of `config`:
    /// `max_keys`, `max_session_bytes` and `max_value_bytes`. Its lifetimes do not apply here:
    /// the TTL is actix-session's `state_ttl`.
    ///
    /// ```
    /// use circumflex_session::{ActixSessionStore, Config, MemoryBackend};
    ///
    /// let mut config = Config::default();
    /// config.session.max_keys = 32;
    /// let store = ActixSessionStore::from_config(MemoryBackend::new(), &config).unwrap();
    /// # let _ = store;
    /// config.session.max_keys = 0;
    /// assert!(ActixSessionStore::from_config(MemoryBackend::new(), &config).is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting of `[session]` out of range: the checks
    /// [`Config::load`] makes.
    pub fn from_config(engine: impl Into<SessionEngine>, config: &Config) -> Result<Self, Error> {
        config.session.validate()?;
        Ok(Self::assemble(
            engine.into(),
            Arc::new(config.session.clone()),
        ))
    }

    fn assemble(engine: SessionEngine, session: Arc<SessionConfig>) -> Self {
        Self {
            engine,
            session,
            handle: OnceLock::new(),
            digests: Digests::new(),
        }
    }

    /// Sends one command through this clone's actor, starting it on first use. actix-session
    /// calls the store on the worker that serves the request, so that is where it starts.
    async fn call(&self, key: Arc<str>, op: Op, refresh: Option<Duration>) -> Result<Reply, Error> {
        let command = Command {
            key,
            op,
            refresh,
            limits: self.session.limits(),
            reindex: false,
        };
        let handle = self.handle.get_or_init(|| self.engine.start());
        handle.call(command).await
    }

    /// The session a key from actix-session names, and its store key. Only a key that parses
    /// as one of our payloads builds a Redis key (actix-session has already checked the
    /// cookie's signature or encryption).
    fn session_of(&self, session_key: &SessionKey) -> Option<(Ticket, Arc<str>)> {
        let ticket = Ticket::parse(session_key.as_ref())?;
        let key = ticket.store_key(self.engine.key_prefix());
        Some((ticket, key))
    }

    async fn load_state(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Some((_, key)) = self.session_of(session_key) else {
            // Not one of ours (a key from actix-session's own store, say): no session.
            return Ok(None);
        };
        let entries = match self.call(key, Op::Entries, None).await {
            Ok(Reply::Entries(entries)) => entries,
            Ok(other) => return Err(LoadError::Other(report(unexpected(other)))),
            Err(e) => return Err(LoadError::Other(report(e))),
        };
        // No user key: no session, as for actix-session, which saves no empty state either.
        if entries.is_empty() {
            return Ok(None);
        }
        let mut state = State::with_capacity(entries.len() + 1);
        for (field, value) in entries {
            let value = String::from_utf8(value).map_err(|e| {
                let message = format!("the session value for key {field:?} is not UTF-8");
                LoadError::Deserialization(anyhow::Error::new(e).context(message))
            })?;
            state.insert(field, value);
        }
        let baseline = self.digests.baseline(&state);
        state.insert(baseline::BASELINE.to_owned(), baseline);
        Ok(Some(state))
    }

    async fn save_state(&self, mut state: State, ttl: Duration) -> Result<SessionKey, Error> {
        baseline::strip(&mut state);
        let entries = self.checked(state)?;
        self.create(entries, ttl).await
    }

    /// A new session holding `entries`. With none, nothing is stored: the key names no session
    /// until a save writes one, as an empty state is no session to actix-session.
    async fn create(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> Result<SessionKey, Error> {
        let ticket = Ticket::generate(false);
        if !entries.is_empty() {
            let mode = WriteMode::Create {
                created: ticket.created,
                ttl,
            };
            let key = ticket.store_key(self.engine.key_prefix());
            match self
                .call(key, Op::Set(mode, entries.into()), Some(ttl))
                .await?
            {
                Reply::Done => {}
                other => return Err(unexpected(other)),
            }
            self.emit(SessionEventKind::Created, &ticket);
        }
        SessionKey::try_from(ticket.encode())
            .map_err(|e| Error::Server(format!("session key refused: {e}")))
    }

    async fn update_state(
        &self,
        session_key: SessionKey,
        state: State,
        ttl: Duration,
    ) -> Result<SessionKey, Error> {
        let Some((ticket, key)) = self.session_of(&session_key) else {
            // Not a key `load` found anything under: the state is a new session.
            return self.save_state(state, ttl).await;
        };
        let Changes { set, remove } = match self.digests.diff(state) {
            Diff::Changes(changes) => changes,
            Diff::Replace(state) => match self.call(key.clone(), Op::Entries, None).await? {
                Reply::Entries(current) => baseline::against_store(state, current),
                other => return Err(unexpected(other)),
            },
        };
        let set = self.checked(set)?;
        if set.is_empty() && remove.is_empty() {
            // Changed to what it was: only the TTL.
            self.call(key, Op::Touch, Some(ttl)).await?;
            return Ok(session_key);
        }
        // Sets first: a set that the limits refuse then leaves the session as it was. (A change
        // that fits only once its removals are done is refused; it is rare, and safe.)
        if !set.is_empty() {
            let op = Op::Set(WriteMode::Existing, set.clone().into());
            if self.call(key.clone(), op, Some(ttl)).await? == Reply::Gone {
                return self.replace_gone(&ticket, set, ttl).await;
            }
        }
        if !remove.is_empty() {
            let refresh = set.is_empty().then_some(ttl);
            if self.call(key, Op::Remove(remove), refresh).await? == Reply::Gone {
                self.emit(SessionEventKind::Gone, &ticket);
            }
        }
        Ok(session_key)
    }

    /// The session a save was for is gone (deleted or expired since it was loaded): it stays
    /// gone, and the request's changes go to a new session.
    async fn replace_gone(
        &self,
        gone: &Ticket,
        set: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> Result<SessionKey, Error> {
        self.emit(SessionEventKind::Gone, gone);
        self.create(set, ttl).await
    }

    async fn refresh(&self, session_key: &SessionKey, ttl: Duration) -> Result<(), Error> {
        if let Some((_, key)) = self.session_of(session_key) {
            self.call(key, Op::Touch, Some(ttl)).await?;
        }
        Ok(())
    }

    async fn delete_session(&self, session_key: &SessionKey) -> Result<(), Error> {
        if let Some((ticket, key)) = self.session_of(session_key) {
            if self.call(key, Op::Invalidate, None).await? == Reply::Bool(true) {
                self.emit(SessionEventKind::Invalidated, &ticket);
            }
        }
        Ok(())
    }

    /// The entries to write, each key and value checked as `AsyncSession::set` checks them.
    fn checked(
        &self,
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let max = self.session.max_value_bytes;
        entries
            .into_iter()
            .map(|(key, value)| {
                check_key(&key)?;
                if value.len() > max {
                    let size = value.len();
                    return Err(Error::ValueTooLarge { key, size, max });
                }
                Ok((key, value.into_bytes()))
            })
            .collect()
    }

    fn emit(&self, kind: SessionEventKind, ticket: &Ticket) {
        self.engine.events().emit(kind, &ticket.id, None);
    }
}

impl SessionStore for ActixSessionStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        self.load_state(session_key).await
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &time::Duration,
    ) -> Result<SessionKey, SaveError> {
        self.save_state(session_state, std_ttl(ttl))
            .await
            .map_err(|e| SaveError::Other(report(e)))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl: &time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        self.update_state(session_key, session_state, std_ttl(ttl))
            .await
            .map_err(|e| UpdateError::Other(report(e)))
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &time::Duration,
    ) -> Result<(), anyhow::Error> {
        self.refresh(session_key, std_ttl(ttl))
            .await
            .map_err(report)
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.delete_session(session_key).await.map_err(report)
    }
}

/// actix-session's TTL as ours: at least a second (a zero TTL would mean "leave it alone" to
/// the write script).
fn std_ttl(ttl: &time::Duration) -> Duration {
    Duration::try_from(*ttl)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// Logs an error as our middleware would (outages at `debug`: the engine logs each once) and
/// wraps it for actix-session, whose middleware answers it with an opaque `500`.
fn report(e: Error) -> anyhow::Error {
    if e.status_code() == StatusCode::SERVICE_UNAVAILABLE {
        tracing::debug!(error = %e, kind = e.kind(), "session store unavailable");
    } else {
        tracing::error!(error = %e, kind = e.kind(), "session error");
    }
    anyhow::Error::new(e)
}

fn unexpected(reply: Reply) -> Error {
    Error::Server(format!("unexpected reply {reply:?}"))
}
