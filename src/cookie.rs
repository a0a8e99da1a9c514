//! The session cookie, in one place: finding it among a request's cookies (or in the id
//! header, when `cookie.header` enables one), verifying it (signature or AEAD tag through the
//! `cookie` crate that actix-web re-exports), and writing the `Set-Cookie` (or the header) a
//! response needs.
//!
//! Nothing from a cookie reaches a Redis key unless its signature (or AEAD tag) verified and
//! its payload parsed strictly (see `ticket`). The id header carries exactly the cookie's value
//! and is verified by the same code, with the same keys. The middleware decides *when* a value
//! goes out; this file decides what it looks like.
//!
//! Why this file is long: about 270 of its lines are the unit tests of this parsing of
//! untrusted input (tampering, garbage, rotation, which of cookie and header is read); the rest
//! is under 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::cookie::{time, Cookie, CookieJar, Key, SameSite as CookieSameSite};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};

use crate::config::{id_header, CookieConfig, CookieLifecycle, CookieSecurity, SameSite};
use crate::ticket::Ticket;

/// How a request carried its session value, and so how its response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The session cookie; answered with `Set-Cookie`.
    Cookie,
    /// The id header (`cookie.header`); answered in the same header, never with a cookie.
    Header,
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

    /// The ticket and store key of a value that verified with the current key before: a hash
    /// lookup, no MAC, and nothing copied.
    pub(crate) fn cached(&self, raw: &str) -> Option<(Ticket, Arc<str>)> {
        self.lock().get(raw).cloned()
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

/// Signs, encrypts and verifies session cookies (and the id header's values, which are the
/// same).
pub(crate) struct CookieCodec {
    /// The first key signs; every key verifies (rotation).
    keys: Vec<Key>,
    config: CookieConfig,
    /// `cookie.header`, parsed: `None` when sessions travel only in the cookie.
    header: Option<HeaderName>,
}

impl CookieCodec {
    /// A codec for a validated `config` (an invalid `cookie.header` would be ignored).
    pub(crate) fn new(key: Key, old_keys: Vec<Key>, config: CookieConfig) -> Self {
        let mut keys = Vec::with_capacity(1 + old_keys.len());
        keys.push(key);
        keys.extend(old_keys);
        let header = config.header.as_deref().and_then(|h| id_header(h).ok());
        Self {
            keys,
            config,
            header,
        }
    }

    pub(crate) fn config(&self) -> &CookieConfig {
        &self.config
    }

    /// The raw session value of a request, unverified (see [`verify`](Self::verify)), and how
    /// it came. A request that sends the id header (when one is enabled), even empty, chose
    /// the header: its value is the session's, and the cookie is not even looked at.
    pub(crate) fn find<'h>(&self, headers: &'h HeaderMap) -> (Transport, Option<&'h str>) {
        if let Some(name) = &self.header {
            if let Some(value) = headers.get(name) {
                // Bytes that are not visible ASCII are garbage like any other: no session.
                let raw = value.to_str().unwrap_or_default();
                return (Transport::Header, Some(raw));
            }
        }
        (Transport::Cookie, self.find_cookie(headers))
    }

    /// The raw value of the session cookie in a request's headers, without parsing the other
    /// cookies into a jar.
    fn find_cookie<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get_all(COOKIE)
            .filter_map(|header| header.to_str().ok())
            .flat_map(|header| header.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == self.config.name).then(|| v.trim_matches('"'))
            })
    }

    /// The `Set-Cookie` header value for an update; `None` for [`CookieUpdate::Keep`].
    pub(crate) fn set_cookie(&self, update: &CookieUpdate) -> Option<HeaderValue> {
        let cookie = match update {
            CookieUpdate::Keep => return None,
            CookieUpdate::Set(ticket, ttl) => {
                let max_age = time::Duration::seconds(ttl.as_secs().min(i64::MAX as u64) as i64);
                self.encode(ticket, Some(max_age))
            }
            CookieUpdate::Remove => self.removal(),
        };
        match HeaderValue::from_str(&cookie.to_string()) {
            Ok(value) => Some(value),
            Err(e) => {
                // Unreachable with validated attributes and our own payload; never a panic.
                tracing::error!(error = %e, "session cookie is not a valid header");
                None
            }
        }
    }

    /// The id header for an update: the session's value (as its cookie would carry it) for
    /// [`CookieUpdate::Set`], an empty value ("forget it") for [`CookieUpdate::Remove`]; `None`
    /// for [`CookieUpdate::Keep`] or without an id header.
    pub(crate) fn header(&self, update: &CookieUpdate) -> Option<(HeaderName, HeaderValue)> {
        let name = self.header.as_ref()?;
        let value = match update {
            CookieUpdate::Keep => return None,
            CookieUpdate::Set(ticket, _) => self.encode(ticket, None).value().to_owned(),
            CookieUpdate::Remove => String::new(),
        };
        match HeaderValue::from_str(&value) {
            Ok(value) => Some((name.clone(), value)),
            Err(e) => {
                // Unreachable: base64 and our own payload; never a panic, never the value logged.
                tracing::error!(error = %e, "session id header is not a valid header value");
                None
            }
        }
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
        // A session with its own time to idle (remember-me) outlives the browser session.
        if self.config.lifecycle == CookieLifecycle::Persistent || ticket.tti.is_some() {
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
    fn the_session_cookie_is_found_among_others_and_only_by_its_exact_name() {
        let codec = codec(CookieSecurity::Signed);
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; sessionx=2"));
        assert_eq!(codec.find(&headers), (Transport::Cookie, None));
        headers.append(
            COOKIE,
            HeaderValue::from_static("b=3; session=\"v.1\"; c=4"),
        );
        assert_eq!(codec.find(&headers), (Transport::Cookie, Some("v.1")));
    }

    #[test]
    fn the_id_header_wins_over_the_cookie_only_when_enabled_and_sent() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("session=c.1"));
        headers.append(
            HeaderName::from_static("x-session-id"),
            HeaderValue::from_static("h.1"),
        );
        let cookie_only = codec(CookieSecurity::Signed);
        assert_eq!(
            cookie_only.find(&headers),
            (Transport::Cookie, Some("c.1")),
            "off by default: the header is ignored"
        );
        let config = CookieConfig {
            header: Some("X-Session-Id".into()),
            ..CookieConfig::default()
        };
        let both = CookieCodec::new(Key::generate(), Vec::new(), config);
        assert_eq!(both.find(&headers), (Transport::Header, Some("h.1")));
        headers.insert(
            HeaderName::from_static("x-session-id"),
            HeaderValue::from_static(""),
        );
        assert_eq!(
            both.find(&headers),
            (Transport::Header, Some("")),
            "an empty header opts in, with no session"
        );
        headers.remove("x-session-id");
        assert_eq!(both.find(&headers), (Transport::Cookie, Some("c.1")));
    }

    #[test]
    fn the_id_header_carries_exactly_the_cookie_value_and_an_empty_removal() {
        for security in [CookieSecurity::Signed, CookieSecurity::Private] {
            let config = CookieConfig {
                header: Some("x-session-id".into()),
                security,
                ..CookieConfig::default()
            };
            let codec = CookieCodec::new(Key::generate(), Vec::new(), config);
            let ticket = Ticket::generate(true);
            let update = CookieUpdate::Set(ticket.clone(), Duration::from_secs(60));
            let (name, value) = codec.header(&update).expect("a header for Set");
            assert_eq!(name.as_str(), "x-session-id");
            let raw = value.to_str().expect("visible ASCII");
            assert_eq!(codec.decode(raw), Some(ticket), "{security:?}");
            let (_, removal) = codec.header(&CookieUpdate::Remove).expect("a removal");
            assert!(removal.is_empty());
            assert_eq!(codec.header(&CookieUpdate::Keep), None);
        }
        let cookie_only = codec(CookieSecurity::Signed);
        assert_eq!(cookie_only.header(&CookieUpdate::Remove), None);
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
