//! `AsyncSession`: the handle a handler gets, and its extractor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::actor::message::{Command, Op, Reply, WriteMode, META_PREFIX};
use crate::actor::SessionActor;
use crate::config::{SessionConfig, TtlRefresh};
use crate::cookie::{now_secs, CookieCodec, Ticket, VerifiedCookies};
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::middleware::{find_cookie, Bound};

/// Longest user key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// What the middleware needs to know to turn a handle into cookies; shared by all requests.
pub(crate) struct Policy {
    pub(crate) codec: Arc<CookieCodec>,
    pub(crate) session: SessionConfig,
}

impl Policy {
    /// The TTL to give a session now: its time to idle (logged in, or anonymous), capped by
    /// what remains of the absolute lifetime. `None` when the lifetime is over.
    pub(crate) fn ttl(&self, ticket: &Ticket) -> Option<Duration> {
        let tti = if ticket.renewed {
            self.session.tti()
        } else {
            self.session.anonymous_tti()
        };
        match self.session.max_lifetime_secs {
            None => Some(tti),
            Some(max) => {
                let age = now_secs().saturating_sub(ticket.created);
                let left = max.checked_sub(age).filter(|&s| s > 0)?;
                Some(tti.min(Duration::from_secs(left)))
            }
        }
    }
}

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
/// ```no_run
/// use actix_web::{get, web::Json, Result};
/// use circumflex_session::AsyncSession;
///
/// #[get("/counter")]
/// async fn counter(session: AsyncSession) -> Result<Json<i64>> {
///     Ok(Json(session.incr("counter", 1).await?))
/// }
/// ```
#[derive(Clone)]
pub struct AsyncSession {
    inner: Arc<Shared>,
}

struct Shared {
    binding: Arc<Binding>,
    state: Mutex<State>,
}

/// What every session of one worker shares: built once per worker, one `Arc` clone per request.
pub(crate) struct Binding {
    pub(crate) engine: SessionEngine,
    pub(crate) actor: Addr<SessionActor>,
    pub(crate) policy: Policy,
    pub(crate) refreshes: RefreshLimiter,
    pub(crate) verified: VerifiedCookies,
}

/// Why a command may refresh the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Read,
    Write,
    Touch,
}

/// Remembers when this worker last refreshed each session, so that with
/// `refresh_after_percent > 0` a busy session is refreshed about once per window instead of
/// on every request, without asking Redis. Bounded: past `MAX_TRACKED` sessions, entries older
/// than the window are dropped, and if that is not enough the map starts over (which only
/// costs some early refreshes).
pub(crate) struct RefreshLimiter {
    percent: u32,
    last: Mutex<HashMap<Arc<str>, Instant>>,
}

impl RefreshLimiter {
    const MAX_TRACKED: usize = 100_000;

    pub(crate) fn new(session: &SessionConfig) -> Self {
        Self {
            percent: u32::from(session.refresh_after_percent.min(99)),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refresh to `ttl` is due for `key` now; records it if so.
    fn due(&self, key: &Arc<str>, ttl: Duration) -> bool {
        let window = ttl * self.percent / 100;
        if window.is_zero() {
            return true;
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = last.get(key) {
            if now.duration_since(*at) < window {
                return false;
            }
        }
        if last.len() >= Self::MAX_TRACKED {
            last.retain(|_, at| now.duration_since(*at) < window);
            if last.len() >= Self::MAX_TRACKED {
                last.clear();
            }
        }
        last.insert(key.clone(), now);
        true
    }
}

impl std::fmt::Debug for AsyncSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("AsyncSession")
            .field("identity", &state.identity.kind())
            .finish()
    }
}

/// Who the session is, as far as this request knows.
enum Identity {
    /// A cookie came in; its signature has not been checked yet (checked on first use).
    Unverified(String),
    /// No session (no cookie, a bad one, or one whose session is gone).
    Anonymous,
    /// From a verified cookie; the store may have expired it since.
    Stored(Ticket, Arc<str>),
    /// Issued in this request (first write or renew); its cookie goes out with the response.
    Issued(Ticket, Arc<str>),
}

impl Identity {
    fn kind(&self) -> &'static str {
        match self {
            Identity::Unverified(_) => "unverified",
            Identity::Anonymous => "anonymous",
            Identity::Stored(..) => "stored",
            Identity::Issued(..) => "issued",
        }
    }
}

/// What the response must do with the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieUpdate {
    /// Nothing.
    Keep,
    /// Send this session's cookie (new id, or a persistent cookie's Max-Age pushed back).
    Set(Ticket, Duration),
    /// Tell the browser to drop the cookie.
    Remove,
}

struct State {
    identity: Identity,
    /// Whether the request carried a session cookie at all.
    had_cookie: bool,
    /// The TTL was already refreshed in this request.
    refreshed: bool,
    /// `renew` was called without a session: the session this request creates is a logged-in
    /// one.
    renew_pending: bool,
    cookie: CookieUpdate,
}

impl AsyncSession {
    pub(crate) fn new(binding: Arc<Binding>, cookie: Option<String>) -> Self {
        let had_cookie = cookie.is_some();
        let identity = cookie.map_or(Identity::Anonymous, Identity::Unverified);
        AsyncSession {
            inner: Arc::new(Shared {
                binding,
                state: Mutex::new(State {
                    identity,
                    had_cookie,
                    refreshed: false,
                    renew_pending: false,
                    cookie: CookieUpdate::Keep,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across an await; every critical section leaves the state consistent.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key_for(&self, ticket: &Ticket) -> Arc<str> {
        Arc::from(format!(
            "{}:{}",
            self.inner.binding.engine.key_prefix(),
            ticket.id
        ))
    }

    /// Checks the cookie (once) and returns the current ticket and key, if any.
    fn resolve(&self, state: &mut State) -> Option<(Ticket, Arc<str>)> {
        if let Identity::Unverified(raw) = &state.identity {
            let policy = &self.inner.binding.policy;
            let verified = self
                .inner
                .binding
                .verified
                .verify(&policy.codec, raw, |ticket| self.key_for(ticket));
            state.identity = match verified {
                Some((ticket, key, old_key)) if policy.ttl(&ticket).is_some() => {
                    if old_key {
                        // Verified by a retiring key: re-sign with the current one so the
                        // session survives the old key's removal.
                        if let Some(ttl) = policy.ttl(&ticket) {
                            state.cookie = CookieUpdate::Set(ticket.clone(), ttl);
                        }
                    }
                    Identity::Stored(ticket, key)
                }
                // Tampered, garbage, or past its absolute lifetime: no session.
                _ => Identity::Anonymous,
            };
        }
        match &state.identity {
            Identity::Stored(t, k) | Identity::Issued(t, k) => Some((t.clone(), k.clone())),
            _ => None,
        }
    }

    /// The refresh a command carries: the first eligible command of the request refreshes,
    /// unless this worker refreshed the session less than `refresh_after_percent` of the time
    /// to idle ago (then the command carries none; an explicit `touch` always refreshes).
    fn take_refresh(
        &self,
        state: &mut State,
        ticket: &Ticket,
        key: &Arc<str>,
        purpose: Purpose,
    ) -> Option<Duration> {
        let policy = &self.inner.binding.policy;
        let wanted = purpose != Purpose::Read || policy.session.refresh == TtlRefresh::OnUse;
        if state.refreshed || !wanted {
            return None;
        }
        let ttl = policy.ttl(ticket)?;
        state.refreshed = true;
        if purpose != Purpose::Touch && !self.inner.binding.refreshes.due(key, ttl) {
            return None;
        }
        if let Identity::Stored(..) = state.identity {
            // A persistent cookie's Max-Age follows the server-side TTL.
            if state.cookie == CookieUpdate::Keep
                && policy.codec.config().lifecycle == crate::config::CookieLifecycle::Persistent
            {
                state.cookie = CookieUpdate::Set(ticket.clone(), ttl);
            }
        }
        Some(ttl)
    }

    async fn call(&self, key: Arc<str>, op: Op, refresh: Option<Duration>) -> Result<Reply, Error> {
        let command = Command {
            key,
            op,
            refresh,
            limits: self.inner.binding.policy.session.limits(),
        };
        self.inner
            .binding
            .engine
            .call(&self.inner.binding.actor, command)
            .await
    }

    /// The current session's key and the refresh a command for `purpose` carries; `None`
    /// without a session.
    fn target(&self, purpose: Purpose) -> Option<(Arc<str>, Option<Duration>)> {
        let mut state = self.lock();
        let (ticket, key) = self.resolve(&mut state)?;
        let refresh = self.take_refresh(&mut state, &ticket, &key, purpose);
        Some((key, refresh))
    }

    /// Runs a read; `None` when there is no session (no store traffic at all then).
    async fn read(&self, op: Op) -> Result<Option<Reply>, Error> {
        let Some((key, refresh)) = self.target(Purpose::Read) else {
            return Ok(None);
        };
        let reply = self.call(key.clone(), op, refresh).await?;
        if reply == Reply::Gone {
            self.forget(&key);
            return Ok(None);
        }
        Ok(Some(reply))
    }

    /// The session behind `key` turned out to be gone: from now on this request has none.
    fn forget(&self, key: &Arc<str>) {
        let mut state = self.lock();
        if let Identity::Stored(_, k) | Identity::Issued(_, k) = &state.identity {
            if k == key {
                state.identity = Identity::Anonymous;
                state.refreshed = false;
                if matches!(state.cookie, CookieUpdate::Set(..)) {
                    state.cookie = CookieUpdate::Keep;
                }
            }
        }
    }

    /// Runs a write, creating a session when there is none. A write that finds its session gone
    /// (expired or invalidated elsewhere) starts a new one under a new id and is applied there:
    /// the old id never comes back.
    async fn write(&self, op: impl Fn(WriteMode) -> Op) -> Result<Reply, Error> {
        for _ in 0..2 {
            let (key, mode, refresh, rollback) = {
                let mut state = self.lock();
                let (ticket, key, issued, fresh) = match self.resolve(&mut state) {
                    Some((ticket, key)) => {
                        let issued = matches!(state.identity, Identity::Issued(..));
                        (ticket, key, issued, false)
                    }
                    None => {
                        let ticket = Ticket::generate(state.renew_pending);
                        let key = self.key_for(&ticket);
                        state.identity = Identity::Issued(ticket.clone(), key.clone());
                        state.refreshed = false;
                        (ticket, key, true, true)
                    }
                };
                let Some(ttl) = self.inner.binding.policy.ttl(&ticket) else {
                    // Lifetime ran out during the request: treat as gone.
                    state.identity = Identity::Anonymous;
                    continue;
                };
                let rollback = fresh.then(|| state.cookie.clone());
                let mode = if issued {
                    state.cookie = CookieUpdate::Set(ticket.clone(), ttl);
                    WriteMode::Create {
                        created: ticket.created,
                        ttl,
                    }
                } else {
                    WriteMode::Existing
                };
                let refresh = self.take_refresh(&mut state, &ticket, &key, Purpose::Write);
                (key, mode, refresh, rollback)
            };
            let reply = match self.call(key.clone(), op(mode), refresh).await {
                Ok(reply) => reply,
                Err(e) => {
                    // The id was generated for this write and the store never confirmed it:
                    // send no cookie naming a session that may not exist.
                    if let Some(previous) = rollback {
                        let mut state = self.lock();
                        if matches!(&state.identity, Identity::Issued(_, k) if *k == key) {
                            state.identity = Identity::Anonymous;
                            state.refreshed = false;
                            state.cookie = previous;
                        }
                    }
                    return Err(e);
                }
            };
            if reply != Reply::Gone {
                return Ok(reply);
            }
            self.forget(&key);
        }
        Err(Error::Server(
            "session vanished twice during one write".to_owned(),
        ))
    }

    /// Reads one value.
    ///
    /// Redis: one `HMGET` (fused with other reads of this session in the same batch), plus the
    /// request's TTL refresh (`PEXPIRE`) if it is the first use. No session: no Redis at all.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let mut values = self.mget::<T>(&[key]).await?;
        Ok(values.pop().flatten())
    }

    /// Reads several values, in order.
    ///
    /// Redis: one `HMGET` for all keys, plus the request's TTL refresh if it is the first use.
    pub async fn mget<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<Vec<Option<T>>, Error> {
        let fields = self.fields_of(keys)?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        match self.read(Op::Get(fields)).await? {
            Some(Reply::Values(values)) => keys
                .iter()
                .zip(values)
                .map(|(key, raw)| raw.map(|raw| decode(key, &raw)).transpose())
                .collect(),
            Some(other) => Err(unexpected(other)),
            None => Ok(keys.iter().map(|_| None).collect()),
        }
    }

    /// Every key and value of the session.
    ///
    /// Redis: one `HGETALL`, plus the request's TTL refresh if it is the first use.
    pub async fn entries<T: DeserializeOwned>(&self) -> Result<HashMap<String, T>, Error> {
        match self.read(Op::Entries).await? {
            Some(Reply::Entries(entries)) => entries
                .into_iter()
                .map(|(key, raw)| decode(&key, &raw).map(|v| (key, v)))
                .collect(),
            Some(other) => Err(unexpected(other)),
            None => Ok(HashMap::new()),
        }
    }

    /// Stores one value, creating the session (and its cookie) if there is none.
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
        let entry = (key.to_owned(), self.encode(key, value)?);
        self.write(move |mode| Op::Set(mode, vec![entry.clone()]))
            .await?;
        Ok(())
    }

    /// Stores several values at once.
    ///
    /// Redis: one `EVALSHA` of the write script, whatever the number of keys.
    pub async fn set_many<K: AsRef<str>, T: Serialize>(
        &self,
        entries: impl IntoIterator<Item = (K, T)>,
    ) -> Result<(), Error> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                let key = key.as_ref();
                Ok((key.to_owned(), self.encode(key, &value)?))
            })
            .collect::<Result<Vec<_>, Error>>()?;
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
        self.write(move |mode| Op::Set(mode, entries.clone()))
            .await?;
        Ok(())
    }

    /// Removes one key; answers whether it was there.
    ///
    /// Redis: one `EVALSHA` of the write script (`HDEL` inside). No session: no Redis.
    pub async fn remove(&self, key: &str) -> Result<bool, Error> {
        Ok(self.remove_many(&[key]).await? == 1)
    }

    /// Removes several keys; answers how many were there.
    ///
    /// Redis: one `EVALSHA` of the write script, whatever the number of keys. Removing every
    /// key keeps the (empty) session; use [`invalidate`](Self::invalidate) to end it.
    pub async fn remove_many(&self, keys: &[&str]) -> Result<u64, Error> {
        let fields = self.fields_of(keys)?;
        if fields.is_empty() {
            return Ok(0);
        }
        let Some((key, refresh)) = self.target(Purpose::Write) else {
            return Ok(0);
        };
        match self.call(key.clone(), Op::Remove(fields), refresh).await? {
            Reply::Int(n) => Ok(n.max(0) as u64),
            Reply::Gone => {
                self.forget(&key);
                Ok(0)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Adds `by` to an integer value atomically (a missing key counts as 0) and answers the new
    /// value. Creates the session if there is none.
    ///
    /// Redis: one `EVALSHA` of the write script (`HINCRBY` inside): no read-modify-write race.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, Error> {
        check_key(key)?;
        let field = key.to_owned();
        match self
            .write(move |mode| Op::Incr(mode, field.clone(), by))
            .await?
        {
            Reply::Int(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a value only if the key is absent; answers whether it stored it.
    ///
    /// Redis: one `EVALSHA` of the write script (`HSET` inside, only if the key is absent).
    pub async fn set_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<bool, Error> {
        let field = key.to_owned();
        let value = self.encode(key, value)?;
        match self
            .write(move |mode| Op::SetIfAbsent(mode, field.clone(), value.clone()))
            .await?
        {
            Reply::Bool(set) => Ok(set),
            other => Err(unexpected(other)),
        }
    }

    /// Pushes the idle timer back; answers whether the session exists.
    ///
    /// Redis: one `PEXPIRE` (none when there is no session).
    pub async fn touch(&self) -> Result<bool, Error> {
        let Some((key, ttl)) = self.target(Purpose::Touch) else {
            return Ok(false);
        };
        match self.call(key.clone(), Op::Touch, ttl).await? {
            Reply::Bool(true) => Ok(true),
            Reply::Bool(false) | Reply::Gone => {
                self.forget(&key);
                Ok(false)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the session and removes its cookie (same path and domain).
    ///
    /// Redis: one `EVALSHA` of a one-line `UNLINK` script (none when there is no session);
    /// never refused for memory, since it frees some.
    pub async fn invalidate(&self) -> Result<(), Error> {
        let key = {
            let mut state = self.lock();
            let current = self.resolve(&mut state);
            state.identity = Identity::Anonymous;
            state.refreshed = false;
            state.cookie = if state.had_cookie {
                CookieUpdate::Remove
            } else {
                CookieUpdate::Keep
            };
            current.map(|(_, key)| key)
        };
        if let Some(key) = key {
            self.call(key, Op::Invalidate, None).await?;
        }
        Ok(())
    }

    /// Moves the session to a new id and sends the new cookie; the old id stops working. Call it
    /// when privileges change (login) to defeat session fixation. A renewed session counts as
    /// logged in: it gets `session.tti_secs` instead of the shorter `anonymous_tti_secs`.
    /// Without a session it sends nothing, and the session the next write creates is a
    /// logged-in one under a fresh id.
    ///
    /// Redis: one `EVALSHA` of the renew script (`RENAME` and `PEXPIRE` inside): O(1) whatever
    /// the session's size, and no moment at which neither id holds the data.
    pub async fn renew(&self) -> Result<(), Error> {
        let (old, ticket, key, ttl) = {
            let mut state = self.lock();
            let Some((old_ticket, old)) = self.resolve(&mut state) else {
                state.renew_pending = true;
                return Ok(());
            };
            let ticket = Ticket::with_created(old_ticket.created, true);
            let Some(ttl) = self.inner.binding.policy.ttl(&ticket) else {
                state.identity = Identity::Anonymous;
                return Ok(());
            };
            let key = self.key_for(&ticket);
            (old, ticket, key, ttl)
        };
        let reply = self
            .call(
                old.clone(),
                Op::Renew {
                    to: key.clone(),
                    ttl,
                },
                None,
            )
            .await?;
        let mut state = self.lock();
        match reply {
            Reply::Done => {
                state.identity = Identity::Issued(ticket.clone(), key);
                state.refreshed = true;
                state.cookie = CookieUpdate::Set(ticket, ttl);
                Ok(())
            }
            Reply::Gone => {
                state.renew_pending = true;
                drop(state);
                self.forget(&old);
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// The session id, if this request has a session (checks the cookie, no Redis). A session
    /// from a cookie may have expired in the store since; reads then find nothing.
    pub fn id(&self) -> Option<String> {
        self.lock_resolve().map(|(ticket, _)| ticket.id.to_string())
    }

    fn lock_resolve(&self) -> Option<(Ticket, Arc<str>)> {
        let mut state = self.lock();
        self.resolve(&mut state)
    }

    /// The hash fields for `keys`, each checked; no more than a session can hold, so that one
    /// call's Redis work stays bounded.
    fn fields_of(&self, keys: &[&str]) -> Result<Vec<String>, Error> {
        let max = self.inner.binding.policy.session.limits().max_keys;
        if keys.len() as u64 > max {
            return Err(Error::TooManyKeys {
                asked: keys.len(),
                max,
            });
        }
        keys.iter()
            .map(|key| check_key(key).map(|()| (*key).to_owned()))
            .collect()
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Vec<u8>, Error> {
        check_key(key)?;
        let raw = serde_json::to_vec(value).map_err(|e| Error::serialization(key, e))?;
        let max = self.inner.binding.policy.session.max_value_bytes;
        if raw.len() > max {
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                size: raw.len(),
                max,
            });
        }
        Ok(raw)
    }

    /// What the response must do with the cookie (read by the middleware).
    pub(crate) fn cookie_update(&self) -> CookieUpdate {
        self.lock().cookie.clone()
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.as_bytes()[0] == META_PREFIX {
        return Err(Error::InvalidKey(key.chars().take(64).collect()));
    }
    Ok(())
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|e| Error::serialization(key, e))
}

fn unexpected(reply: Reply) -> Error {
    Error::Server(format!("unexpected reply {reply:?}"))
}

impl AsyncSession {
    /// The request's session: made (from the cookie, not yet verified) on the first call and
    /// shared by every later one, so that the middleware sees what the handlers did.
    fn of(req: &HttpRequest) -> Result<Self, Error> {
        if let Some(session) = req.extensions().get::<AsyncSession>() {
            return Ok(session.clone());
        }
        let Some(binding) = req.extensions().get::<Bound>().map(|b| b.0.clone()) else {
            tracing::error!(path = %req.path(), "AsyncSession extracted without SessionMiddleware");
            return Err(Error::MiddlewareMissing);
        };
        let raw = find_cookie(req.headers(), &binding.policy.codec.config().name);
        let session = AsyncSession::new(binding, raw);
        req.extensions_mut().insert(session.clone());
        Ok(session)
    }
}

impl FromRequest for AsyncSession {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(AsyncSession::of(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("user").is_ok());
        assert!(matches!(check_key(""), Err(Error::InvalidKey(_))));
        assert!(matches!(check_key("\0created"), Err(Error::InvalidKey(_))));
        assert!(matches!(
            check_key(&"k".repeat(257)),
            Err(Error::InvalidKey(_))
        ));
        assert!(check_key(&"k".repeat(256)).is_ok());
    }

    #[test]
    fn async_session_is_send_sync_and_clone() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
        assert_send_sync_clone::<AsyncSession>();
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(100);

    fn limiter(percent: u8) -> RefreshLimiter {
        RefreshLimiter::new(&SessionConfig {
            tti_secs: 100,
            refresh_after_percent: percent,
            ..SessionConfig::default()
        })
    }

    #[test]
    fn without_a_threshold_every_refresh_is_due() {
        let limiter = limiter(0);
        let key: Arc<str> = Arc::from("session:a");
        assert!(limiter.due(&key, TTL));
        assert!(limiter.due(&key, TTL));
    }

    #[test]
    fn with_a_threshold_a_session_refreshed_recently_is_skipped_but_others_are_not() {
        let limiter = limiter(10);
        let a: Arc<str> = Arc::from("session:a");
        let b: Arc<str> = Arc::from("session:b");
        assert!(limiter.due(&a, TTL));
        assert!(!limiter.due(&a, TTL), "refreshed less than 10 s ago");
        assert!(limiter.due(&b, TTL));
    }
}
