//! The session's identity: a random id from a CSPRNG, its creation time, and whether it
//! logged in; and the strict format the cookie carries it in.
//!
//! An id is 36 lowercase hex characters: a 16-bit *slot tag* then 128 fresh random bits. The
//! store key is `<prefix>:{<tag>}:<rest>`, so Redis Cluster hashes only the tag: `renew`
//! keeps the tag (and draws 128 new bits), so the old and new keys share a slot and the renew
//! script stays atomic on a cluster. A new session draws its tag at random, which spreads
//! sessions evenly over the 16384 slots (each tag value lands on one slot; there are four
//! tag values per slot). A session bound to a user takes the user's tag (16 bits of a hash of
//! the user id), so that the user's index and every session it lists share a slot.
//!
//! The payload is `<id>.<created>`, then `.r` for a session that was renewed (logged in) or
//! `.u` for one bound to a user (logged in too), then `.t<secs>` for a session with its own
//! time to idle (remember-me): the id in lowercase hex, the creation time in Unix seconds (for
//! the optional absolute lifetime), and the marks that select the time to idle and how a
//! refresh is sent. The payload is only ever parsed after its signature (or AEAD tag)
//! verified, so the marks are as trustworthy as the id.

use std::fmt::Write as _;
use std::sync::Arc;

use rand::RngCore as _;

use crate::clock;

/// Random bytes in a session id after its tag: 128 bits, fresh on every new id.
const ID_BYTES: usize = 16;
/// Hex characters of the slot tag that starts an id (16 bits).
pub(crate) const TAG_LEN: usize = 4;
/// Length of an id in hex: the tag, then the 128 random bits.
pub(crate) const ID_LEN: usize = TAG_LEN + ID_BYTES * 2;

/// A verified (or freshly generated) session identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// 36 lowercase hex characters, the first [`TAG_LEN`] of them the slot tag (shared: cloned
    /// on every request that uses the session).
    pub(crate) id: Arc<str>,
    /// Creation time, Unix seconds.
    pub(crate) created: u64,
    /// Renewed at least once, which is what a login does: it gets the logged-in time to idle
    /// instead of the anonymous one.
    pub(crate) renewed: bool,
    /// Bound to a user (implies `renewed`): listed in the user's index, which its refreshes
    /// keep up to date.
    pub(crate) bound: bool,
    /// Its own time to idle in seconds (remember-me), instead of the configured one.
    pub(crate) tti: Option<u64>,
}

impl Ticket {
    /// A new identity with a fresh id and a random slot tag, from the thread-local CSPRNG
    /// (ChaCha, seeded by the OS).
    pub(crate) fn generate(renewed: bool) -> Self {
        let tag = format!("{:04x}", rand::rng().next_u32() & 0xffff);
        Self::with_tag(&tag, clock::unix_secs(), renewed)
    }

    /// The identity `renew` moves the session to: the same slot tag and creation time, 128
    /// fresh random bits, logged in.
    pub(crate) fn successor(&self) -> Self {
        Ticket {
            bound: self.bound,
            tti: self.tti,
            ..Self::with_tag(self.tag(), self.created, true)
        }
    }

    /// The identity `bind_user` moves the session to: the user's slot tag, the old creation
    /// time and time to idle, 128 fresh random bits, bound.
    pub(crate) fn for_user(user: &str, created: u64, tti: Option<u64>) -> Self {
        Ticket {
            bound: true,
            tti,
            ..Self::with_tag(&user_tag(user), created, true)
        }
    }

    /// The slot tag: the part of the id that Redis Cluster hashes.
    pub(crate) fn tag(&self) -> &str {
        &self.id[..TAG_LEN]
    }

    /// The id after the tag.
    pub(crate) fn rest(&self) -> &str {
        &self.id[TAG_LEN..]
    }

    /// The store key of this session: `<prefix>:{<tag>}:<rest of id>`. Redis Cluster hashes
    /// only the part in braces, which `renew` keeps.
    pub(crate) fn store_key(&self, prefix: &str) -> Arc<str> {
        Arc::from(format!("{prefix}:{{{}}}:{}", self.tag(), self.rest()))
    }

    fn with_tag(tag: &str, created: u64, renewed: bool) -> Self {
        let mut bytes = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = String::with_capacity(ID_LEN);
        id.push_str(tag);
        for b in bytes {
            // Writing to a String cannot fail.
            let _ = write!(id, "{b:02x}");
        }
        Ticket {
            id: Arc::from(id),
            created,
            renewed,
            bound: false,
            tti: None,
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mark = match (self.bound, self.renewed) {
            (true, _) => ".u",
            (false, true) => ".r",
            (false, false) => "",
        };
        let mut payload = format!("{}.{}{mark}", self.id, self.created);
        if let Some(tti) = self.tti {
            // Writing to a String cannot fail.
            let _ = write!(payload, ".t{tti}");
        }
        payload
    }

    /// Strict parse of a verified payload: exactly 36 lowercase hex, a dot, decimal seconds,
    /// optionally `.r` or `.u`, and optionally `.t` and decimal seconds.
    pub(crate) fn parse(payload: &str) -> Option<Self> {
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        let (payload, tti) = match payload.rsplit_once(".t") {
            Some((rest, secs)) if digits(secs) => (rest, Some(secs.parse().ok()?)),
            _ => (payload, None),
        };
        let (payload, renewed, bound) = if let Some(rest) = payload.strip_suffix(".r") {
            (rest, true, false)
        } else if let Some(rest) = payload.strip_suffix(".u") {
            (rest, true, true)
        } else {
            (payload, false, false)
        };
        let (id, created) = payload.split_once('.')?;
        if !is_id(id) || !digits(created) || tti == Some(0) {
            return None;
        }
        Some(Ticket {
            id: Arc::from(id),
            created: created.parse().ok()?,
            renewed,
            bound,
            tti,
        })
    }
}

/// Whether `id` has the shape of a session id: [`ID_LEN`] lowercase hex characters.
pub(crate) fn is_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The slot tag of a user's sessions and index: 16 bits of CRC16 of the user id (the hash
/// Redis Cluster uses; any spread would do, this one is already a dependency).
pub(crate) fn user_tag(user: &str) -> String {
    format!(
        "{:04x}",
        crc16::State::<crc16::XMODEM>::calculate(user.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_a_tag_and_128_random_bits() {
        let a = Ticket::generate(false);
        let b = Ticket::generate(false);
        assert_eq!(a.id.len(), 36);
        assert!(a.id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(a.rest(), b.rest());
        // Tags are random too: 64 sessions almost surely draw more than one.
        let tags: std::collections::HashSet<String> = (0..64)
            .map(|_| Ticket::generate(false).tag().to_owned())
            .collect();
        assert!(tags.len() > 1, "{tags:?}");
    }

    #[test]
    fn a_successor_keeps_the_tag_and_creation_time_and_draws_new_bits() {
        let old = Ticket::generate(false);
        let new = old.successor();
        assert_eq!(new.tag(), old.tag());
        assert_eq!(new.created, old.created);
        assert!(new.renewed);
        assert_ne!(new.rest(), old.rest());
        assert_eq!(new.rest().len(), 32);
    }

    #[test]
    fn payload_parse_is_strict() {
        let id = "0a1b0123456789abcdef0123456789abcdef";
        assert!(Ticket::parse(&format!("{id}.17")).is_some());
        assert!(Ticket::parse(&format!("{}.17", id.to_uppercase())).is_none());
        assert!(Ticket::parse(&format!("{id}.")).is_none());
        assert!(Ticket::parse(&format!("{id}.1x")).is_none());
        assert!(Ticket::parse(&format!("{id}0.17")).is_none());
        // The layout before slot tags: 32 hex characters.
        assert!(Ticket::parse(&format!("{}.17", &id[4..])).is_none());
        assert!(Ticket::parse(&format!("{id}.{}", "9".repeat(30))).is_none());
        assert!(Ticket::parse(id).is_none());
        assert_eq!(
            Ticket::parse(&format!("{id}.17.r")).map(|t| t.renewed),
            Some(true)
        );
        assert!(Ticket::parse(&format!("{id}.17.x")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.r.r")).is_none());
        assert!(Ticket::parse(&format!("{id}.r")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.u.r")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.t0")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.t")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.tx")).is_none());
        assert!(Ticket::parse(&format!("{id}.17.t5.u")).is_none());
        let bound = Ticket::parse(&format!("{id}.17.u.t5")).expect("bound, remember-me");
        assert!(bound.bound && bound.renewed);
        assert_eq!(bound.tti, Some(5));
    }

    #[test]
    fn every_kind_of_ticket_round_trips_through_its_payload() {
        let mut t = Ticket::generate(false);
        for (renewed, bound, tti) in [
            (false, false, None),
            (true, false, Some(9)),
            (true, true, None),
            (true, true, Some(86400)),
        ] {
            t.renewed = renewed;
            t.bound = bound;
            t.tti = tti;
            assert_eq!(Ticket::parse(&t.encode()), Some(t.clone()));
        }
    }

    #[test]
    fn a_users_sessions_share_the_users_tag() {
        let a = Ticket::for_user("ann", 17, None);
        let b = Ticket::for_user("ann", 18, Some(60));
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.tag(), user_tag("ann"));
        assert_ne!(a.rest(), b.rest());
        assert!(a.bound && a.renewed);
        assert_eq!(a.successor().tag(), a.tag());
        assert!(a.successor().bound);
    }
}
