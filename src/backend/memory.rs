//! In-process sessions with the same semantics as Redis, TTL included.
//!
//! For users' own tests and for the quick start when no Redis is reachable. Sessions live in
//! one map behind a mutex and vanish with the process; expired entries are removed when
//! touched and by a sweep at most once a second. Expiry reads Tokio's clock, so a test that
//! pauses it (`tokio::time::pause`) moves every session's idle timer with `advance`.
//!
//! Why this file is long: the runnable example on [`MemoryBackend`] (a session idling out on a
//! paused clock) takes it past 425 lines; without it the file is about 420, most of them the
//! store's answer to each command, which must match the Redis scripts'
//! (`tests/engine/differential.rs` compares them).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::actor::message::{
    index_key, Command, Limits, Op, Reply, WriteMode, META_CREATED, META_USER,
};
use crate::backend::{Backend, BatchReplies};
use crate::clock::{self, Instant};
use crate::config::DEFAULT_KEY_PREFIX;
use crate::error::Error;
use crate::stats::Tally;

mod users;

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sessions in this process's memory.
///
/// Idle timers run on Tokio's clock, so a test can pause it (Tokio's `test-util` feature) and
/// let a session idle out without waiting:
///
/// ```
/// use std::time::Duration;
/// use actix_web::{cookie::Key, test, web, App};
/// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
///
/// async fn visit(session: AsyncSession) -> Result<String, Error> {
///     Ok(session.incr("visits", 1).await?.to_string())
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// tokio::time::pause();
/// let backend = MemoryBackend::new();
/// assert!(backend.is_empty());
/// let middleware = SessionMiddleware::new(backend, Key::generate());
/// let app = App::new().wrap(middleware).route("/", web::post().to(visit));
/// let app = test::init_service(app).await;
/// let response = test::call_service(&app, test::TestRequest::post().to_request()).await;
/// let cookie = response.response().cookies().next().unwrap().into_owned();
/// let again = || test::TestRequest::post().cookie(cookie.clone()).to_request();
/// assert_eq!(test::call_and_read_body(&app, again()).await, "2");
///
/// // Ten minutes idle end a session that never logged in: the next visit starts a new one.
/// tokio::time::advance(Duration::from_secs(10 * 60 + 1)).await;
/// assert_eq!(test::call_and_read_body(&app, again()).await, "1");
/// # });
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    prefix: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<Arc<str>, Entry>,
    /// Each user's index: the keys of the sessions bound to the user. Expiry is not kept here
    /// but read from the sessions, so it cannot go stale; dead keys are dropped when listed.
    users: HashMap<String, BTreeSet<Arc<str>>>,
    /// Orders binds, for the per-user cap.
    binds: u64,
    last_sweep: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    fields: HashMap<String, Vec<u8>>,
    /// Bytes of keys and values, counted exactly as the Redis write script counts them.
    size: u64,
    expires_at: Instant,
    /// Creation time (Unix s).
    created: u64,
    /// The session's own time to idle (s), if set.
    tti: Option<u64>,
    /// For a bound session: the user, its label, and when it was bound.
    user: Option<Bound>,
}

#[derive(Debug, Clone)]
struct Bound {
    user: Arc<str>,
    label: String,
    seq: u64,
}

impl Entry {
    fn new(created: u64, expires_at: Instant) -> Self {
        Entry {
            fields: HashMap::new(),
            size: 0,
            expires_at,
            created,
            tti: None,
            user: None,
        }
    }

    /// A field's value, metadata included (as `HMGET` sees the hash).
    fn field(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            META_USER => self.user.as_ref().map(|b| b.user.as_bytes().to_vec()),
            META_CREATED => Some(self.created.to_string().into_bytes()),
            _ => self.fields.get(name).cloned(),
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty store with the default key prefix.
    pub fn new() -> Self {
        Self::with_prefix(DEFAULT_KEY_PREFIX)
    }

    /// An empty store with a key prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            state: Mutex::new(State {
                sessions: HashMap::new(),
                users: HashMap::new(),
                binds: 0,
                last_sweep: clock::now(),
            }),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        let now = clock::now();
        self.lock()
            .sessions
            .values()
            .filter(|e| e.expires_at > now)
            .count()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied command behind (each
        // command mutates one entry at the end), so a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The live entry of a key, dropping it if expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.sessions.get(key).is_some_and(|e| e.expires_at <= now) {
            self.sessions.remove(key);
        }
        self.sessions.get_mut(key)
    }

    fn apply(&mut self, command: &Command, now: Instant) -> Result<Reply, Error> {
        let key = &command.key;
        let refresh = command.refresh;
        let touch = |entry: &mut Entry| {
            if let Some(ttl) = refresh {
                entry.expires_at = now + ttl;
            }
        };
        match &command.op {
            Op::Get(fields) => match self.live(key, now) {
                None if refresh.is_some() => Ok(Reply::Gone),
                None => Ok(Reply::Values(smallvec::smallvec![None; fields.len()])),
                Some(entry) => {
                    touch(entry);
                    Ok(Reply::Values(
                        fields.iter().map(|f| entry.field(f)).collect(),
                    ))
                }
            },
            Op::Entries => match self.live(key, now) {
                None if refresh.is_some() => Ok(Reply::Gone),
                None => Ok(Reply::Entries(Vec::new())),
                Some(entry) => {
                    touch(entry);
                    let mut all: Vec<_> = entry
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    all.sort();
                    Ok(Reply::Entries(all))
                }
            },
            Op::Touch => match self.live(key, now) {
                None => Ok(Reply::Bool(false)),
                Some(entry) => {
                    touch(entry);
                    Ok(Reply::Bool(true))
                }
            },
            Op::Invalidate => {
                let existed = self.live(key, now).is_some();
                self.remove(key);
                Ok(Reply::Bool(existed))
            }
            Op::Renew { to, ttl } => {
                // `live` first, so an expired entry is dropped rather than moved.
                let _ = self.live(key, now);
                match self.sessions.remove(&**key) {
                    None => Ok(Reply::Gone),
                    Some(mut entry) => {
                        entry.expires_at = now + *ttl;
                        if let Some(bound) = &entry.user {
                            let index = self.users.entry(index_key(key, &bound.user)).or_default();
                            index.remove(&**key);
                            index.insert(to.clone());
                        }
                        self.sessions.insert(to.clone(), entry);
                        Ok(Reply::Done)
                    }
                }
            }
            Op::Bind(binding) => Ok(self.bind(key, binding, now)),
            Op::SessionsOf { user, limit } => Ok(self.sessions_of(key, user, *limit, now)),
            Op::Revoke { user, member } => {
                let members = self.revoke(key, user, member).into_iter().collect();
                Ok(Reply::Revoked { members, left: 0 })
            }
            Op::RevokeAll { user, keep, limit } => {
                Ok(self.revoke_all(key, user, keep.as_deref(), *limit))
            }
            Op::SetTti { mode, tti, ttl } => {
                let Some((entry, _)) = self.writable(key, *mode, now) else {
                    return Ok(Reply::Gone);
                };
                entry.tti = Some(tti.as_secs());
                entry.expires_at = now + *ttl;
                Ok(Reply::Done)
            }
            Op::Set(..)
            | Op::Incr(..)
            | Op::SetIfAbsent(..)
            | Op::CompareAndSet(..)
            | Op::Remove(_) => {
                let mode = command.op.write_mode().unwrap_or(WriteMode::Existing);
                let Some((entry, created)) = self.writable(key, mode, now) else {
                    return Ok(Reply::Gone);
                };
                let reply = write(entry, &command.op, &command.limits);
                if created && reply.is_err() {
                    // Like the script: a refused first write leaves no session behind.
                    self.sessions.remove(&**key);
                    return reply;
                }
                touch(entry);
                reply
            }
        }
    }

    /// The entry a write may change: the live one, or a new one when the mode allows it; and
    /// whether it is new.
    fn writable(
        &mut self,
        key: &Arc<str>,
        mode: WriteMode,
        now: Instant,
    ) -> Option<(&mut Entry, bool)> {
        let created = self.live(key, now).is_none();
        if created {
            let WriteMode::Create { ttl, created } = mode else {
                return None;
            };
            self.sessions
                .insert(key.clone(), Entry::new(created, now + ttl));
        }
        self.sessions.get_mut(&**key).map(|entry| (entry, created))
    }

    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.sessions.retain(|_, e| e.expires_at > now);
            let sessions = &self.sessions;
            self.users.retain(|_, index| {
                index.retain(|key| sessions.contains_key(key));
                !index.is_empty()
            });
            self.last_sweep = now;
        }
    }
}

/// The bytes a field's value holds, as `HSTRLEN` counts them (0: absent).
fn held(entry: &Entry, field: &str) -> u64 {
    entry.fields.get(field).map_or(0, |v| v.len() as u64)
}

/// Stores a field's value, reusing the field's name when it is already there.
fn store(entry: &mut Entry, field: &str, value: &[u8]) {
    match entry.fields.get_mut(field) {
        Some(held) => {
            held.clear();
            held.extend_from_slice(value);
        }
        None => {
            entry.fields.insert(field.to_owned(), value.to_vec());
        }
    }
}

/// Applies a write op to a live entry, within `limits`: a refused write changes nothing.
/// Sizes are counted as the Redis write script counts them, so both backends refuse alike.
fn write(entry: &mut Entry, op: &Op, limits: &Limits) -> Result<Reply, Error> {
    let keys = entry.fields.len() as u64;
    let old = (keys, entry.size);
    let check = |new: (u64, u64)| {
        if limits.refuses(old, new) {
            Err(limits.exceeded(new))
        } else {
            Ok(new.1)
        }
    };
    match op {
        Op::Set(_, pairs) => {
            let (mut new_keys, mut new_size) = old;
            // A key named twice holds its last value; only a multi-key write can do that.
            let mut seen: HashMap<&str, u64> = HashMap::new();
            let track = pairs.len() > 1;
            for (field, value) in pairs {
                let held = seen
                    .get(field.as_str())
                    .copied()
                    .unwrap_or_else(|| held(entry, field));
                if held > 0 {
                    new_size = new_size.saturating_sub(held);
                } else {
                    new_keys += 1;
                    new_size += field.len() as u64;
                }
                new_size += value.len() as u64;
                if track {
                    seen.insert(field, value.len() as u64);
                }
            }
            entry.size = check((new_keys, new_size))?;
            for (field, value) in pairs {
                store(entry, field, value);
            }
            Ok(Reply::Done)
        }
        Op::Remove(fields) => {
            let mut removed = 0;
            for field in fields {
                if let Some(value) = entry.fields.remove(field.as_str()) {
                    removed += 1;
                    if !value.is_empty() {
                        entry.size = entry
                            .size
                            .saturating_sub(value.len() as u64 + field.len() as u64);
                    }
                }
            }
            Ok(Reply::Int(removed))
        }
        Op::Incr(_, field, by) => {
            // HINCRBY semantics: a missing field counts as 0; a stored value must be a
            // decimal integer; overflow is an error and changes nothing.
            let before = entry.fields.get(field);
            let current = match before {
                None => 0,
                Some(raw) => std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| Error::NotAnInteger(field.clone()))?,
            };
            let next = current
                .checked_add(*by)
                .ok_or_else(|| Error::NotAnInteger(field.clone()))?;
            let value = next.to_string().into_bytes();
            let new = match before {
                Some(raw) => (
                    keys,
                    entry.size.saturating_sub(raw.len() as u64) + value.len() as u64,
                ),
                None => (
                    keys + 1,
                    entry.size + field.len() as u64 + value.len() as u64,
                ),
            };
            entry.size = check(new)?;
            entry.fields.insert(field.clone(), value);
            Ok(Reply::Int(next))
        }
        Op::SetIfAbsent(_, field, value) => {
            if entry.fields.contains_key(field) {
                return Ok(Reply::Bool(false));
            }
            entry.size = check((
                keys + 1,
                entry.size + field.len() as u64 + value.len() as u64,
            ))?;
            entry.fields.insert(field.clone(), value.clone());
            Ok(Reply::Bool(true))
        }
        Op::CompareAndSet(_, field, expected, value) => {
            if entry.fields.get(field) != expected.as_ref() {
                return Ok(Reply::Values(smallvec::smallvec![entry
                    .fields
                    .get(field)
                    .cloned()]));
            }
            let held = held(entry, field);
            let new = if held > 0 {
                (keys, entry.size - held + value.len() as u64)
            } else {
                (
                    keys + 1,
                    entry.size + field.len() as u64 + value.len() as u64,
                )
            };
            entry.size = check(new)?;
            entry.fields.insert(field.clone(), value.clone());
            Ok(Reply::Bool(true))
        }
        _ => Err(Error::Server("not a write operation".into())),
    }
}

impl Backend for MemoryBackend {
    fn execute<'a>(
        &'a self,
        batch: &'a [Command],
        replies: &'a mut BatchReplies,
        _tally: &'a Tally,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let now = clock::now();
        let mut state = self.lock();
        state.sweep(now);
        replies.extend(batch.iter().map(|c| state.apply(c, now)));
        drop(state);
        Box::pin(futures::future::ready(Ok(())))
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
