//! In-process sessions with the same semantics as Redis, TTL included.
//!
//! For users' own tests and for the quick start when no Redis is reachable. Sessions live in
//! one map behind a mutex and vanish with the process; expired entries are removed when
//! touched and by a sweep at most once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::actor::message::{Command, Op, Reply, WriteMode};
use crate::backend::{Backend, BatchReplies};
use crate::config::DEFAULT_KEY_PREFIX;
use crate::error::Error;
use crate::stats::Stats;

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sessions in this process's memory.
///
/// ```
/// use circumflex_session::MemoryBackend;
/// let backend = MemoryBackend::new();
/// assert_eq!(backend.len(), 0);
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    prefix: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<Arc<str>, Entry>,
    last_sweep: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    fields: HashMap<String, Vec<u8>>,
    expires_at: Instant,
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
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        let now = Instant::now();
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
                None => Ok(Reply::Values(vec![None; fields.len()])),
                Some(entry) => {
                    touch(entry);
                    Ok(Reply::Values(
                        fields
                            .iter()
                            .map(|f| entry.fields.get(f).cloned())
                            .collect(),
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
                self.sessions.remove(&**key);
                Ok(Reply::Bool(existed))
            }
            Op::Renew { to, ttl } => {
                // `live` first, so an expired entry is dropped rather than moved.
                let _ = self.live(key, now);
                match self.sessions.remove(&**key) {
                    None => Ok(Reply::Gone),
                    Some(mut entry) => {
                        entry.expires_at = now + *ttl;
                        self.sessions.insert(to.clone(), entry);
                        Ok(Reply::Done)
                    }
                }
            }
            Op::Set(..) | Op::Incr(..) | Op::SetIfAbsent(..) | Op::Remove(_) => {
                let mode = command.op.write_mode().unwrap_or(WriteMode::Existing);
                let Some(entry) = self.writable(key, mode, now) else {
                    return Ok(Reply::Gone);
                };
                let reply = write(entry, &command.op)?;
                touch(entry);
                Ok(reply)
            }
        }
    }

    /// The entry a write may change: the live one, or a new one when the mode allows it.
    fn writable(&mut self, key: &Arc<str>, mode: WriteMode, now: Instant) -> Option<&mut Entry> {
        if self.live(key, now).is_none() {
            let WriteMode::Create { ttl, .. } = mode else {
                return None;
            };
            self.sessions.insert(
                key.clone(),
                Entry {
                    fields: HashMap::new(),
                    expires_at: now + ttl,
                },
            );
        }
        self.sessions.get_mut(&**key)
    }

    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.sessions.retain(|_, e| e.expires_at > now);
            self.last_sweep = now;
        }
    }
}

/// Applies a write op to a live entry.
fn write(entry: &mut Entry, op: &Op) -> Result<Reply, Error> {
    match op {
        Op::Set(_, pairs) => {
            for (field, value) in pairs {
                entry.fields.insert(field.clone(), value.clone());
            }
            Ok(Reply::Done)
        }
        Op::Remove(fields) => {
            let removed = fields
                .iter()
                .filter(|f| entry.fields.remove(f.as_str()).is_some())
                .count();
            Ok(Reply::Int(removed as i64))
        }
        Op::Incr(_, field, by) => {
            // HINCRBY semantics: a missing field counts as 0; a stored value must be a
            // decimal integer; overflow is an error and changes nothing.
            let current = match entry.fields.get(field) {
                None => 0,
                Some(raw) => std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| Error::NotAnInteger(field.clone()))?,
            };
            let next = current
                .checked_add(*by)
                .ok_or_else(|| Error::NotAnInteger(field.clone()))?;
            entry
                .fields
                .insert(field.clone(), next.to_string().into_bytes());
            Ok(Reply::Int(next))
        }
        Op::SetIfAbsent(_, field, value) => {
            if entry.fields.contains_key(field) {
                Ok(Reply::Bool(false))
            } else {
                entry.fields.insert(field.clone(), value.clone());
                Ok(Reply::Bool(true))
            }
        }
        _ => Err(Error::Server("not a write operation".into())),
    }
}

impl Backend for MemoryBackend {
    fn execute<'a>(
        &'a self,
        batch: &'a [Command],
        _stats: &'a Stats,
    ) -> BoxFuture<'a, Result<BatchReplies, Error>> {
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep(now);
        let replies = batch.iter().map(|c| state.apply(c, now)).collect();
        drop(state);
        Box::pin(futures::future::ready(Ok(replies)))
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
