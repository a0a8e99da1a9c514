//! Session ids and the session cookie: generation (CSPRNG), signing or encryption through the
//! `cookie` crate that actix-web re-exports, and parsing of untrusted cookie values.
//!
//! The cookie carries `<id>.<created>` for a session that never logged in, and
//! `<id>.<created>.r` for one that was renewed (logged in): a 128-bit random id in lowercase
//! hex, the creation time in Unix seconds (for the optional absolute lifetime), and the mark
//! that selects the longer time to idle. Nothing from a cookie reaches a
//! Redis key unless its signature (or AEAD tag) verified and the payload parsed strictly.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::cookie::{time, Cookie, CookieJar, Key, SameSite as CookieSameSite};
use rand::RngCore as _;

use crate::config::{CookieConfig, CookieLifecycle, CookieSecurity, SameSite};

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
        Self::with_created(now_secs(), renewed)
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

/// Current Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Cookie values this worker has already verified with the current key, so a returning
/// visitor costs a hash lookup instead of an HMAC (or AES-GCM) check on every request: the
/// check was the largest single cost of a session read in profiles. Keyed by the complete raw
/// value, MAC included, so only bytes that verified can ever hit. Bounded: when full it starts
/// over, which only costs some repeated checks.
pub(crate) struct VerifiedCookies {
    map: Mutex<VerifiedMap>,
}

/// Raw cookie value → its ticket and store key.
type VerifiedMap = HashMap<Box<str>, (Ticket, Arc<str>)>;

impl VerifiedCookies {
    const CAPACITY: usize = 16 * 1024;

    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies through the cache: returns the ticket, its store key (made by `key_of`, and
    /// cached with it), and whether an old key verified it (those are not cached, so they keep
    /// being re-signed until the browser has the new cookie).
    pub(crate) fn verify(
        &self,
        codec: &CookieCodec,
        raw: &str,
        key_of: impl FnOnce(&Ticket) -> Arc<str>,
    ) -> Option<(Ticket, Arc<str>, bool)> {
        if let Some((ticket, key)) = self.lock().get(raw) {
            return Some((ticket.clone(), key.clone(), false));
        }
        let (ticket, old_key) = codec.verify(raw)?;
        let key = key_of(&ticket);
        if !old_key {
            let mut map = self.lock();
            if map.len() >= Self::CAPACITY {
                map.clear();
            }
            map.insert(raw.into(), (ticket.clone(), key.clone()));
        }
        Some((ticket, key, old_key))
    }

    fn lock(&self) -> MutexGuard<'_, VerifiedMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Signs, encrypts and verifies session cookies.
pub(crate) struct CookieCodec {
    /// The first key signs; every key verifies (rotation).
    keys: Vec<Key>,
    config: CookieConfig,
}

impl CookieCodec {
    pub(crate) fn new(key: Key, old_keys: Vec<Key>, config: CookieConfig) -> Self {
        let mut keys = Vec::with_capacity(1 + old_keys.len());
        keys.push(key);
        keys.extend(old_keys);
        Self { keys, config }
    }

    pub(crate) fn config(&self) -> &CookieConfig {
        &self.config
    }

    /// Verifies an untrusted cookie value. Any failure (bad signature, garbage, unknown key,
    /// malformed payload) is `None`: the visitor simply has no session.
    #[cfg(test)]
    pub(crate) fn decode(&self, raw: &str) -> Option<Ticket> {
        self.verify(raw).map(|(ticket, _)| ticket)
    }

    /// Verifies an untrusted cookie value (`None` for any failure: bad signature, garbage,
    /// unknown key, malformed payload), and tells whether an old key (not the current one)
    /// verified it, so the caller can re-sign the cookie before the old key is retired.
    pub(crate) fn verify(&self, raw: &str) -> Option<(Ticket, bool)> {
        // We send base64 as is (RFC 6265 allows `+/=` in values); accept a percent-encoded
        // copy too, as some clients and proxies re-encode.
        let cookie = if raw.contains('%') {
            let decoded = Cookie::parse_encoded(format!("{}={raw}", self.config.name)).ok()?;
            Cookie::new(self.config.name.clone(), decoded.value().to_owned())
        } else {
            Cookie::new(self.config.name.clone(), raw.to_owned())
        };
        let jar = CookieJar::new();
        self.keys.iter().enumerate().find_map(|(i, key)| {
            let verified = match self.config.security {
                CookieSecurity::Signed => jar.signed(key).verify(cookie.clone()),
                CookieSecurity::Private => jar.private(key).decrypt(cookie.clone()),
            }?;
            Ticket::parse(verified.value()).map(|ticket| (ticket, i > 0))
        })
    }

    /// The `Set-Cookie` for a session, signed or encrypted with the current key.
    pub(crate) fn encode(
        &self,
        ticket: &Ticket,
        max_age: Option<time::Duration>,
    ) -> Cookie<'static> {
        let mut jar = CookieJar::new();
        let plain = self.attributes(Cookie::new(self.config.name.clone(), ticket.encode()));
        match self.config.security {
            CookieSecurity::Signed => jar.signed_mut(&self.keys[0]).add(plain),
            CookieSecurity::Private => jar.private_mut(&self.keys[0]).add(plain),
        }
        let mut cookie = jar
            .delta()
            .next()
            .cloned()
            .unwrap_or_else(|| Cookie::new(self.config.name.clone(), ""));
        if self.config.lifecycle == CookieLifecycle::Persistent {
            if let Some(max_age) = max_age {
                cookie.set_max_age(max_age);
            }
        }
        cookie
    }

    /// A cookie that makes the browser drop the session cookie (same name, path and domain).
    pub(crate) fn removal(&self) -> Cookie<'static> {
        let mut cookie = self.attributes(Cookie::new(self.config.name.clone(), ""));
        cookie.make_removal();
        cookie
    }

    fn attributes(&self, mut cookie: Cookie<'static>) -> Cookie<'static> {
        let c = &self.config;
        cookie.set_path(c.path.clone());
        cookie.set_secure(c.secure);
        cookie.set_http_only(c.http_only);
        cookie.set_same_site(match c.same_site {
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::None => CookieSameSite::None,
        });
        if let Some(domain) = &c.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(security: CookieSecurity) -> CookieCodec {
        let config = CookieConfig {
            security,
            ..CookieConfig::default()
        };
        CookieCodec::new(Key::generate(), Vec::new(), config)
    }

    #[test]
    fn generated_ids_are_128_bit_hex_and_distinct() {
        let a = Ticket::generate(false);
        let b = Ticket::generate(false);
        assert_eq!(a.id.len(), 32);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn signed_cookie_round_trips() {
        let codec = codec(CookieSecurity::Signed);
        let ticket = Ticket::generate(false);
        let cookie = codec.encode(&ticket, None);
        assert!(
            cookie.value().contains(&*ticket.id),
            "signed cookies are readable"
        );
        assert_eq!(codec.decode(cookie.value()), Some(ticket));
        let renewed = Ticket::generate(true);
        let cookie = codec.encode(&renewed, None);
        assert_eq!(codec.decode(cookie.value()), Some(renewed));
    }

    #[test]
    fn private_cookie_round_trips_and_hides_the_id() {
        let codec = codec(CookieSecurity::Private);
        let ticket = Ticket::generate(false);
        let cookie = codec.encode(&ticket, None);
        assert!(!cookie.value().contains(&*ticket.id));
        assert_eq!(codec.decode(cookie.value()), Some(ticket));
    }

    #[test]
    fn tampered_cookie_is_rejected() {
        let codec = codec(CookieSecurity::Signed);
        let ticket = Ticket::generate(false);
        let value = codec.encode(&ticket, None).value().to_owned();
        let encoded = codec.encode(&ticket, None).encoded().to_string();
        let encoded = encoded.split_once('=').map(|(_, v)| v.to_owned()).unwrap();
        assert_eq!(
            codec.decode(&encoded),
            Some(ticket.clone()),
            "percent-encoded copy"
        );
        // Flip the last hex digit of the id, keep the signature.
        let other = Ticket::generate(false);
        let forged = value.replace(&*ticket.id, &other.id);
        assert_eq!(codec.decode(&forged), None);
        assert_eq!(codec.decode(&ticket.encode()), None, "unsigned payload");
    }

    #[test]
    fn garbage_cookies_are_rejected_without_panicking() {
        let codec = codec(CookieSecurity::Signed);
        for raw in [
            "",
            "x",
            "=",
            "%%%",
            "\u{0}",
            &"a".repeat(10_000),
            "abc.def.ghi",
        ] {
            assert_eq!(codec.decode(raw), None, "{raw:?}");
        }
        let private = self::codec(CookieSecurity::Private);
        for raw in ["", "AAAA", &"A".repeat(100)] {
            assert_eq!(private.decode(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn old_keys_still_verify_and_new_cookies_use_the_new_key() {
        let old = Key::generate();
        let old_codec = CookieCodec::new(old.clone(), Vec::new(), CookieConfig::default());
        let ticket = Ticket::generate(false);
        let old_value = old_codec.encode(&ticket, None).value().to_owned();

        let rotated = CookieCodec::new(Key::generate(), vec![old], CookieConfig::default());
        assert_eq!(rotated.verify(&old_value), Some((ticket.clone(), true)));
        let new_value = rotated.encode(&ticket, None).value().to_owned();
        assert_eq!(
            old_codec.decode(&new_value),
            None,
            "signed with the new key"
        );
    }

    #[test]
    fn the_verification_cache_only_ever_answers_for_values_that_verified() {
        let codec = codec(CookieSecurity::Signed);
        let cache = VerifiedCookies::new();
        let ticket = Ticket::generate(false);
        let value = codec.encode(&ticket, None).value().to_owned();
        let key_of = |t: &Ticket| -> Arc<str> { Arc::from(format!("s:{}", t.id)) };
        let expected = Some((ticket.clone(), key_of(&ticket), false));
        assert_eq!(cache.verify(&codec, &value, key_of), expected);
        let never = |_: &Ticket| -> Arc<str> { panic!("a cache hit builds no key") };
        assert_eq!(cache.verify(&codec, &value, never), expected, "cached");
        let forged = value.replace(&*ticket.id, &Ticket::generate(false).id);
        assert_eq!(cache.verify(&codec, &forged, key_of), None);
        assert_eq!(cache.lock().len(), 1, "failures are not cached");
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

    #[test]
    fn removal_cookie_keeps_path_and_domain() {
        let config = CookieConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            ..CookieConfig::default()
        };
        let codec = CookieCodec::new(Key::generate(), Vec::new(), config);
        let removal = codec.removal();
        assert_eq!(removal.path(), Some("/app"));
        assert_eq!(removal.domain(), Some("example.com"));
        assert_eq!(removal.max_age(), Some(time::Duration::ZERO));
    }
}
