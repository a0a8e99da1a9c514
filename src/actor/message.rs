//! The commands an [`AsyncSession`](crate::AsyncSession) sends, and their replies: the private
//! protocol between the actor and the backends (see `backend` for why it stays private). How a
//! command travels to the actor and its reply back is in `reply`.

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

/// Field name prefix reserved for session metadata (`\0created` below, and `\0size`, which only
/// the write script reads and writes). User keys may not start with it, so metadata can never
/// collide with them.
pub(crate) const META_PREFIX: u8 = 0;
/// Metadata field holding the creation time (Unix seconds). It also keeps the hash alive when
/// every user key has been removed.
pub const META_CREATED: &str = "\0created";
/// Metadata field of a bound session: the user id it is listed under.
pub const META_USER: &str = "\0user";

/// Hex characters of a session's id after its slot tag: the last part of its key, and its
/// member in its user's index.
pub(crate) const MEMBER_LEN: usize = 32;

/// The key of the index of `user`'s sessions, next to a session key of the same tag:
/// `<prefix>:{<tag>}:u:<user>` (the scripts derive it the same way, see `lua/index.lua`).
pub(crate) fn index_key(session_key: &str, user: &str) -> String {
    let base = &session_key[..session_key.len().saturating_sub(MEMBER_LEN)];
    format!("{base}u:{user}")
}

/// The field names a read asks for, in order: the names side by side in one buffer that holds
/// the usual few short names inline, so that a read allocates nothing for them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// The names, one after another.
    text: SmallVec<[u8; 40]>,
    /// Where each name ends in `text`.
    ends: SmallVec<[u32; 4]>,
}

impl Fields {
    /// Adds a name at the end.
    pub fn push(&mut self, name: &str) {
        self.text.extend_from_slice(name.as_bytes());
        self.ends.push(self.text.len() as u32);
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The names, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            let end = self.ends[i] as usize;
            // Only `push` fills `text`, with whole `&str`s: every slice is UTF-8, and the empty
            // fallback is never taken.
            std::str::from_utf8(&self.text[start..end]).unwrap_or_default()
        })
    }
}

impl<S: AsRef<str>> FromIterator<S> for Fields {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut fields = Fields::default();
        for name in names {
            fields.push(name.as_ref());
        }
        fields
    }
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The fields and values a set writes: inline for the usual one, so that `set` allocates no
/// vector for it.
pub type Entries = SmallVec<[(String, Vec<u8>); 1]>;

/// The values a read answers, one per field asked: inline for up to two, so that a read of a
/// few keys allocates no vector for them.
pub type Values = SmallVec<[Option<Vec<u8>>; 2]>;

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
    /// The session is bound to a user and its index entry is due a touch (see
    /// `lua/index.lua`): the refresh moves the session's expiry in the user's index too, by the
    /// touch script instead of a plain `PEXPIRE`, or by the write script's mode `i`.
    pub reindex: bool,
}

/// How large one session may grow: user keys, and bytes of user keys plus their values.
///
/// A write that would take the session past either limit, and grows it, is refused whole with
/// [`Error::SessionFull`](crate::Error::SessionFull); a write that shrinks an oversized session
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
    Get(Fields),
    /// Every user field (`HGETALL`, metadata filtered out).
    Entries,
    /// Set fields (`HSET` in the write script).
    Set(WriteMode, Entries),
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
    /// Set a field only if it holds `expected` (`None`: only if absent), in the write script;
    /// replies `Bool(true)` when set, else `Values` with the one value the field held.
    CompareAndSet(WriteMode, String, Option<Vec<u8>>, Vec<u8>),
    /// Store the session's own time to idle (remember-me) and push its TTL to `ttl`, in the
    /// write script; replies `Done`.
    SetTti {
        /// How a session is created if there is none.
        mode: WriteMode,
        /// The time to idle stored with the session.
        tti: Duration,
        /// The TTL to give it now.
        ttl: Duration,
    },
    /// Create the session (a fresh id with the user's tag) bound to `user`, with `entries`
    /// carried over from the session before login, list it in the user's index and apply the
    /// per-user cap (bind script). Replies `Revoked` with the ids the cap revoked.
    Bind(Box<Binding>),
    /// The user's live sessions; the command's key is the user's index. Replies `Sessions`.
    SessionsOf {
        /// The user id.
        user: Arc<str>,
        /// Most sessions listed.
        limit: u32,
    },
    /// Revoke one of the user's sessions; the command's key is the user's index. Replies
    /// `Revoked`.
    Revoke {
        /// The user id.
        user: Arc<str>,
        /// The session id after its tag (32 hex).
        member: String,
    },
    /// Revoke up to `limit` of the user's sessions, all but `keep`; the command's key is the
    /// user's index. Replies `Revoked`, with how many are left.
    RevokeAll {
        /// The user id.
        user: Arc<str>,
        /// A session id after its tag to keep (the caller's own).
        keep: Option<String>,
        /// Most sessions revoked by this command.
        limit: u32,
    },
}

/// What a bind stores (see [`Op::Bind`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The user id.
    pub user: Arc<str>,
    /// A label shown by `sessions_of` (for example the user agent); empty for none.
    pub label: String,
    /// Creation time stored as metadata (carried over from the session before login).
    pub created: u64,
    /// The session's time to idle, stored for `sessions_of`.
    pub tti: Duration,
    /// TTL of the new hash.
    pub ttl: Duration,
    /// Most sessions the user may have; 0: no cap.
    pub max_sessions: u32,
    /// Fields carried over from the session before login.
    pub entries: Vec<(String, Vec<u8>)>,
}

/// One of a user's sessions, as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The session id after its tag (32 hex).
    pub member: String,
    /// When it expires unless used (Unix ms).
    pub expires_ms: u64,
    /// When it was created (Unix s).
    pub created: u64,
    /// Its time to idle in seconds.
    pub tti_secs: u64,
    /// Its label; empty for none.
    pub label: String,
}

impl Op {
    /// The write mode of a field write (`Remove` never creates a session); `None` for the
    /// other ops.
    pub fn write_mode(&self) -> Option<WriteMode> {
        match self {
            Op::Set(mode, _)
            | Op::Incr(mode, ..)
            | Op::SetIfAbsent(mode, ..)
            | Op::CompareAndSet(mode, ..)
            | Op::SetTti { mode, .. } => Some(*mode),
            Op::Remove(_) => Some(WriteMode::Existing),
            _ => None,
        }
    }

    /// Whether the op changes the session (and so goes through the existence guard).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Op::Get(_) | Op::Entries | Op::Touch | Op::SessionsOf { .. }
        )
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// For `Get`: one value per asked field, in order.
    Values(Values),
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
    /// For `SessionsOf`: the user's live sessions, most recently used (latest expiry) first.
    Sessions(Vec<Listed>),
    /// For `Bind`, `Revoke` and `RevokeAll`: the ids (after the tag) revoked, and how many of
    /// the user's sessions are left to revoke (`RevokeAll` only).
    Revoked {
        /// Ids after their tag.
        members: Vec<String>,
        /// Sessions still listed, apart from the one kept.
        left: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_every_name_in_order_short_or_long() {
        let long = "k".repeat(256);
        let names = ["a", "", "\u{e9}t\u{e9}", long.as_str(), "b"];
        let fields: Fields = names.iter().collect();
        assert_eq!(fields.len(), 5);
        assert!(fields.iter().eq(names));
        assert_eq!(format!("{fields:?}"), format!("{names:?}"));
        assert!(Fields::default().is_empty());
        assert_eq!(Fields::default().iter().count(), 0);
    }
}
