//! `AsyncSession`: the handle a handler gets, and its extractor.
//!
//! Why this file is long: about 510 of its 960 lines are the public API's documentation (each
//! method's Redis cost and errors, a runnable example of each method and a tour of the whole
//! handle, on the memory backend); the rest is about 450, the request extension that carries
//! the session (`Bound`) and the session's reply slot included.
//!
//! The handle turns each call into commands for the worker's actor; `state` keeps who the
//! session is and what the response must do with the cookie; `policy` decides how long a
//! session lives and when its idle timer is pushed back. The user methods (log in as a user,
//! list and revoke the user's sessions, remember-me) are in `login`, compare-and-set in `cas`.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::actor::message::{Command, Entries, Op, Reply, WriteMode};
use crate::actor::reply::{Slot, SlotHolder};
use crate::cookie::{CookieUpdate, Transport};
use crate::error::Error;
use crate::events::SessionEventKind;

mod cas;
mod login;
mod policy;
mod state;
pub(crate) mod values;
mod worker;

pub(crate) use policy::{Policy, RefreshLimiter, INDEX_SLACK_PERCENT};
use state::{Presented, Purpose, Renewal, State, Target};
pub(crate) use worker::Binding;

pub use values::MAX_KEY_BYTES;

/// The session of the current request: a `Send + Clone` handle, usable from spawned tasks and
/// websocket actors.
///
/// Every method is async and talks to the store only when called, and only about the keys it
/// names. Values are JSON (serde_json) in fields of one Redis hash per session. Each method's
/// documentation says what it costs in Redis; the TTL refresh (a `PEXPIRE`, or folded into a
/// write's script) is paid at most once per request.
///
/// Cookie changes (a new session, a renewed id, a logout) reach the browser with the response,
/// so make them before the handler returns.
///
/// # Errors
/// Besides each method's own, every call that reaches the store can fail with the store's
/// errors, which become a `503` at the HTTP edge: [`Error::Overloaded`] (too many commands
/// queued), [`Error::Timeout`] (no answer by the deadline), [`Error::Unavailable`] (Redis down,
/// unreachable, or refusing our credentials) and [`Error::StoreFull`] (for writes, Redis over
/// `maxmemory`). A `503` after a command was sent does not prove it did not run.
///
/// ```
/// use actix_web::{get, web::Json, Result};
/// use circumflex_session::AsyncSession;
///
/// #[get("/counter")]
/// async fn counter(session: AsyncSession) -> Result<Json<i64>> {
///     Ok(Json(session.incr("counter", 1).await?))
/// }
/// # actix_web::rt::System::new().block_on(async {
/// # use actix_web::{cookie::Key, test, App};
/// # use circumflex_session::{MemoryBackend, SessionMiddleware};
/// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
/// # let app = test::init_service(App::new().wrap(middleware).service(counter)).await;
/// # let request = test::TestRequest::get().uri("/counter").to_request();
/// # let first = test::call_service(&app, request).await;
/// # let cookie = first.response().cookies().next().unwrap().into_owned();
/// # assert_eq!(test::read_body(first).await, "1");
/// # let again = test::TestRequest::get().uri("/counter").cookie(cookie).to_request();
/// # assert_eq!(test::call_and_read_body(&app, again).await, "2");
/// # });
/// ```
///
/// The whole API in one handler, run on the memory backend (same semantics as Redis):
///
/// ```
/// use actix_web::{cookie::Key, test, web, App, HttpResponse};
/// use circumflex_session::{AsyncSession, MemoryBackend, SessionMiddleware};
///
/// async fn tour(session: AsyncSession) -> actix_web::Result<HttpResponse> {
///     assert_eq!(session.get::<String>("user").await?, None); // no session: no store traffic
///     session.set("user", "ann").await?; // creates the session; its cookie goes out
///     session.set_many([("theme", "dark"), ("lang", "en")]).await?;
///     assert_eq!(session.incr("visits", 1).await?, 1);
///     assert!(!session.set_if_absent("user", "bob").await?);
///     let [user, lang] = <[Option<String>; 2]>::try_from(session.mget(&["user", "lang"]).await?)
///         .expect("two keys asked, two answers");
///     assert_eq!((user.as_deref(), lang.as_deref()), (Some("ann"), Some("en")));
///     assert_eq!(session.entries::<serde_json::Value>().await?.len(), 4);
///     assert!(session.remove("theme").await?);
///     assert_eq!(session.remove_many(&["theme", "lang"]).await?, 1);
///     let before = session.id();
///     session.renew().await?; // at login: a new id, the same data
///     assert_ne!(session.id(), before);
///     assert!(session.touch().await?);
///     session.invalidate().await?; // at logout
///     assert_eq!(session.id(), None);
///     Ok(HttpResponse::Ok().finish())
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
/// let app = App::new().wrap(middleware).route("/", web::get().to(tour));
/// let app = test::init_service(app).await;
/// let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
/// assert!(response.status().is_success());
/// # });
/// ```
#[derive(Clone)]
pub struct AsyncSession {
    inner: Arc<Shared>,
}

struct Shared {
    binding: Arc<Binding>,
    state: Mutex<State>,
    /// Where the actor answers this session's commands, one at a time (see `actor::reply`).
    replies: Slot,
}

impl SlotHolder for Shared {
    fn slot(&self) -> &Slot {
        &self.replies
    }
}

impl std::fmt::Debug for AsyncSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSession")
            .field("identity", &self.lock().kind())
            .finish()
    }
}

impl AsyncSession {
    fn new(binding: Arc<Binding>, cookie: Option<Presented>, transport: Transport) -> Self {
        AsyncSession {
            inner: Arc::new(Shared {
                binding,
                state: Mutex::new(State::new(cookie, transport)),
                replies: Slot::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across an await; every critical section leaves the state consistent.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call(&self, target: &Target, op: Op) -> Result<Reply, Error> {
        let command = Command {
            key: target.key.clone(),
            op,
            refresh: target.refresh,
            limits: self.inner.binding.policy.session.limits(),
            reindex: target.reindex,
        };
        let holder: Arc<dyn SlotHolder> = self.inner.clone();
        let reply = self.inner.binding.handle.call_in(command, &holder).await;
        if reply.is_err() && target.reindex {
            // The index may not have moved: the next refresh moves it, so that no plain
            // refresh outlives the index's padded TTL.
            self.inner.binding.index_touches.forget(&target.key);
        }
        reply
    }

    /// Sends a command that is not about this request's session (a user's index).
    async fn call_other(&self, key: Arc<str>, op: Op) -> Result<Reply, Error> {
        let target = Target {
            key,
            refresh: None,
            reindex: false,
        };
        self.call(&target, op).await
    }

    /// The session behind `key` is gone: forget it, and tell the hooks if a cookie had
    /// pointed at it.
    fn forget(&self, key: &Arc<str>) {
        if let Some(id) = self.lock().forget(key) {
            self.inner
                .binding
                .events
                .emit(SessionEventKind::Gone, &id, None);
        }
    }

    /// Runs a read; `None` when there is no session (no store traffic at all then).
    async fn read(&self, op: Op) -> Result<Option<Reply>, Error> {
        let Some(target) = self.lock().target(&self.inner.binding, Purpose::Read) else {
            return Ok(None);
        };
        let reply = self.call(&target, op).await?;
        if reply == Reply::Gone {
            self.forget(&target.key);
            return Ok(None);
        }
        Ok(Some(reply))
    }

    /// Runs a write, creating a session when there is none. A write that finds its session gone
    /// (expired or invalidated elsewhere) starts a new one under a new id and is applied there:
    /// the old id never comes back.
    ///
    /// `op` makes the command for each attempt; a second attempt is rare, so callers hand the
    /// first their data and make a copy only if asked again.
    async fn write(
        &self,
        mut op: impl FnMut(WriteMode) -> Result<Op, Error>,
    ) -> Result<Reply, Error> {
        for _ in 0..2 {
            let Some(write) = self.lock().begin_write(&self.inner.binding) else {
                continue;
            };
            let op = match op(write.mode) {
                Ok(op) => op,
                Err(e) => {
                    self.lock().write_failed(write);
                    return Err(e);
                }
            };
            match self.call(&write.target, op).await {
                Ok(Reply::Gone) => self.forget(&write.target.key),
                Ok(reply) => {
                    if let Some(id) = &write.created {
                        self.inner
                            .binding
                            .events
                            .emit(SessionEventKind::Created, id, None);
                    }
                    return Ok(reply);
                }
                Err(e) => {
                    self.lock().write_failed(write);
                    return Err(e);
                }
            }
        }
        Err(Error::Server(
            "session vanished twice during one write".to_owned(),
        ))
    }

    /// Reads one value.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error, MAX_KEY_BYTES};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert_eq!(session.get::<String>("user").await?, None); // no session: no store traffic
    ///     session.set("user", "ann").await?;
    ///     assert_eq!(session.get::<String>("user").await?.as_deref(), Some("ann"));
    ///     // A stored value of another type, or a key too long, is an error, not a panic:
    ///     let wrong_type = session.get::<u32>("user").await;
    ///     assert!(matches!(wrong_type, Err(Error::Serialization { .. })));
    ///     let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    ///     assert!(matches!(session.get::<u32>(&long_key).await, Err(Error::InvalidKey(_))));
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `HMGET` (fused with other reads of this session in the same batch), plus the
    /// request's TTL refresh (`PEXPIRE`) if it is the first use. No session: no Redis at all.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Serialization`] if the stored value is not a `T`, and the
    /// store's errors (see [`AsyncSession`]).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        // `mget` of one key, without collecting the one answer into a vector.
        let fields = values::fields(&self.inner.binding.policy.session, &[key])?;
        match self.read(Op::Get(fields)).await? {
            Some(Reply::Values(values)) => match values.into_iter().next().flatten() {
                Some(raw) => values::decode(key, &raw).map(Some),
                None => Ok(None),
            },
            Some(other) => Err(unexpected(other)),
            None => Ok(None),
        }
    }

    /// Reads several values, in order.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set_many([("theme", "dark"), ("lang", "en")]).await?;
    ///     let values: Vec<Option<String>> = session.mget(&["lang", "font", "theme"]).await?;
    ///     assert_eq!(values, [Some("en".to_owned()), None, Some("dark".to_owned())]);
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `HMGET` for all keys, plus the request's TTL refresh if it is the first use.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::TooManyKeys`] for more keys than a session holds,
    /// [`Error::Serialization`], and the store's errors (see [`AsyncSession`]).
    pub async fn mget<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<Vec<Option<T>>, Error> {
        let fields = values::fields(&self.inner.binding.policy.session, keys)?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        match self.read(Op::Get(fields)).await? {
            Some(Reply::Values(values)) => keys
                .iter()
                .zip(values)
                .map(|(key, raw)| raw.map(|raw| values::decode(key, &raw)).transpose())
                .collect(),
            Some(other) => Err(unexpected(other)),
            None => Ok(keys.iter().map(|_| None).collect()),
        }
    }

    /// Every key and value of the session.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert!(session.entries::<String>().await?.is_empty()); // no session yet
    ///     session.set_many([("theme", "dark"), ("lang", "en")]).await?;
    ///     let entries: HashMap<String, String> = session.entries().await?;
    ///     assert_eq!(entries.len(), 2);
    ///     assert_eq!(entries["theme"], "dark");
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `HGETALL`, plus the request's TTL refresh if it is the first use.
    ///
    /// # Errors
    /// [`Error::Serialization`] if a stored value is not a `T`, and the store's errors (see
    /// [`AsyncSession`]).
    pub async fn entries<T: DeserializeOwned>(&self) -> Result<HashMap<String, T>, Error> {
        match self.read(Op::Entries).await? {
            Some(Reply::Entries(entries)) => entries
                .into_iter()
                .map(|(key, raw)| values::decode(&key, &raw).map(|v| (key, v)))
                .collect(),
            Some(other) => Err(unexpected(other)),
            None => Ok(HashMap::new()),
        }
    }

    /// Stores one value, creating the session (and its cookie) if there is none.
    ///
    /// Values are anything `serde` can serialise to JSON; the first write's response carries
    /// the new session's cookie:
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Cart {
    ///     items: Vec<String>,
    /// }
    ///
    /// async fn add_apple(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("cart", &Cart { items: vec!["apple".to_owned()] }).await?;
    ///     let cart: Option<Cart> = session.get("cart").await?;
    ///     assert_eq!(cart.map(|cart| cart.items), Some(vec!["apple".to_owned()]));
    ///     Ok(())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// let app = App::new().wrap(middleware).route("/", web::post().to(add_apple));
    /// let app = test::init_service(app).await;
    /// let response = test::call_service(&app, test::TestRequest::post().to_request()).await;
    /// assert!(response.status().is_success());
    /// assert!(response.response().cookies().any(|cookie| cookie.name() == "session"));
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script (`HMGET` of the existence stamp, size and old
    /// value, then `HSET` and `PEXPIRE` inside).
    ///
    /// # Errors
    /// [`Error::SessionFull`] if the session would pass `session.max_keys` or
    /// `session.max_session_bytes` (nothing is written), [`Error::ValueTooLarge`],
    /// [`Error::InvalidKey`], and the store's errors ([`Error::StoreFull`] when Redis is out of
    /// memory).
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let session = &self.inner.binding.policy.session;
        let mut encoded = Some(values::encode(session, key, value)?);
        self.write(|mode| {
            let raw = match encoded.take() {
                Some(raw) => raw,
                None => values::encode(session, key, value)?,
            };
            Ok(Op::Set(mode, smallvec::smallvec![(key.to_owned(), raw)]))
        })
        .await?;
        Ok(())
    }

    /// Stores several values at once.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set_many([("theme", "dark"), ("lang", "en"), ("theme", "light")]).await?;
    ///     let values: Vec<Option<String>> = session.mget(&["theme", "lang"]).await?;
    ///     assert_eq!(values, [Some("light".to_owned()), Some("en".to_owned())]); // the last wins
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script, whatever the number of keys.
    ///
    /// # Errors
    /// as [`set`](Self::set); a key named twice keeps its last value.
    pub async fn set_many<K: AsRef<str>, T: Serialize>(
        &self,
        entries: impl IntoIterator<Item = (K, T)>,
    ) -> Result<(), Error> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                let key = key.as_ref();
                Ok((
                    key.to_owned(),
                    values::encode(&self.inner.binding.policy.session, key, &value)?,
                ))
            })
            .collect::<Result<Entries, Error>>()?;
        if entries.is_empty() {
            return Ok(());
        }
        // However much the call names, the session cannot hold more than its limits: refuse
        // here rather than ship it to Redis to be refused there.
        let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        let limits = self.inner.binding.policy.session.limits();
        if entries.len() as u64 > limits.max_keys || bytes as u64 > limits.max_bytes {
            // A key named twice holds only its last value.
            let last: HashMap<&str, usize> =
                entries.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
            let keys = last.len() as u64;
            let bytes: u64 = last.iter().map(|(k, v)| (k.len() + v) as u64).sum();
            if keys > limits.max_keys || bytes > limits.max_bytes {
                return Err(limits.exceeded((keys, bytes)));
            }
        }
        self.write(|mode| Ok(Op::Set(mode, entries.clone())))
            .await?;
        Ok(())
    }

    /// Removes one key; answers whether it was there.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("flash", "Saved!").await?;
    ///     assert!(session.remove("flash").await?);
    ///     assert!(!session.remove("flash").await?); // already gone
    ///     assert_eq!(session.get::<String>("flash").await?, None);
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script (`HDEL` inside). No session: no Redis.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], and the store's errors (see [`AsyncSession`]).
    pub async fn remove(&self, key: &str) -> Result<bool, Error> {
        Ok(self.remove_many(&[key]).await? == 1)
    }

    /// Removes several keys; answers how many were there.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set_many([("a", 1), ("b", 2)]).await?;
    ///     assert_eq!(session.remove_many(&["a", "b", "c"]).await?, 2); // "c" was never there
    ///     assert!(session.entries::<i32>().await?.is_empty());
    ///     assert!(session.touch().await?); // the empty session is still there
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script, whatever the number of keys. Removing every
    /// key keeps the (empty) session; use [`invalidate`](Self::invalidate) to end it.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::TooManyKeys`], and the store's errors (see
    /// [`AsyncSession`]).
    pub async fn remove_many(&self, keys: &[&str]) -> Result<u64, Error> {
        let fields = values::fields(&self.inner.binding.policy.session, keys)?;
        if fields.is_empty() {
            return Ok(0);
        }
        let Some(target) = self.lock().target(&self.inner.binding, Purpose::Write) else {
            return Ok(0);
        };
        let fields = fields.iter().map(str::to_owned).collect();
        match self.call(&target, Op::Remove(fields)).await? {
            Reply::Int(n) => Ok(n.max(0) as u64),
            Reply::Gone => {
                self.forget(&target.key);
                Ok(0)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Adds `by` to an integer value atomically (a missing key counts as 0) and answers the new
    /// value. Creates the session if there is none.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert_eq!(session.incr("visits", 1).await?, 1); // a missing key counts as 0
    ///     assert_eq!(session.incr("visits", 10).await?, 11);
    ///     assert_eq!(session.incr("visits", -20).await?, -9);
    ///     assert_eq!(session.get::<i64>("visits").await?, Some(-9));
    ///     session.set("name", "ann").await?;
    ///     assert!(matches!(session.incr("name", 1).await, Err(Error::NotAnInteger(_))));
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script (`HINCRBY` inside): no read-modify-write race.
    ///
    /// # Errors
    /// [`Error::NotAnInteger`] if the stored value is not an integer or the sum overflows,
    /// [`Error::SessionFull`], [`Error::InvalidKey`], and the store's errors (see
    /// [`AsyncSession`]).
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, Error> {
        values::check_key(key)?;
        match self
            .write(|mode| Ok(Op::Incr(mode, key.to_owned(), by)))
            .await?
        {
            Reply::Int(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a value only if the key is absent; answers whether it stored it.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert!(session.set_if_absent("landing_page", "/pricing").await?);
    ///     assert!(!session.set_if_absent("landing_page", "/blog").await?);
    ///     let page = session.get::<String>("landing_page").await?;
    ///     assert_eq!(page.as_deref(), Some("/pricing")); // the first one stays
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script (`HSET` inside, only if the key is absent).
    ///
    /// # Errors
    /// as [`set`](Self::set).
    pub async fn set_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<bool, Error> {
        let session = &self.inner.binding.policy.session;
        let mut encoded = Some(values::encode(session, key, value)?);
        match self
            .write(|mode| {
                let raw = match encoded.take() {
                    Some(raw) => raw,
                    None => values::encode(session, key, value)?,
                };
                Ok(Op::SetIfAbsent(mode, key.to_owned(), raw))
            })
            .await?
        {
            Reply::Bool(set) => Ok(set),
            other => Err(unexpected(other)),
        }
    }

    /// Pushes the idle timer back; answers whether the session exists.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert!(!session.touch().await?); // no session: nothing to keep alive
    ///     session.set("user", "ann").await?;
    ///     assert!(session.touch().await?);
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `PEXPIRE` (none when there is no session).
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn touch(&self) -> Result<bool, Error> {
        let Some(target) = self.lock().target(&self.inner.binding, Purpose::Touch) else {
            return Ok(false);
        };
        match self.call(&target, Op::Touch).await? {
            Reply::Bool(true) => Ok(true),
            Reply::Bool(false) | Reply::Gone => {
                self.forget(&target.key);
                Ok(false)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the session and removes its cookie (same path and domain).
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("user", "ann").await
    /// }
    ///
    /// async fn logout(session: AsyncSession) -> Result<(), Error> {
    ///     session.invalidate().await?;
    ///     assert_eq!(session.id(), None);
    ///     Ok(())
    /// }
    ///
    /// async fn whoami(session: AsyncSession) -> Result<String, Error> {
    ///     Ok(session.get::<String>("user").await?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(MemoryBackend::new(), Key::generate()))
    ///     .route("/login", web::post().to(login))
    ///     .route("/logout", web::post().to(logout))
    ///     .route("/whoami", web::get().to(whoami));
    /// let app = test::init_service(app).await;
    /// let request = test::TestRequest::post().uri("/login").to_request();
    /// let response = test::call_service(&app, request).await;
    /// let cookie = response.response().cookies().next().unwrap().into_owned();
    ///
    /// let request = test::TestRequest::post().uri("/logout").cookie(cookie.clone());
    /// let response = test::call_service(&app, request.to_request()).await;
    /// let removal = response.response().cookies().next().unwrap();
    /// assert_eq!((removal.name(), removal.value()), ("session", "")); // the browser drops it
    ///
    /// // A copy of the old cookie finds nothing:
    /// let request = test::TestRequest::get().uri("/whoami").cookie(cookie);
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "");
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of a short script (`HGET` of the user, `UNLINK`, and for a bound
    /// session `ZREM` from its user's index; none when there is no session); never refused
    /// for memory, since it frees some.
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]); the session may then still exist in the store
    /// until its idle timeout.
    pub async fn invalidate(&self) -> Result<(), Error> {
        let current = self.lock().invalidate(&self.inner.binding);
        if let Some((ticket, key)) = current {
            if self.call_other(key, Op::Invalidate).await? == Reply::Bool(true) {
                self.inner
                    .binding
                    .events
                    .emit(SessionEventKind::Invalidated, &ticket.id, None);
            }
        }
        Ok(())
    }

    /// Moves the session to a new id and sends the new cookie; the old id stops working. Call it
    /// when privileges change (login) to defeat session fixation. A renewed session counts as
    /// logged in: it gets `session.tti_secs` instead of the shorter `anonymous_tti_secs`.
    /// Without a session it sends nothing, and the session the next write creates is a
    /// logged-in one under a fresh id.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("cart", &["apple"]).await?;
    ///     let before = session.id();
    ///     session.renew().await?; // at login, after checking the password
    ///     assert_ne!(session.id(), before); // the new id goes out in the response's cookie
    ///     let cart = session.get::<Vec<String>>("cart").await?;
    ///     assert_eq!(cart, Some(vec!["apple".to_owned()])); // the data moved with it
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the renew script (`RENAME` and `PEXPIRE` inside): O(1) whatever
    /// the session's size, and no moment at which neither id holds the data.
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn renew(&self) -> Result<(), Error> {
        let Renewal::Move {
            from,
            to,
            ticket,
            ttl,
        } = self.lock().begin_renew(&self.inner.binding)
        else {
            return Ok(());
        };
        let op = Op::Renew {
            to: to.clone(),
            ttl,
        };
        match self.call_other(from.clone(), op).await? {
            Reply::Done => {
                let id = ticket.id.clone();
                self.lock().renewed(ticket, to, ttl);
                self.inner
                    .binding
                    .events
                    .emit(SessionEventKind::Renewed, &id, None);
                Ok(())
            }
            Reply::Gone => {
                if let Some(id) = self.lock().renew_found_nothing(&from) {
                    self.inner
                        .binding
                        .events
                        .emit(SessionEventKind::Gone, &id, None);
                }
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// The session id, if this request has a session (checks the cookie, no Redis). A session
    /// from a cookie may have expired in the store since; reads then find nothing.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert_eq!(session.id(), None); // no cookie came, nothing was written
    ///     session.set("user", "ann").await?;
    ///     let id = session.id();
    ///     assert!(id.is_some());
    ///     session.set("theme", "dark").await?;
    ///     assert_eq!(session.id(), id); // the same session for the rest of the request
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    pub fn id(&self) -> Option<String> {
        let (ticket, _) = self.lock().resolve(&self.inner.binding)?;
        Some(ticket.id.to_string())
    }

    /// What the response must do with the cookie, and whether it answers with the cookie or
    /// the id header (read by the middleware).
    pub(crate) fn cookie_update(&self) -> (Transport, CookieUpdate) {
        let state = self.lock();
        let (transport, update) = state.cookie();
        (transport, update.clone())
    }

    /// The request's session: made (from the cookie or the id header, not yet verified) on the
    /// first call and shared by every later one, so that the middleware sees what the handlers
    /// did.
    fn of(req: &HttpRequest) -> Result<Self, Error> {
        let extensions = req.extensions();
        let Some(bound) = extensions.get::<Bound>() else {
            tracing::error!(path = %req.path(), "AsyncSession extracted without SessionMiddleware");
            return Err(Error::MiddlewareMissing);
        };
        let session = bound.session_or_init(|| {
            let binding = bound.binding().clone();
            let (transport, raw) = binding.codec.find(req.headers());
            // A value this worker verified before needs no copy: its ticket is known.
            let presented = raw.map(|raw| match binding.verified.cached(raw) {
                Some((ticket, key)) => Presented::Known(ticket, key),
                None => Presented::Raw(raw.to_owned()),
            });
            AsyncSession::new(binding, presented, transport)
        });
        Ok(session.clone())
    }
}

impl FromRequest for AsyncSession {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(AsyncSession::of(req))
    }
}

fn unexpected(reply: Reply) -> Error {
    Error::Server(format!("unexpected reply {reply:?}"))
}

/// What the middleware leaves in a request's extensions: this worker's binding, and the
/// request's [`AsyncSession`](AsyncSession) once a handler extracted it (one extension
/// for both, so that a request pays for one boxed extension, not two).
pub(crate) struct Bound {
    binding: Arc<Binding>,
    session: OnceCell<AsyncSession>,
}

impl Bound {
    pub(crate) fn new(binding: Arc<Binding>) -> Self {
        Self {
            binding,
            session: OnceCell::new(),
        }
    }

    pub(crate) fn binding(&self) -> &Arc<Binding> {
        &self.binding
    }

    /// The request's session, if a handler extracted it.
    pub(crate) fn session(&self) -> Option<&AsyncSession> {
        self.session.get()
    }

    /// The request's session, made by `make` on the first call.
    pub(crate) fn session_or_init(&self, make: impl FnOnce() -> AsyncSession) -> &AsyncSession {
        self.session.get_or_init(make)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_session_is_send_sync_and_clone() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
        assert_send_sync_clone::<AsyncSession>();
    }
}
