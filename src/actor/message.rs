//! The commands an [`AsyncSession`](crate::AsyncSession) sends, and their replies: the private
//! protocol between the actor and the backends (see `backend` for why it stays private).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::Error;

/// Field name prefix reserved for session metadata (`\0created` below, and `\0size`, which only
/// the write script reads and writes). User keys may not start with it, so metadata can never
/// collide with them.
pub(crate) const META_PREFIX: u8 = 0;
/// Metadata field holding the creation time (Unix seconds). It also keeps the hash alive when
/// every user key has been removed.
pub const META_CREATED: &str = "\0created";

/// One operation on one session hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Full Redis key of the session hash (`<prefix>:{<tag>}:<id>`).
    pub key: Arc<str>,
    /// What to do.
    pub op: Op,
    /// Push the idle timer back to this TTL. `None`: leave the TTL alone (already refreshed in
    /// this request, or the refresh policy says no). A creating write always sets it.
    pub refresh: Option<Duration>,
    /// The session's size limits, which a write that grows the session must respect. Reads
    /// ignore them.
    pub limits: Limits,
}

/// How large one session may grow: user keys, and bytes of user keys plus their values.
///
/// A write that would take the session past either limit, and grows it, is refused whole with
/// [`Error::SessionFull`]; a write that shrinks an oversized session
/// (after a limit was lowered) is allowed. Both backends check it atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most user keys.
    pub max_keys: u64,
    /// Most bytes of user keys and values together.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_keys: crate::config::DEFAULT_MAX_KEYS as u64,
            max_bytes: crate::config::DEFAULT_MAX_SESSION_BYTES as u64,
        }
    }
}

impl Limits {
    /// Whether a write that takes the session from `old` to `new` (keys, bytes) is refused.
    pub(crate) fn refuses(&self, old: (u64, u64), new: (u64, u64)) -> bool {
        (new.0 > self.max_keys && new.0 > old.0) || (new.1 > self.max_bytes && new.1 > old.1)
    }

    /// The error for a refused write that would have reached `new` (keys, bytes).
    pub(crate) fn exceeded(&self, new: (u64, u64)) -> crate::error::Error {
        crate::error::Error::SessionFull {
            keys: new.0,
            bytes: new.1,
            max_keys: self.max_keys,
            max_bytes: self.max_bytes,
        }
    }
}

/// Whether a write may create the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The session was issued in this request and is not in the store yet (or is): create it
    /// if absent, stamping `created` (Unix seconds) and the TTL.
    Create {
        /// Creation time stored as metadata.
        created: u64,
        /// TTL of the new hash.
        ttl: Duration,
    },
    /// The session came from a cookie: write only if it still exists, else reply
    /// [`Reply::Gone`]. This is the guard that stops an expired session coming back to life.
    Existing,
}

/// The operations. Each maps to one Redis command or one script call (see the Redis backend).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Values of some fields (`HMGET`). `get` and `mget` both use it.
    Get(Vec<String>),
    /// Every user field (`HGETALL`, metadata filtered out).
    Entries,
    /// Set fields (`HSET` in the write script).
    Set(WriteMode, Vec<(String, Vec<u8>)>),
    /// Delete fields (`HDEL` in the write script); replies the number removed.
    Remove(Vec<String>),
    /// Atomic integer increment (`HINCRBY` in the write script).
    Incr(WriteMode, String, i64),
    /// Set a field only if absent (`HSETNX` in the write script); replies whether it was set.
    SetIfAbsent(WriteMode, String, Vec<u8>),
    /// Delete the session (`DEL`); replies whether it existed.
    Invalidate,
    /// Refresh the TTL only (`PEXPIRE`); replies whether the session exists.
    Touch,
    /// Move the whole hash to a new key (renew script), with no moment at which neither key
    /// holds it. Replies `Done` or `Gone`.
    Renew {
        /// Full Redis key of the new hash.
        to: Arc<str>,
        /// TTL of the new hash.
        ttl: Duration,
    },
}

impl Op {
    /// The write mode of a field write (`Remove` never creates a session); `None` for the
    /// other ops.
    pub fn write_mode(&self) -> Option<WriteMode> {
        match self {
            Op::Set(mode, _) | Op::Incr(mode, ..) | Op::SetIfAbsent(mode, ..) => Some(*mode),
            Op::Remove(_) => Some(WriteMode::Existing),
            _ => None,
        }
    }

    /// Whether the op changes the session (and so goes through the existence guard).
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get(_) | Op::Entries | Op::Touch)
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// For `Get`: one value per asked field, in order.
    Values(Vec<Option<Vec<u8>>>),
    /// For `Entries`: user fields and values.
    Entries(Vec<(String, Vec<u8>)>),
    /// For `Remove` (fields removed) and `Incr` (the new value).
    Int(i64),
    /// For `SetIfAbsent`, `Invalidate`, `Touch`.
    Bool(bool),
    /// For `Set` and `Renew`.
    Done,
    /// The session does not exist (expired or invalidated): nothing was written.
    Gone,
}

/// A command and where its reply goes: the tower-buffer shape.
pub(crate) struct Envelope {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<Reply, Error>>,
    /// When the caller's deadline passes.
    pub(crate) deadline: crate::clock::Instant,
    /// The caller's span, so that the batch that runs the command can be traced back to it.
    pub(crate) span: tracing::Span,
    /// Counts the command in the engine's queue depth until answered or dropped.
    pub(crate) depth: crate::stats::DepthGuard,
}

impl actix::Message for Envelope {
    type Result = ();
}
