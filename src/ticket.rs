//! The session's identity: a 128-bit random id from a CSPRNG, its creation time, and whether
//! it logged in; and the strict format the cookie carries it in.
//!
//! The payload is `<id>.<created>` for a session that never logged in and `<id>.<created>.r`
//! for one that was renewed (logged in): the id in lowercase hex, the creation time in Unix
//! seconds (for the optional absolute lifetime), and the mark that selects the longer time to
//! idle. The payload is only ever parsed after its signature (or AEAD tag) verified.

use std::fmt::Write as _;
use std::sync::Arc;

use rand::RngCore as _;

use crate::clock;

/// Random bytes in a session id: 128 bits.
const ID_BYTES: usize = 16;
/// Length of an id in hex.
pub(crate) const ID_LEN: usize = ID_BYTES * 2;

/// A verified (or freshly generated) session identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// 32 lowercase hex characters (shared: cloned on every request that uses the session).
    pub(crate) id: Arc<str>,
    /// Creation time, Unix seconds.
    pub(crate) created: u64,
    /// Renewed at least once, which is what a login does: it gets the logged-in time to idle
    /// instead of the anonymous one.
    pub(crate) renewed: bool,
}

impl Ticket {
    /// A new identity with a fresh id from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub(crate) fn generate(renewed: bool) -> Self {
        Self::with_created(clock::unix_secs(), renewed)
    }

    /// A new id with a given creation time (`renew` keeps the old one).
    pub(crate) fn with_created(created: u64, renewed: bool) -> Self {
        let mut bytes = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = String::with_capacity(ID_LEN);
        for b in bytes {
            // Writing to a String cannot fail.
            let _ = write!(id, "{b:02x}");
        }
        Ticket {
            id: Arc::from(id),
            created,
            renewed,
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mark = if self.renewed { ".r" } else { "" };
        format!("{}.{}{mark}", self.id, self.created)
    }

    /// Strict parse of a verified payload: exactly 32 lowercase hex, a dot, decimal seconds,
    /// and optionally `.r`.
    pub(crate) fn parse(payload: &str) -> Option<Self> {
        let (payload, renewed) = match payload.strip_suffix(".r") {
            Some(rest) => (rest, true),
            None => (payload, false),
        };
        let (id, created) = payload.split_once('.')?;
        let hex_ok =
            id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let digits_ok = !created.is_empty()
            && created.len() <= 20
            && created.bytes().all(|b| b.is_ascii_digit());
        if !hex_ok || !digits_ok {
            return None;
        }
        Some(Ticket {
            id: Arc::from(id),
            created: created.parse().ok()?,
            renewed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_128_bit_hex_and_distinct() {
        let a = Ticket::generate(false);
        let b = Ticket::generate(false);
        assert_eq!(a.id.len(), 32);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn payload_parse_is_strict() {
        let id = "0123456789abcdef0123456789abcdef";
        assert!(Ticket::parse(&format!("{id}.17")).is_some());
        assert!(Ticket::parse(&format!("{}.17", id.to_uppercase())).is_none());
        assert!(Ticket::parse(&format!("{id}.")).is_none());
        assert!(Ticket::parse(&format!("{id}.1x")).is_none());
        assert!(Ticket::parse(&format!("{id}0.17")).is_none());
        assert!(Ticket::parse(&format!("{id}.{}", "9".repeat(30))).is_none());
        assert!(Ticket::parse(id).is_none());
        assert_eq!(
            Ticket::parse(&format!("{id}.17.r")).map(|t| t.renewed),
            Some(true)
        );
        assert!(Ticket::parse(&format!("{id}.17.x")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.r.r")).is_none());
        assert!(Ticket::parse(&format!("{id}.r")).is_none());
    }
}
