//! Seeded, deterministic fuzzing on stable Rust (no nightly, no cargo-fuzz) of everything that
//! untrusted input reaches: the cookie value (`CookieCodec::verify`, signed and private, with a
//! rotation key), the verified payload (`Ticket::parse`), stored values (`decode`) and the keys
//! handlers pass in (`check_key`).
//!
//! Each target draws `FUZZ_ITERS` inputs (default [`DEFAULT_ITERS`], so that `cargo test` stays
//! quick) from a `StdRng` seeded with `FUZZ_SEED` (default [`DEFAULT_SEED`]) mixed with the
//! target's name: a run replays from those two variables, and a new target does not change the
//! inputs of the others. One exception: private cookies get their AES-GCM nonce from the
//! `cookie` crate's own OS-seeded RNG, so their bytes differ between runs (the mutations applied
//! to them do not). Every assertion prints the offending input with its index and the seed
//! (the keys come from the seed too), which is enough to replay it.
//!
//! Why this file is long: it has one job, the fuzz harness, and its targets share its
//! generators and mutations (random text, near-miss payloads, cookie mutations), which are most
//! of its length; split up, every part would import every other.
//!
//! Random strings almost never get past a MAC, so the cookie targets also mutate valid cookies:
//! the question that matters is whether a near miss can verify as somebody else's session.
//!
//! Long run (7 targets, 28 million inputs, under a minute on 2 cores):
//! `FUZZ_ITERS=4000000 cargo test --release --lib fuzz -- --nocapture`.

use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};
use std::sync::Arc;
use std::time::Instant;

use actix_web::cookie::Key;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{CookieConfig, CookieSecurity};
use crate::cookie::CookieCodec;
use crate::error::Error;
use crate::session::values::{check_key, decode, MAX_KEY_BYTES};
use crate::ticket::{Ticket, ID_LEN};

/// The seed when `FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0xC1C0_F1E5_5E55_1008;
/// Inputs per target when `FUZZ_ITERS` is not set: enough to catch a regression in a normal
/// `cargo test`, few enough that the debug build stays fast.
const DEFAULT_ITERS: u64 = 20_000;

/// One target's run: its inputs come from `rng`, its outcomes are counted and printed.
struct Fuzz {
    target: &'static str,
    seed: u64,
    iters: u64,
    rng: StdRng,
    counts: BTreeMap<(&'static str, &'static str), u64>,
    started: Instant,
}

impl Fuzz {
    fn new(target: &'static str) -> Self {
        let seed = env_u64("FUZZ_SEED").unwrap_or(DEFAULT_SEED);
        let iters = env_u64("FUZZ_ITERS").unwrap_or(DEFAULT_ITERS);
        // FNV-1a of the name, so that every target has a stream of its own.
        let stream = target.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Fuzz {
            target,
            seed,
            iters,
            rng: StdRng::seed_from_u64(seed ^ stream),
            counts: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    fn count(&mut self, outcome: &'static str) {
        self.count_in("", outcome);
    }

    /// Lists outcomes in the report even if they never happen.
    fn zero(&mut self, outcomes: &[&'static str]) {
        for &outcome in outcomes {
            self.counts.entry(("", outcome)).or_default();
        }
    }

    fn count_in(&mut self, group: &'static str, outcome: &'static str) {
        *self.counts.entry((group, outcome)).or_default() += 1;
    }

    /// Where a failing input came from, for assertion messages.
    fn at(&self, input: u64) -> String {
        format!(
            "{} input #{input} (FUZZ_SEED={:#x})",
            self.target, self.seed
        )
    }

    fn report(&self) {
        let mut line = format!(
            "fuzz {}: FUZZ_SEED={:#x} inputs={} in {:.2?}:",
            self.target,
            self.seed,
            self.iters,
            self.started.elapsed()
        );
        for ((group, outcome), n) in &self.counts {
            let sep = if group.is_empty() { "" } else { "." };
            let _ = write!(line, " {group}{sep}{outcome}={n}");
        }
        eprintln!("{line}");
    }
}

/// A number from the environment: decimal (underscores allowed) or `0x` hex.
fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let digits = raw.trim().replace('_', "");
    let parsed = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw:?} is not a number")))
}

// ---------------------------------------------------------------------------------------------
// Input generators
// ---------------------------------------------------------------------------------------------

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
const HEX: &[u8] = b"0123456789abcdef";
/// Bytes a mutation likes to put in: the separators and escapes of every parser on the way
/// (cookie attributes, percent-decoding, base64, the payload's dot), NUL and invalid UTF-8.
const SPECIAL: &[u8] = b"%;=\". \t+/-_0aAfFgG\0\x7f\xc3\xff";

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// A character of any UTF-8 width (NUL and controls included), weighted towards narrow ones.
fn any_char(rng: &mut StdRng) -> char {
    match rng.random_range(0..10) {
        0..=4 => char::from(rng.random_range(0..0x80_u8)),
        5 | 6 => rng.random_range('\u{80}'..='\u{7ff}'),
        7 | 8 => rng.random_range('\u{800}'..='\u{ffff}'),
        _ => rng.random_range('\u{10000}'..=char::MAX),
    }
}

/// Mostly a length near one of `near` (where the parsers' boundaries are), else up to a few
/// hundred bytes, and rarely tens of kilobytes.
fn length(rng: &mut StdRng, near: &[usize]) -> usize {
    match rng.random_range(0..100) {
        0..=59 => (pick(rng, near) + rng.random_range(0..9)).saturating_sub(4),
        60..=97 => rng.random_range(0..300),
        _ if rng.random_bool(0.05) => rng.random_range(10_000..100_000),
        _ => rng.random_range(300..3_000),
    }
}

/// About `len` bytes of text in one of the shapes a broken client or an attacker might send.
fn random_text(rng: &mut StdRng, len: usize) -> String {
    let mut s = String::with_capacity(len + 4);
    match rng.random_range(0..6) {
        0 => {
            while s.len() < len {
                s.push(char::from(rng.random_range(0x20..0x7f_u8)));
            }
        }
        1 => {
            while s.len() < len {
                s.push(char::from(pick(rng, BASE64)));
            }
        }
        2 => {
            while s.len() < len {
                s.push(any_char(rng));
            }
        }
        3 => {
            while s.len() < len {
                match rng.random_range(0..5) {
                    0 => {
                        let _ = write!(s, "%{:02X}", rng.random::<u8>());
                    }
                    1 => {
                        let _ = write!(s, "%{:02x}", rng.random::<u8>());
                    }
                    2 => s.push('%'),
                    3 => {
                        s.push('%');
                        s.push(any_char(rng));
                    }
                    _ => s.push(char::from(pick(rng, BASE64))),
                }
            }
        }
        4 => {
            let mut bytes = vec![0; len];
            rng.fill_bytes(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        _ => {
            // A multi-byte character across the end of a signed cookie's 44-byte MAC, where
            // splitting the `str` would panic.
            let prefix = rng.random_range(42..44);
            while s.len() < prefix {
                s.push(char::from(pick(rng, BASE64)));
            }
            s.push(rng.random_range('\u{800}'..='\u{ffff}'));
            while s.len() < len {
                s.push(char::from(pick(rng, BASE64)));
            }
        }
    }
    s
}

/// Standard base64 with padding, for forging well-formed cookies with the wrong contents.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A ticket from the seeded generator (`Ticket::generate` uses the thread RNG, which would
/// make runs differ), with creation times at the edges too.
fn ticket(rng: &mut StdRng) -> Ticket {
    let id: String = (0..ID_LEN).map(|_| char::from(pick(rng, HEX))).collect();
    let created = match rng.random_range(0..8) {
        0 => 0,
        1 => u64::MAX,
        2..=5 => rng.random_range(1_600_000_000..2_000_000_000),
        _ => rng.random(),
    };
    let renewed = rng.random_bool(0.5);
    Ticket {
        id: Arc::from(id),
        created,
        renewed,
        // A bound session is a logged-in one.
        bound: renewed && rng.random_bool(0.5),
        tti: rng
            .random_bool(0.3)
            .then(|| rng.random_range(1..10_000_000)),
    }
}

fn key(rng: &mut StdRng) -> Key {
    let mut bytes = [0; 64];
    rng.fill_bytes(&mut bytes);
    Key::from(&bytes)
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    FlipBit,
    Substitute,
    Insert,
    Delete,
    Truncate,
    Duplicate,
    Swap,
    ChangeCase,
    PercentEncode,
    Wrap,
    AppendJunk,
    Splice,
}

impl Mutation {
    const ALL: [Mutation; 12] = [
        Mutation::FlipBit,
        Mutation::Substitute,
        Mutation::Insert,
        Mutation::Delete,
        Mutation::Truncate,
        Mutation::Duplicate,
        Mutation::Swap,
        Mutation::ChangeCase,
        Mutation::PercentEncode,
        Mutation::Wrap,
        Mutation::AppendJunk,
        Mutation::Splice,
    ];

    fn name(self) -> &'static str {
        match self {
            Mutation::FlipBit => "flip_bit",
            Mutation::Substitute => "substitute",
            Mutation::Insert => "insert",
            Mutation::Delete => "delete",
            Mutation::Truncate => "truncate",
            Mutation::Duplicate => "duplicate",
            Mutation::Swap => "swap",
            Mutation::ChangeCase => "change_case",
            Mutation::PercentEncode => "percent_encode",
            Mutation::Wrap => "wrap",
            Mutation::AppendJunk => "append_junk",
            Mutation::Splice => "splice",
        }
    }
}

/// A random range of a buffer of `len` bytes, short more often than not.
fn span(rng: &mut StdRng, len: usize) -> (usize, usize) {
    let start = rng.random_range(0..=len);
    let longest = if rng.random_bool(0.7) {
        4.min(len - start)
    } else {
        len - start
    };
    (start, start + rng.random_range(0..=longest))
}

fn special_byte(rng: &mut StdRng) -> u8 {
    match rng.random_range(0..3) {
        0 => pick(rng, SPECIAL),
        1 => pick(rng, BASE64),
        _ => rng.random(),
    }
}

/// Applies `op` to `buf`. `boundary` is where the two parts of a value meet (MAC and payload,
/// nonce and ciphertext, id and seconds), which swaps and splices favour. Returns whether the
/// result took bytes from `donor`.
fn mutate(
    rng: &mut StdRng,
    buf: &mut Vec<u8>,
    op: Mutation,
    donor: &[u8],
    boundary: usize,
) -> bool {
    let len = buf.len();
    match op {
        Mutation::FlipBit if len > 0 => {
            let i = rng.random_range(0..len);
            buf[i] ^= 1 << rng.random_range(0..8);
        }
        Mutation::Substitute if len > 0 => {
            let i = rng.random_range(0..len);
            buf[i] = special_byte(rng);
        }
        Mutation::FlipBit | Mutation::Substitute => buf.push(special_byte(rng)),
        Mutation::Insert => {
            let at = rng.random_range(0..=len);
            let bytes: Vec<u8> = (0..rng.random_range(1..=4))
                .map(|_| special_byte(rng))
                .collect();
            buf.splice(at..at, bytes);
        }
        Mutation::Delete => {
            let (a, b) = span(rng, len);
            buf.drain(a..b);
        }
        Mutation::Truncate => {
            let at = rng.random_range(0..=len);
            if rng.random_bool(0.5) {
                buf.truncate(at);
            } else {
                buf.drain(..at);
            }
        }
        Mutation::Duplicate => {
            if rng.random_bool(0.1) {
                buf.extend_from_within(..);
            } else {
                let (a, b) = span(rng, len);
                let copy = buf[a..b].to_vec();
                buf.splice(b..b, copy);
            }
        }
        Mutation::Swap => {
            if rng.random_bool(0.3) && boundary <= len {
                buf.rotate_left(boundary);
            } else {
                let (a, c) = span(rng, len);
                let b = rng.random_range(a..=c);
                buf[a..c].rotate_left(b - a);
            }
        }
        Mutation::ChangeCase => {
            let (a, b) = span(rng, len);
            let mode = rng.random_range(0..3);
            for byte in &mut buf[a..b] {
                *byte = match mode {
                    0 => byte.to_ascii_uppercase(),
                    1 => byte.to_ascii_lowercase(),
                    _ if byte.is_ascii_alphabetic() => *byte ^ 0x20,
                    _ => *byte,
                };
            }
        }
        Mutation::PercentEncode => {
            let (a, b) = span(rng, len);
            let upper = rng.random_bool(0.5);
            let mut encoded = String::with_capacity((b - a) * 3);
            for &byte in &buf[a..b] {
                let _ = if upper {
                    write!(encoded, "%{byte:02X}")
                } else {
                    write!(encoded, "%{byte:02x}")
                };
            }
            buf.splice(a..b, encoded.into_bytes());
        }
        Mutation::Wrap => {
            let (open, close) = pick(
                rng,
                &[
                    ("\"", "\""),
                    (" ", " "),
                    ("\t", ""),
                    ("", " "),
                    ("\"", ""),
                    ("%20", ""),
                    ("x=", ""),
                    ("", "; Path=/"),
                ],
            );
            buf.splice(0..0, open.bytes());
            buf.extend_from_slice(close.as_bytes());
        }
        Mutation::AppendJunk => {
            let junk = pick(
                rng,
                &[
                    ";", ";%", "; Secure", "%", "%2", "%zz", "%00", "=", "==", "\0", " ", "é",
                ],
            );
            buf.extend_from_slice(junk.as_bytes());
            for _ in 0..rng.random_range(0..3) {
                buf.push(special_byte(rng));
            }
        }
        Mutation::Splice => {
            let (keep, from) = if rng.random_bool(0.3) {
                (boundary.min(len), boundary.min(donor.len()))
            } else {
                (rng.random_range(0..=len), rng.random_range(0..=donor.len()))
            };
            buf.truncate(keep);
            buf.extend_from_slice(&donor[from..]);
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// 1. Cookie values
// ---------------------------------------------------------------------------------------------

/// A codec under test that verifies with a current and an old (rotation) key, and the codecs
/// that make the cookies it is fed.
struct Cookies {
    security: CookieSecurity,
    /// Current key first, old key second: the codec a deployment in mid-rotation runs.
    codec: CookieCodec,
    /// Signs or encrypts with the old key only: cookies issued before the rotation.
    before_rotation: CookieCodec,
    /// A key the codec has never seen.
    stranger: CookieCodec,
    /// The current key, the other security mode.
    other_mode: CookieCodec,
}

/// A valid cookie value and what it must verify to.
struct Valid {
    value: String,
    ticket: Ticket,
    old_key: bool,
}

impl Cookies {
    fn new(rng: &mut StdRng, security: CookieSecurity) -> Self {
        let config = |security| CookieConfig {
            security,
            ..CookieConfig::default()
        };
        let other = match security {
            CookieSecurity::Signed => CookieSecurity::Private,
            CookieSecurity::Private => CookieSecurity::Signed,
        };
        let (current, old) = (key(rng), key(rng));
        Cookies {
            security,
            codec: CookieCodec::new(current.clone(), vec![old.clone()], config(security)),
            before_rotation: CookieCodec::new(old, Vec::new(), config(security)),
            stranger: CookieCodec::new(key(rng), Vec::new(), config(security)),
            other_mode: CookieCodec::new(current, Vec::new(), config(other)),
        }
    }

    fn valid(&self, rng: &mut StdRng) -> Valid {
        let ticket = ticket(rng);
        let old_key = rng.random_bool(0.5);
        let issuer = if old_key {
            &self.before_rotation
        } else {
            &self.codec
        };
        Valid {
            value: issuer.encode(&ticket, None).value().to_owned(),
            ticket,
            old_key,
        }
    }

    /// Well-formed, but with a MAC (or a sealed box) that nobody made with a key we know.
    fn forged(&self, rng: &mut StdRng) -> String {
        let payload = ticket(rng).encode();
        match self.security {
            CookieSecurity::Signed if rng.random_bool(0.2) => payload,
            CookieSecurity::Signed => {
                let mut mac = [0; 32];
                rng.fill_bytes(&mut mac);
                base64(&mac) + &payload
            }
            CookieSecurity::Private => {
                // Nonce, ciphertext as long as the payload, tag.
                let mut sealed = vec![0; 12 + payload.len() + 16];
                rng.fill_bytes(&mut sealed);
                base64(&sealed)
            }
        }
    }

    /// Where a value's two parts meet: MAC | payload, or base64(nonce) | base64(ciphertext).
    fn boundary(&self) -> usize {
        match self.security {
            CookieSecurity::Signed => 44,
            CookieSecurity::Private => 16,
        }
    }
}

fn random_values_never_verify(target: &'static str, security: CookieSecurity) {
    let mut fuzz = Fuzz::new(target);
    let cookies = Cookies::new(&mut fuzz.rng, security);
    for i in 0..fuzz.iters {
        let rng = &mut fuzz.rng;
        let (shape, raw) = match rng.random_range(0..10) {
            0..=6 => {
                let len = length(rng, &[0, 16, 44, 80, 100]);
                ("random_text", random_text(rng, len))
            }
            7 => {
                let cookie = cookies.stranger.encode(&ticket(rng), None);
                ("unknown_key", cookie.value().to_owned())
            }
            8 => {
                let cookie = cookies.other_mode.encode(&ticket(rng), None);
                ("other_mode", cookie.value().to_owned())
            }
            _ => ("forged", cookies.forged(rng)),
        };
        let verified = cookies.codec.verify(&raw);
        assert!(
            verified.is_none(),
            "{}: verified as {verified:?}: {raw:?}",
            fuzz.at(i)
        );
        fuzz.count_in("rejected", shape);
    }
    fuzz.report();
}

fn mutated_cookies_never_verify_to_another_ticket(target: &'static str, security: CookieSecurity) {
    let mut fuzz = Fuzz::new(target);
    let cookies = Cookies::new(&mut fuzz.rng, security);
    let mut pool: Vec<Valid> = (0..64).map(|_| cookies.valid(&mut fuzz.rng)).collect();
    // Shown even when zero: the figures worth reading in the report.
    fuzz.zero(&["verified_as_spliced_cookie", "verified_without_percent"]);
    for i in 0..fuzz.iters {
        let rng = &mut fuzz.rng;
        if i % 16 == 0 {
            let slot = rng.random_range(0..pool.len());
            pool[slot] = cookies.valid(rng);
        }
        let original = rng.random_range(0..pool.len());
        // The cookies whose tickets the result may verify to: the original, and any cookie
        // spliced into it (a splice can rebuild another valid cookie in full).
        let mut sources = vec![original];
        let mut applied = Vec::new();
        let mut buf = pool[original].value.clone().into_bytes();
        let rounds = if rng.random_bool(0.6) {
            1
        } else {
            rng.random_range(2..=5)
        };
        // Some mutations can leave the value as it was (an empty span, the case of a digit):
        // keep going until it differs, so that every input is a real near miss.
        let mut round = 0;
        while round < rounds || buf == pool[original].value.as_bytes() {
            let op = pick(rng, &Mutation::ALL);
            let donor = rng.random_range(0..pool.len());
            if mutate(
                rng,
                &mut buf,
                op,
                pool[donor].value.as_bytes(),
                cookies.boundary(),
            ) {
                sources.push(donor);
            }
            applied.push(op);
            round += 1;
        }
        let raw = String::from_utf8_lossy(&buf).into_owned();

        let verified = cookies.codec.verify(&raw);
        let Some((ticket, old_key)) = verified else {
            assert!(
                pool.iter().all(|valid| valid.value != raw),
                "{}: the valid cookie {raw:?} did not verify",
                fuzz.at(i)
            );
            fuzz.count("rejected");
            continue;
        };
        let source = sources
            .iter()
            .find(|&&s| pool[s].ticket == ticket && pool[s].old_key == old_key);
        let Some(&source) = source else {
            panic!(
                "{}: {raw:?} (mutated by {applied:?} from {:?}) verified as {:?} (old key: \
                 {old_key}), which is not the ticket of any cookie it came from",
                fuzz.at(i),
                pool[original].value,
                ticket
            );
        };
        if raw == pool[source].value {
            // Only a splice can get here: it rebuilt a whole valid cookie.
            fuzz.count("rebuilt_a_valid_cookie");
            continue;
        }
        fuzz.count(if source == original {
            "verified_as_original"
        } else {
            "verified_as_spliced_cookie"
        });
        if !raw.contains('%') {
            fuzz.count("verified_without_percent");
        }
        applied.sort_by_key(|op| op.name());
        applied.dedup();
        for op in applied {
            fuzz.count_in("verified_after", op.name());
        }
    }
    fuzz.report();
}

#[test]
fn random_values_never_verify_as_signed_cookies() {
    random_values_never_verify("random_signed_cookies", CookieSecurity::Signed);
}

#[test]
fn random_values_never_verify_as_private_cookies() {
    random_values_never_verify("random_private_cookies", CookieSecurity::Private);
}

#[test]
fn mutated_signed_cookies_never_verify_to_another_ticket() {
    mutated_cookies_never_verify_to_another_ticket(
        "mutated_signed_cookies",
        CookieSecurity::Signed,
    );
}

#[test]
fn mutated_private_cookies_never_verify_to_another_ticket() {
    mutated_cookies_never_verify_to_another_ticket(
        "mutated_private_cookies",
        CookieSecurity::Private,
    );
}

#[test]
fn the_base64_used_for_forgeries_is_standard_base64() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}

// ---------------------------------------------------------------------------------------------
// 2. The verified payload
// ---------------------------------------------------------------------------------------------

/// The payload grammar written out again, apart from `Ticket::parse`: 36 lowercase hex
/// characters, one dot, 1 to 20 decimal digits whose value fits a `u64`, optionally `.r`
/// (renewed) or `.u` (bound), and optionally `.t` and 1 to 20 digits of a nonzero `u64` (its
/// own time to idle).
fn payload_by_spec(payload: &str) -> Option<Spec> {
    let parts: Vec<&str> = payload.split('.').collect();
    let (id, created, mark, tti) = match parts[..] {
        [id, created] => (id, created, "", None),
        [id, created, mark @ ("r" | "u")] => (id, created, mark, None),
        [id, created, t] if t.starts_with('t') => (id, created, "", Some(&t[1..])),
        [id, created, mark @ ("r" | "u"), t] if t.starts_with('t') => {
            (id, created, mark, Some(&t[1..]))
        }
        _ => return None,
    };
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if id.chars().count() != ID_LEN || !id.chars().all(lower_hex) {
        return None;
    }
    let number = |digits: &str| {
        if digits.is_empty() || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.bytes().try_fold(0_u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    };
    let seconds = number(created)?;
    let tti = match tti {
        Some(digits) => Some(number(digits).filter(|&t| t > 0)?),
        None => None,
    };
    Some((id.to_owned(), seconds, !mark.is_empty(), mark == "u", tti))
}

/// What the grammar reads from a payload: id, created, renewed, bound, own time to idle.
type Spec = (String, u64, bool, bool, Option<u64>);

/// Almost a payload: an id of about the right length with the odd wrong character, a
/// separator that is usually a dot, seconds with leading zeros, stray signs, or at the edge of
/// a `u64`.
fn near_miss_payload(rng: &mut StdRng) -> String {
    let mut s = String::new();
    for _ in 0..ID_LEN - 2 + rng.random_range(0..5) {
        s.push(if rng.random_bool(0.95) {
            char::from(pick(rng, HEX))
        } else {
            pick(
                rng,
                &['A', 'F', 'g', 'G', '.', ' ', '+', '-', '\0', 'é', '٣', '０'],
            )
        });
    }
    s.push_str(pick(rng, &[".", ".", ".", ".", "", "..", ",", "。"]));
    if rng.random_bool(0.2) {
        // The edge of a u64: u64::MAX - 1, u64::MAX, u64::MAX + 1.
        let edge = u128::from(u64::MAX) - 1 + rng.random_range(0..3_u128);
        let _ = write!(s, "{edge}");
    } else {
        for _ in 0..rng.random_range(0..3) {
            if rng.random_bool(0.3) {
                s.push('0');
            }
        }
        for _ in 0..rng.random_range(0..=22) {
            s.push(if rng.random_bool(0.95) {
                char::from(rng.random_range(b'0'..=b'9'))
            } else {
                pick(rng, &['+', '-', '_', ' ', 'e', '٣', '.', '\0'])
            });
        }
    }
    // The renewed and bound marks, and near misses of them.
    s.push_str(pick(
        rng,
        &[
            "", "", "", ".r", ".r", ".u", ".u", ".R", ".r.r", "r", ".x", ".", ".r\0", ".u.r",
        ],
    ));
    // The own time to idle, and near misses of it.
    s.push_str(pick(
        rng,
        &[
            "",
            "",
            "",
            ".t60",
            ".t1",
            ".t0",
            ".t",
            ".T60",
            "t60",
            ".t-1",
            ".t18446744073709551616",
        ],
    ));
    s
}

#[test]
fn payload_parse_agrees_with_its_grammar_and_round_trips() {
    let mut fuzz = Fuzz::new("ticket_payloads");
    for i in 0..fuzz.iters {
        let rng = &mut fuzz.rng;
        let (shape, payload) = match rng.random_range(0..4) {
            0 => ("canonical", ticket(rng).encode()),
            1 => ("near_miss", near_miss_payload(rng)),
            2 => {
                let mut buf = ticket(rng).encode().into_bytes();
                let donor = near_miss_payload(rng);
                for _ in 0..rng.random_range(1..=3) {
                    let op = pick(rng, &Mutation::ALL);
                    mutate(rng, &mut buf, op, donor.as_bytes(), ID_LEN);
                }
                ("mutated", String::from_utf8_lossy(&buf).into_owned())
            }
            _ => {
                let len = length(rng, &[0, ID_LEN, ID_LEN + 11, ID_LEN + 21]);
                ("random", random_text(rng, len))
            }
        };

        let parsed = Ticket::parse(&payload);
        let spec = payload_by_spec(&payload);
        assert_eq!(
            parsed
                .as_ref()
                .map(|t| (t.id.to_string(), t.created, t.renewed, t.bound, t.tti)),
            spec,
            "{}: Ticket::parse and the grammar disagree on {payload:?}",
            fuzz.at(i)
        );
        let Some(ticket) = parsed else {
            assert_ne!(shape, "canonical", "{}: {payload:?}", fuzz.at(i));
            fuzz.count_in("rejected", shape);
            continue;
        };
        assert!(
            ticket.id.len() == ID_LEN && ticket.id.bytes().all(|b| HEX.contains(&b)),
            "{}: {payload:?} parsed to id {:?}",
            fuzz.at(i),
            ticket.id
        );
        assert_eq!(
            Ticket::parse(&ticket.encode()).as_ref(),
            Some(&ticket),
            "{}: {payload:?} does not round-trip",
            fuzz.at(i)
        );
        if ticket.encode() == payload {
            fuzz.count_in("accepted", shape);
        } else {
            // Only the numbers can differ, by leading zeros (the grammar check above pinned
            // the id and the values): accepted, but not what `encode` would write.
            assert_ne!(shape, "canonical", "{}: {payload:?}", fuzz.at(i));
            fuzz.count_in("accepted_leading_zeros", shape);
        }
    }
    fuzz.report();
}

// ---------------------------------------------------------------------------------------------
// 3. Stored values
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    visits: u32,
    tags: Vec<String>,
    admin: Option<bool>,
}

/// A type a handler might ask `get` for, and a generator of its values.
trait Stored: Serialize + DeserializeOwned + PartialEq + Debug {
    const NAME: &'static str;
    /// Whether a decoded value must come back equal after a round trip (floats inside a
    /// `Value` need not: serde_json's default float parsing may differ by one ulp).
    const EXACT: bool = true;
    fn random(rng: &mut StdRng) -> Self;
}

fn short_text(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..24);
    random_text(rng, len)
}

fn json_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 if rng.random_bool(0.5) => Value::from(rng.random::<i64>()),
        2 => Value::from(rng.random::<u64>()),
        3 => Value::from(f64::from_bits(rng.random())),
        4 => Value::String(short_text(rng)),
        5 => (0..rng.random_range(0..5))
            .map(|_| json_value(rng, depth - 1))
            .collect(),
        _ => Value::Object(
            (0..rng.random_range(0..5))
                .map(|_| (short_text(rng), json_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

impl Stored for Value {
    const NAME: &'static str = "value";
    const EXACT: bool = false;
    fn random(rng: &mut StdRng) -> Self {
        json_value(rng, 3)
    }
}

impl Stored for String {
    const NAME: &'static str = "string";
    fn random(rng: &mut StdRng) -> Self {
        short_text(rng)
    }
}

impl Stored for i64 {
    const NAME: &'static str = "i64";
    fn random(rng: &mut StdRng) -> Self {
        match rng.random_range(0..4) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => rng.random_range(-1000..1000),
            _ => rng.random(),
        }
    }
}

impl Stored for Vec<String> {
    const NAME: &'static str = "vec_string";
    fn random(rng: &mut StdRng) -> Self {
        (0..rng.random_range(0..5))
            .map(|_| short_text(rng))
            .collect()
    }
}

impl Stored for Profile {
    const NAME: &'static str = "profile";
    fn random(rng: &mut StdRng) -> Self {
        Profile {
            name: short_text(rng),
            visits: rng.random(),
            tags: Vec::random(rng),
            admin: [None, Some(false), Some(true)][rng.random_range(0..3)],
        }
    }
}

/// Inputs that sit on serde_json's edges: nesting past its recursion limit, integers just past
/// `i64`, infinite floats, lone surrogates, invalid UTF-8, duplicate and wrongly typed fields.
fn edge_json(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => {
            let depth = pick(rng, &[127, 128, 129, 1_000, 100_000]);
            pick(rng, &["[", "{\"a\":", "[{\"tags\":"])
                .repeat(depth)
                .into_bytes()
        }
        _ => pick(
            rng,
            &[
                &b"9223372036854775807"[..],
                b"9223372036854775808",
                b"-9223372036854775808",
                b"-9223372036854775809",
                b"18446744073709551616",
                b"1e400",
                b"-1e400",
                b"-0",
                b"1.0",
                b"1E2",
                b"\"\\ud800\"",
                b"\"\\udc00\\ud800\"",
                b"\"\\u0000\"",
                b"\"\xff\"",
                b"\"\xc3\"",
                b"\xef\xbb\xbf\"bom\"",
                b"  \"padded\"  ",
                b"\"a\" \"b\"",
                b"[\"a\",]",
                b"{\"name\":\"a\",\"visits\":4294967296,\"tags\":[],\"admin\":null}",
                b"{\"name\":\"a\",\"name\":\"b\",\"visits\":1,\"tags\":[],\"admin\":true}",
                b"{\"name\":\"a\",\"visits\":-1,\"tags\":[],\"admin\":true}",
                b"{\"name\":\"a\",\"visits\":1,\"tags\":[null]}",
                b"",
                b"null",
            ],
        )
        .to_vec(),
    }
}

/// One input decoded as `T`: a failure must be a serialisation error naming the key, a success
/// must survive a round trip.
fn decode_one<T: Stored>(fuzz: &mut Fuzz, i: u64) {
    let rng = &mut fuzz.rng;
    let key = if rng.random_bool(0.9) {
        "profile".to_owned()
    } else {
        short_text(rng)
    };
    let bytes = match rng.random_range(0..6) {
        0 => {
            let mut bytes = vec![0; length(rng, &[0, 1, 8, 64])];
            rng.fill_bytes(&mut bytes);
            bytes
        }
        1 => {
            let len = length(rng, &[0, 1, 8, 64]);
            random_text(rng, len).into_bytes()
        }
        2 => serde_json::to_vec(&json_value(rng, 4)).unwrap(),
        3 => {
            let mut bytes = serde_json::to_vec(&T::random(rng)).unwrap();
            let donor = serde_json::to_vec(&T::random(rng)).unwrap();
            for _ in 0..rng.random_range(1..=3) {
                let op = pick(rng, &Mutation::ALL);
                let boundary = rng.random_range(0..=bytes.len());
                mutate(rng, &mut bytes, op, &donor, boundary);
            }
            bytes
        }
        4 => edge_json(rng),
        _ => serde_json::to_vec(&T::random(rng)).unwrap(),
    };

    match decode::<T>(&key, &bytes) {
        Ok(value) => {
            let again = serde_json::to_vec(&value).unwrap();
            let back = decode::<T>(&key, &again);
            assert!(
                back.as_ref().is_ok_and(|back| !T::EXACT || *back == value),
                "{}: {} decoded from {:?} to {value:?}, which does not round-trip: {back:?}",
                fuzz.at(i),
                T::NAME,
                String::from_utf8_lossy(&bytes)
            );
            fuzz.count_in(T::NAME, "decoded");
        }
        Err(Error::Serialization { key: named, .. }) => {
            assert_eq!(named, key, "{}: {:?}", fuzz.at(i), bytes);
            fuzz.count_in(T::NAME, "serialization_error");
        }
        Err(other) => panic!(
            "{}: decoding {:?} as {} failed with {other:?}, not a serialisation error",
            fuzz.at(i),
            bytes,
            T::NAME
        ),
    }
}

#[test]
fn decoding_any_bytes_never_panics_and_errors_name_the_key() {
    let mut fuzz = Fuzz::new("stored_values");
    for i in 0..fuzz.iters {
        match i % 5 {
            0 => decode_one::<Value>(&mut fuzz, i),
            1 => decode_one::<String>(&mut fuzz, i),
            2 => decode_one::<i64>(&mut fuzz, i),
            3 => decode_one::<Vec<String>>(&mut fuzz, i),
            _ => decode_one::<Profile>(&mut fuzz, i),
        }
    }
    fuzz.report();
}

// ---------------------------------------------------------------------------------------------
// 4. Keys
// ---------------------------------------------------------------------------------------------

/// A key of about a chosen byte length, usually near the 256-byte limit, in characters of one
/// UTF-8 width or mixed (so multi-byte characters straddle the limit), sometimes with NULs.
fn key_text(rng: &mut StdRng) -> String {
    let target = match rng.random_range(0..20) {
        0..=1 => rng.random_range(0..=2),
        2..=13 => MAX_KEY_BYTES - 4 + rng.random_range(0..9),
        14..=18 => rng.random_range(0..600),
        _ => rng.random_range(600..2_000),
    };
    let mut key = String::with_capacity(target + 4);
    if rng.random_bool(0.15) {
        key.push('\0');
    }
    let width = rng.random_range(0..5);
    while key.len() < target {
        key.push(match width {
            1 => char::from(rng.random_range(0..0x80_u8)),
            2 => rng.random_range('\u{80}'..='\u{7ff}'),
            3 => rng.random_range('\u{800}'..='\u{ffff}'),
            4 => rng.random_range('\u{10000}'..=char::MAX),
            _ => any_char(rng),
        });
    }
    key
}

#[test]
fn key_check_accepts_exactly_1_to_256_bytes_not_starting_with_nul() {
    let mut fuzz = Fuzz::new("keys");
    for i in 0..fuzz.iters {
        let key = key_text(&mut fuzz.rng);
        let expected = (1..=MAX_KEY_BYTES).contains(&key.len()) && !key.starts_with('\0');
        match check_key(&key) {
            Ok(()) => {
                assert!(expected, "{}: accepted {key:?}", fuzz.at(i));
                fuzz.count("accepted");
            }
            Err(Error::InvalidKey(shown)) => {
                assert!(!expected, "{}: rejected {key:?}", fuzz.at(i));
                let prefix: String = key.chars().take(64).collect();
                assert_eq!(shown, prefix, "{}: the error shows {shown:?}", fuzz.at(i));
                fuzz.count("rejected");
            }
            Err(other) => panic!("{}: {key:?} failed with {other:?}", fuzz.at(i)),
        }
        // The cases where counting characters instead of bytes would go wrong.
        let chars = key.chars().count();
        if key.len() > MAX_KEY_BYTES && chars <= MAX_KEY_BYTES {
            fuzz.count_in("edge", "over_256_bytes_in_at_most_256_chars");
        }
        if key.len() == MAX_KEY_BYTES && chars < MAX_KEY_BYTES {
            fuzz.count_in("edge", "exactly_256_bytes_multibyte");
        }
        if key.starts_with('\0') {
            fuzz.count_in("edge", "leading_nul");
        } else if key.contains('\0') {
            fuzz.count_in("edge", "inner_nul");
        }
    }
    fuzz.report();
}
