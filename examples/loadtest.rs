//! A closed-loop HTTP/1.1 load tool for apps that keep a session per user.
//!
//! Each virtual user logs in once (to get its session cookie), then sends a request, waits for the
//! whole answer, verifies it and sends the next one, over a keep-alive connection. Answers are
//! verified so that a broken server cannot look fast (`--check counter` proves that every
//! increment of a per-session counter was stored and read back).
//!
//! The tool runs on one thread (a tokio current-thread runtime) with a small hand-written HTTP/1.1
//! client, so that it can be pinned to one core while the server runs on another:
//!
//! ```text
//! taskset -c 1 cargo run --release --example loadtest -- \
//!     --url http://127.0.0.1:8080 --login /login --path /incr --check counter \
//!     --users 64 --duration 10 --warmup 1 --redis-url redis://127.0.0.1:6390 --json
//! ```
//!
//! With `--redis-url`, Redis `INFO` is read just before and just after the measured window and
//! the deltas are printed per request (commands by name, CPU, bytes, read calls). With
//! `--server-pid`, the server's resident memory is sampled once a second and its CPU time
//! (user and kernel, all threads) over the measured window is printed per request.
//!
//! The exit status is 0 when every request succeeded, 1 when any error was counted, 2 for a bad
//! command line or an unreachable `--redis-url`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

const USAGE: &str = "\
usage: loadtest [options]
  --url URL           base URL, http only (default http://127.0.0.1:8080)
  --login PATH        path each virtual user calls once first; '' for none (default /login)
  --path PATH         path to hammer (default /incr)
  --users N           virtual users, each with its own cookie jar (default 64)
  --connections N     keep-alive connections (default = users; users are spread over them)
  --duration SECS     measured window (default 10)
  --warmup SECS       not counted (default 1)
  --timeout SECS      per-request timeout, counted as an error (default 5)
  --check KIND        status | json | counter (default status)
  --redis-url URL     redis://[[user]:pass@]host:port to read INFO deltas from
  --server-pid PID    the server's pid: its VmRSS is sampled once a second and its CPU time
                      (user and kernel, from /proc/PID/stat) is reported per request
                      (--rss-pid is the same)
  --label NAME        name for the report (default: the path)
  --json              also print one JSON line with the results";

/// At most this many distinct error messages of each kind are kept to show what went wrong.
const SAMPLES_PER_KIND: usize = 2;
/// A response header section larger than this is treated as a broken answer.
const MAX_HEADER_BYTES: usize = 1 << 20;
/// A body larger than this is treated as a broken answer.
const MAX_BODY_BYTES: u64 = 64 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    Status,
    Json,
    Counter,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Status => "status",
            Check::Json => "json",
            Check::Counter => "counter",
        }
    }
}

struct Args {
    url: String,
    /// `host[:port]` as written in the URL, sent as the `Host` header.
    host_header: String,
    /// Path prefix from the URL (without a trailing slash), prepended to `--login`/`--path`.
    prefix: String,
    login: Option<String>,
    path: String,
    users: usize,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    check: Check,
    redis_url: Option<String>,
    rss_pid: Option<u32>,
    label: String,
    json: bool,
}

fn parse_secs(name: &str, v: &str) -> Result<Duration, String> {
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{name}: not a number of seconds: {v:?}"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{name}: out of range: {v}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_count(name: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name}: expected a number from 1 to 1000000, got {v:?}"
        )),
    }
}

fn parse_args(raw: Vec<String>) -> Result<Args, String> {
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    let mut json = false;
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let Some(name) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        if name == "json" {
            json = true;
            continue;
        }
        if name == "help" || name == "h" {
            return Err(String::new());
        }
        const KNOWN: &[&str] = &[
            "url",
            "login",
            "path",
            "users",
            "connections",
            "duration",
            "warmup",
            "timeout",
            "check",
            "redis-url",
            "rss-pid",
            "server-pid",
            "label",
        ];
        let key = name.split_once('=').map_or(name, |(k, _)| k).to_string();
        if !KNOWN.contains(&key.as_str()) {
            return Err(format!("unknown option --{key}"));
        }
        let value = match name.split_once('=') {
            Some((_, v)) => v.to_string(),
            None => it.next().ok_or_else(|| format!("--{name} needs a value"))?,
        };
        opts.insert(key, value);
    }
    let get = |k: &str| opts.get(k).map(String::as_str);

    let url = get("url").unwrap_or("http://127.0.0.1:8080").to_string();
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http:// (got {url:?})"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("--url: unsupported authority in {url:?}"));
    }
    let normalize_path = |p: &str| {
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        }
    };
    let login = match get("login") {
        Some("") | Some("none") => None,
        Some(p) => Some(normalize_path(p)),
        None => Some("/login".to_string()),
    };
    let path = normalize_path(get("path").unwrap_or("/incr"));
    let users = parse_count("--users", get("users").unwrap_or("64"))?;
    let connections = match get("connections") {
        Some(v) => parse_count("--connections", v)?.min(users),
        None => users,
    };
    let duration = parse_secs("--duration", get("duration").unwrap_or("10"))?;
    if duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    let warmup = parse_secs("--warmup", get("warmup").unwrap_or("1"))?;
    let timeout = parse_secs("--timeout", get("timeout").unwrap_or("5"))?;
    if timeout.is_zero() {
        return Err("--timeout must be more than 0".into());
    }
    let check = match get("check").unwrap_or("status") {
        "status" => Check::Status,
        "json" => Check::Json,
        "counter" => Check::Counter,
        other => {
            return Err(format!(
                "--check: expected status|json|counter, got {other:?}"
            ))
        }
    };
    let rss_pid = match get("server-pid").or_else(|| get("rss-pid")) {
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| format!("--server-pid: not a pid: {v:?}"))?,
        ),
        None => None,
    };
    Ok(Args {
        host_header: authority.to_string(),
        prefix: prefix.to_string(),
        label: get("label").unwrap_or(&path).to_string(),
        url,
        login,
        path,
        users,
        connections,
        duration,
        warmup,
        timeout,
        check,
        redis_url: get("redis-url").map(str::to_string),
        rss_pid,
        json,
    })
}

// ---------------------------------------------------------------------------------------------
// Errors and per-connection tallies

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Connect,
    Io,
    Timeout,
    Status,
    Body,
    CounterMismatch,
}

const KINDS: [Kind; 6] = [
    Kind::Connect,
    Kind::Io,
    Kind::Timeout,
    Kind::Status,
    Kind::Body,
    Kind::CounterMismatch,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Io => "io",
            Kind::Timeout => "timeout",
            Kind::Status => "status",
            Kind::Body => "body",
            Kind::CounterMismatch => "counter-mismatch",
        }
    }
}

struct Failure {
    kind: Kind,
    msg: String,
}

impl Failure {
    fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Failure {
            kind,
            msg: msg.into(),
        }
    }
}

#[derive(Default, Clone)]
struct ErrorCounts {
    by_kind: [u64; KINDS.len()],
}

impl ErrorCounts {
    fn add(&mut self, kind: Kind) {
        self.by_kind[kind as usize] += 1;
    }
    fn total(&self) -> u64 {
        self.by_kind.iter().sum()
    }
    fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind.iter()) {
            *a += b;
        }
    }
    fn describe(&self) -> String {
        if self.total() == 0 {
            return "none".to_string();
        }
        let mut s = String::new();
        for k in KINDS {
            let n = self.by_kind[k as usize];
            if n > 0 {
                let _ = write!(s, "{}={}  ", k.name(), n);
            }
        }
        s.trim_end().to_string()
    }
    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for k in KINDS {
            m.insert(k.name().to_string(), json!(self.by_kind[k as usize]));
        }
        serde_json::Value::Object(m)
    }
}

/// What one connection task brings back.
#[derive(Default)]
struct Tally {
    /// Latency in µs of every successful request that started inside the measured window.
    latencies_us: Vec<u32>,
    /// Responses completed in the window, successful or not.
    completed: u64,
    /// Errors while the request started inside the measured window.
    errors: ErrorCounts,
    /// Errors during login and warmup.
    setup_errors: ErrorCounts,
    samples: Vec<String>,
    reconnects: u64,
    users_without_cookie: u64,
    users_not_logged_in: u64,
}

impl Tally {
    fn record_error(&mut self, in_window: bool, f: &Failure) {
        if in_window {
            self.errors.add(f.kind);
        } else {
            self.setup_errors.add(f.kind);
        }
        let prefix = format!("{}: ", f.kind.name());
        let same_kind = self
            .samples
            .iter()
            .filter(|s| s.starts_with(&prefix))
            .count();
        if same_kind < SAMPLES_PER_KIND {
            let line = format!("{prefix}{}", f.msg);
            if !self.samples.contains(&line) {
                self.samples.push(line);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cookie jar

/// One virtual user's cookies. Every `Set-Cookie` of every answer is applied; a cookie is removed
/// when it comes back with `Max-Age=0` (or negative) or an empty value.
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String)>,
    /// Bumped on every change, so the cached request bytes know when to rebuild.
    version: u64,
}

impl Jar {
    fn apply_set_cookie(&mut self, raw: &[u8]) {
        let Ok(text) = std::str::from_utf8(raw) else {
            return;
        };
        let mut parts = text.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let name = name.trim();
        let value = value.trim().trim_matches('"');
        if name.is_empty() {
            return;
        }
        let expired = parts.any(|attr| {
            attr.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("max-age")
                    && v.trim().parse::<i64>().is_ok_and(|n| n <= 0)
            })
        });
        let pos = self.cookies.iter().position(|(n, _)| n == name);
        if expired || value.is_empty() {
            if let Some(i) = pos {
                self.cookies.remove(i);
                self.version += 1;
            }
            return;
        }
        match pos {
            Some(i) if self.cookies[i].1 == value => {}
            Some(i) => {
                self.cookies[i].1 = value.to_string();
                self.version += 1;
            }
            None => {
                self.cookies.push((name.to_string(), value.to_string()));
                self.version += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 client connection

struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Read buffer; `buf[..filled]` holds bytes not yet consumed.
    buf: Vec<u8>,
    filled: usize,
    /// Body of the last response.
    body: Vec<u8>,
    reconnects: u64,
    ever_connected: bool,
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Conn {
            addr,
            stream: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
            body: Vec::with_capacity(1024),
            reconnects: 0,
            ever_connected: false,
        }
    }

    fn drop_stream(&mut self) {
        self.stream = None;
        self.filled = 0;
    }

    /// Reads more bytes into the buffer, growing it if full. `Ok(false)` means EOF.
    async fn fill(&mut self) -> Result<bool, Failure> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= MAX_HEADER_BYTES + MAX_BODY_BYTES as usize {
                return Err(Failure::new(Kind::Io, "response too large"));
            }
            let new_len = self.buf.len() * 2;
            self.buf.resize(new_len, 0);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::new(Kind::Io, "not connected"));
        };
        match stream.read(&mut self.buf[self.filled..]).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.filled += n;
                Ok(true)
            }
            Err(e) => Err(Failure::new(Kind::Io, format!("read: {e}"))),
        }
    }

    /// Makes sure `buf[..at + n]` is filled; EOF first is an error.
    async fn need(&mut self, at: usize, n: usize) -> Result<(), Failure> {
        while self.filled < at + n {
            if !self.fill().await? {
                return Err(Failure::new(Kind::Io, "connection closed mid-body"));
            }
        }
        Ok(())
    }

    /// Drops `n` consumed bytes from the front of the buffer.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Sends one request and reads the whole response into `self.body`; returns the status.
    /// Every `Set-Cookie` is applied to `jar`. On error the connection is dropped (the caller
    /// reconnects on the next request).
    async fn round_trip(&mut self, request: &[u8], jar: &mut Jar) -> Result<u16, Failure> {
        let result = self.round_trip_inner(request, jar).await;
        if result.is_err() {
            self.drop_stream();
        }
        result
    }

    async fn round_trip_inner(&mut self, request: &[u8], jar: &mut Jar) -> Result<u16, Failure> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| Failure::new(Kind::Connect, format!("{}: {e}", self.addr)))?;
            // Small requests and answers: do not let Nagle delay them.
            let _ = stream.set_nodelay(true);
            if self.ever_connected {
                self.reconnects += 1;
            }
            self.ever_connected = true;
            self.stream = Some(stream);
            self.filled = 0;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::new(Kind::Io, "not connected"));
        };
        stream
            .write_all(request)
            .await
            .map_err(|e| Failure::new(Kind::Io, format!("write: {e}")))?;

        // Header section.
        let (status, header_len, framing, close) = loop {
            if self.filled > 0 {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[..self.filled]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        let mut framing = None;
                        let mut close = resp.version == Some(0);
                        for h in resp.headers.iter() {
                            if h.name.eq_ignore_ascii_case("set-cookie") {
                                jar.apply_set_cookie(h.value);
                            } else if h.name.eq_ignore_ascii_case("content-length") {
                                if !matches!(framing, Some(Framing::Chunked)) {
                                    let len = std::str::from_utf8(h.value)
                                        .ok()
                                        .and_then(|s| s.trim().parse::<u64>().ok())
                                        .ok_or_else(|| {
                                            Failure::new(Kind::Io, "bad Content-Length")
                                        })?;
                                    framing = Some(Framing::Length(len));
                                }
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                if h.value
                                    .windows(7)
                                    .any(|w| w.eq_ignore_ascii_case(b"chunked"))
                                {
                                    framing = Some(Framing::Chunked);
                                }
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                if h.value.eq_ignore_ascii_case(b"close") {
                                    close = true;
                                } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                                    close = false;
                                }
                            }
                        }
                        let framing = match framing {
                            Some(f) => f,
                            None if status < 200 || status == 204 || status == 304 => {
                                Framing::Length(0)
                            }
                            None => Framing::UntilClose,
                        };
                        break (status, n, framing, close);
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.filled >= MAX_HEADER_BYTES {
                            return Err(Failure::new(Kind::Io, "response headers too large"));
                        }
                    }
                    Err(e) => return Err(Failure::new(Kind::Io, format!("bad response: {e}"))),
                }
            }
            if !self.fill().await? {
                return Err(Failure::new(
                    Kind::Io,
                    if self.filled == 0 {
                        "connection closed before the response"
                    } else {
                        "connection closed mid-headers"
                    },
                ));
            }
        };

        // Body.
        self.body.clear();
        let mut close = close;
        match framing {
            Framing::Length(len) => {
                if len > MAX_BODY_BYTES {
                    return Err(Failure::new(Kind::Io, "body too large"));
                }
                let len = len as usize;
                self.need(header_len, len).await?;
                self.body
                    .extend_from_slice(&self.buf[header_len..header_len + len]);
                self.consume(header_len + len);
            }
            Framing::Chunked => {
                let mut pos = header_len;
                loop {
                    let (idx, size) = loop {
                        match httparse::parse_chunk_size(&self.buf[pos..self.filled]) {
                            Ok(httparse::Status::Complete(v)) => break v,
                            Ok(httparse::Status::Partial) => {
                                if !self.fill().await? {
                                    return Err(Failure::new(Kind::Io, "closed mid-chunk"));
                                }
                            }
                            Err(_) => return Err(Failure::new(Kind::Io, "bad chunk size")),
                        }
                    };
                    pos += idx;
                    if size == 0 {
                        // Optional trailers, then an empty line.
                        loop {
                            let line_end = loop {
                                if let Some(i) = self.buf[pos..self.filled]
                                    .windows(2)
                                    .position(|w| w == b"\r\n")
                                {
                                    break pos + i;
                                }
                                if !self.fill().await? {
                                    return Err(Failure::new(Kind::Io, "closed in trailers"));
                                }
                            };
                            let empty = line_end == pos;
                            pos = line_end + 2;
                            if empty {
                                break;
                            }
                        }
                        break;
                    }
                    if self.body.len() as u64 + size > MAX_BODY_BYTES {
                        return Err(Failure::new(Kind::Io, "body too large"));
                    }
                    let size = size as usize;
                    self.need(pos, size + 2).await?;
                    if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                        return Err(Failure::new(Kind::Io, "chunk not followed by CRLF"));
                    }
                    self.body.extend_from_slice(&self.buf[pos..pos + size]);
                    pos += size + 2;
                }
                self.consume(pos);
            }
            Framing::UntilClose => {
                while self.fill().await? {
                    if (self.filled - header_len) as u64 > MAX_BODY_BYTES {
                        return Err(Failure::new(Kind::Io, "body too large"));
                    }
                }
                self.body
                    .extend_from_slice(&self.buf[header_len..self.filled]);
                self.filled = 0;
                close = true;
            }
        }
        if close {
            self.drop_stream();
        }
        Ok(status)
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual users

struct User {
    jar: Jar,
    /// Request bytes for the hammered path with the current cookies; rebuilt when the jar changes.
    request: Vec<u8>,
    request_version: Option<u64>,
    logged_in: bool,
    /// Last counter value seen (`--check counter`).
    last_counter: Option<u64>,
    /// A request failed after it may have reached the server, so the next counter may have
    /// skipped one value.
    counter_uncertain: bool,
}

impl User {
    fn new() -> Self {
        User {
            jar: Jar::default(),
            request: Vec::with_capacity(256),
            request_version: None,
            logged_in: false,
            last_counter: None,
            counter_uncertain: false,
        }
    }
}

fn build_request(out: &mut Vec<u8>, path: &str, host: &str, jar: &Jar) {
    out.clear();
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !jar.cookies.is_empty() {
        out.extend_from_slice(b"Cookie: ");
        for (i, (n, v)) in jar.cookies.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(n.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Deserialize)]
struct CounterBody {
    counter: u64,
}

/// Checks one response of the hammered path against `--check`.
fn verify(check: Check, status: u16, body: &[u8], user: &mut User) -> Result<(), Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::new(Kind::Status, format!("HTTP {status}")));
    }
    match check {
        Check::Status => Ok(()),
        Check::Json => serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map(|_| ())
            .map_err(|e| Failure::new(Kind::Body, format!("not JSON: {e}"))),
        Check::Counter => {
            let n = serde_json::from_slice::<CounterBody>(body)
                .map_err(|e| {
                    let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
                    Failure::new(
                        Kind::Body,
                        format!("expected {{\"counter\":N}}: {e}: {shown}"),
                    )
                })?
                .counter;
            let uncertain = std::mem::take(&mut user.counter_uncertain);
            let ok = match user.last_counter {
                None => n >= 1,
                Some(last) => n == last + 1 || (uncertain && n == last + 2),
            };
            let prev = user.last_counter.replace(n);
            if ok {
                Ok(())
            } else {
                Err(Failure::new(
                    Kind::CounterMismatch,
                    match prev {
                        Some(p) => format!("counter went from {p} to {n}"),
                        None => format!("first counter after login was {n}"),
                    },
                ))
            }
        }
    }
}

struct Plan {
    host_header: String,
    login_path: Option<String>,
    path: String,
    check: Check,
    timeout: Duration,
    measure_start: Instant,
    end: Instant,
}

/// Outcome of one bounded round trip.
enum Outcome {
    Done(Result<u16, Failure>),
    /// The run's end came first; the request is not counted.
    Ended,
}

async fn bounded_round_trip(
    conn: &mut Conn,
    request: &[u8],
    jar: &mut Jar,
    plan: &Plan,
) -> Outcome {
    let req_deadline = Instant::now() + plan.timeout;
    let deadline = req_deadline.min(plan.end);
    match timeout_at(deadline, conn.round_trip(request, jar)).await {
        Ok(r) => Outcome::Done(r),
        Err(_) => {
            conn.drop_stream();
            if deadline >= plan.end {
                Outcome::Ended
            } else {
                Outcome::Done(Err(Failure::new(
                    Kind::Timeout,
                    "no complete answer in time",
                )))
            }
        }
    }
}

/// After an error, wait a little before the next try so a dead server does not spin the CPU.
async fn backoff(plan: &Plan) {
    sleep_until((Instant::now() + Duration::from_millis(50)).min(plan.end)).await;
}

/// One connection, shared round-robin by `n_users` virtual users. Stops by itself at `plan.end`.
async fn run_connection(addr: SocketAddr, n_users: usize, plan: std::sync::Arc<Plan>) -> Tally {
    let plan = &*plan;
    let mut conn = Conn::new(addr);
    let mut tally = Tally::default();
    let mut users: Vec<User> = (0..n_users).map(|_| User::new()).collect();
    let mut login_request = Vec::with_capacity(256);

    // Log every user in once (during warmup, usually); retry until it works or the run ends.
    if let Some(login) = &plan.login_path {
        'users: for user in users.iter_mut() {
            while Instant::now() < plan.end {
                build_request(&mut login_request, login, &plan.host_header, &user.jar);
                let in_window = Instant::now() >= plan.measure_start;
                match bounded_round_trip(&mut conn, &login_request, &mut user.jar, plan).await {
                    Outcome::Ended => break 'users,
                    Outcome::Done(Ok(status)) if (200..300).contains(&status) => {
                        user.logged_in = true;
                        if user.jar.cookies.is_empty() {
                            tally.users_without_cookie += 1;
                        }
                        continue 'users;
                    }
                    Outcome::Done(Ok(status)) => {
                        let f = Failure::new(Kind::Status, format!("login answered HTTP {status}"));
                        tally.record_error(in_window, &f);
                        backoff(plan).await;
                    }
                    Outcome::Done(Err(f)) => {
                        tally.record_error(in_window, &f);
                        backoff(plan).await;
                    }
                }
            }
        }
    } else {
        for user in users.iter_mut() {
            user.logged_in = true;
        }
    }
    tally.users_not_logged_in = users.iter().filter(|u| !u.logged_in).count() as u64;

    let mut next = 0usize;
    while Instant::now() < plan.end {
        let user = &mut users[next];
        next = (next + 1) % n_users;
        if !user.logged_in {
            continue;
        }
        if user.request_version != Some(user.jar.version) {
            build_request(&mut user.request, &plan.path, &plan.host_header, &user.jar);
            user.request_version = Some(user.jar.version);
        }
        let started = Instant::now();
        let in_window = started >= plan.measure_start;
        let request = std::mem::take(&mut user.request);
        let outcome = bounded_round_trip(&mut conn, &request, &mut user.jar, plan).await;
        user.request = request;
        let result = match outcome {
            Outcome::Ended => break,
            Outcome::Done(r) => r,
        };
        let elapsed = started.elapsed();
        if in_window {
            tally.completed += 1;
        }
        let verdict = result.and_then(|status| verify(plan.check, status, &conn.body, user));
        match verdict {
            Ok(()) => {
                if in_window {
                    tally
                        .latencies_us
                        .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(f) => {
                if matches!(f.kind, Kind::Io | Kind::Timeout) {
                    user.counter_uncertain = true;
                }
                let retry_later = matches!(f.kind, Kind::Connect | Kind::Io | Kind::Timeout);
                tally.record_error(in_window, &f);
                if retry_later {
                    backoff(plan).await;
                }
            }
        }
    }
    // A run that ended in the middle of a login leaves the later users unused.
    tally.reconnects = conn.reconnects;
    tally
}

// ---------------------------------------------------------------------------------------------
// Redis INFO over raw RESP

struct RedisInfo {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One `INFO` snapshot: `cmdstat_*` calls by command, and the numeric fields of the other sections.
struct InfoSnapshot {
    calls: BTreeMap<String, u64>,
    fields: BTreeMap<String, f64>,
    /// Bytes of the `INFO` request we sent and of its reply, to take our own traffic out.
    request_bytes: u64,
    reply_bytes: u64,
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    out
}

impl RedisInfo {
    async fn connect(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("--redis-url must start with redis:// (got {url:?})"))?;
        let rest = rest.split('/').next().unwrap_or(rest);
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let hostport = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let connect = TcpStream::connect(&hostport);
        let stream = tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| format!("redis {hostport}: connect timed out"))?
            .map_err(|e| format!("redis {hostport}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut this = RedisInfo {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        };
        if let Some(auth) = auth {
            let (user, pass) = match auth.split_once(':') {
                Some((u, p)) if !u.is_empty() => (Some(u), p),
                Some((_, p)) => (None, p),
                None => (None, auth),
            };
            let cmd = match user {
                Some(u) => resp_command(&["AUTH", u, pass]),
                None => resp_command(&["AUTH", pass]),
            };
            this.call(&cmd).await?;
        }
        Ok(this)
    }

    /// Sends one command and returns the reply payload (bulk or simple string) and its size on
    /// the wire.
    async fn call(&mut self, cmd: &[u8]) -> Result<(Vec<u8>, u64), String> {
        let fut = async {
            self.stream
                .write_all(cmd)
                .await
                .map_err(|e| format!("redis write: {e}"))?;
            self.buf.clear();
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line = &self.buf[..i];
                    match line.first() {
                        Some(b'+') => return Ok((line[1..].to_vec(), (i + 2) as u64)),
                        Some(b'-') => {
                            return Err(format!("redis: {}", String::from_utf8_lossy(line)))
                        }
                        Some(b'$') => {
                            let len: usize = std::str::from_utf8(&line[1..])
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .ok_or("redis: bad bulk length")?;
                            let total = i + 2 + len + 2;
                            if self.buf.len() >= total {
                                return Ok((self.buf[i + 2..i + 2 + len].to_vec(), total as u64));
                            }
                        }
                        _ => return Err("redis: unexpected reply".to_string()),
                    }
                }
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("redis read: {e}"))?;
                if n == 0 {
                    return Err("redis closed the connection".to_string());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(3), fut)
            .await
            .map_err(|_| "redis: INFO timed out".to_string())?
    }

    async fn snapshot(&mut self) -> Result<InfoSnapshot, String> {
        // One INFO with three sections, so that our own traffic between two snapshots is exactly
        // one request and one reply (taken out below).
        let cmd = resp_command(&["INFO", "commandstats", "stats", "cpu"]);
        let (text, reply_bytes) = self.call(&cmd).await?;
        let text = String::from_utf8_lossy(&text);
        let mut calls = BTreeMap::new();
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if let Some(cmd) = k.strip_prefix("cmdstat_") {
                let n = v
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(n) = n {
                    calls.insert(cmd.to_string(), n);
                }
            } else if let Ok(x) = v.trim().parse::<f64>() {
                fields.insert(k.to_string(), x);
            }
        }
        Ok(InfoSnapshot {
            calls,
            fields,
            request_bytes: cmd.len() as u64,
            reply_bytes,
        })
    }
}

struct RedisDelta {
    per_command: Vec<(String, u64)>,
    commands: u64,
    cpu_us: f64,
    net_in: f64,
    net_out: f64,
    reads: f64,
    writes: f64,
}

fn redis_delta(before: &InfoSnapshot, after: &InfoSnapshot) -> RedisDelta {
    let mut per_command: Vec<(String, u64)> = after
        .calls
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| {
            (
                name.clone(),
                n - before.calls.get(name).copied().unwrap_or(0).min(n),
            )
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    per_command.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let commands = per_command.iter().map(|(_, n)| n).sum();
    let f = |s: &InfoSnapshot, k: &str| s.fields.get(k).copied().unwrap_or(0.0);
    let d = |k: &str| f(after, k) - f(before, k);
    // The first snapshot's reply is counted as output after it was generated; the second
    // snapshot's request was counted as input (one read) before the reply was generated.
    RedisDelta {
        per_command,
        commands,
        cpu_us: (d("used_cpu_sys") + d("used_cpu_user")) * 1e6,
        net_in: (d("total_net_input_bytes") - after.request_bytes as f64).max(0.0),
        net_out: (d("total_net_output_bytes") - before.reply_bytes as f64).max(0.0),
        reads: (d("total_reads_processed") - 1.0).max(0.0),
        writes: (d("total_writes_processed") - 1.0).max(0.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Server memory

#[derive(Default)]
struct RssSamples {
    kb: Vec<u64>,
    lost: Option<String>,
}

fn read_rss_kb(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

async fn sample_rss(pid: u32, end: Instant) -> RssSamples {
    let mut out = RssSamples::default();
    let mut at = Instant::now();
    while at <= end {
        match read_rss_kb(pid) {
            Ok(kb) => out.kb.push(kb),
            Err(e) => {
                out.lost = Some(e);
                break;
            }
        }
        at += Duration::from_secs(1);
        if at > end {
            // One last sample right at the end of the window.
            sleep_until(end).await;
            if let Ok(kb) = read_rss_kb(pid) {
                out.kb.push(kb);
            }
            break;
        }
        sleep_until(at).await;
    }
    out
}

/// User and kernel CPU time of a whole process (all threads), in µs.
fn process_cpu_us(pid: u32) -> Option<(f64, f64)> {
    stat_cpu_us(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `(user, kernel)` µs from the text of a `/proc/PID/stat`.
fn stat_cpu_us(text: &str) -> Option<(f64, f64)> {
    // Fields after the command name, which is in parentheses and may hold spaces: the first
    // is field 3 (state), so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Clock ticks of USER_HZ, which is 100 on every Linux ABI.
    Some((utime as f64 * 10_000.0, stime as f64 * 10_000.0))
}

/// CPU time of this (single) thread in ns, to show whether the tool itself was the bottleneck.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn fmt_mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

async fn run(args: Args) -> Result<bool, String> {
    let addr = tokio::net::lookup_host(&args.host_header)
        .await
        .map_err(|e| format!("--url: cannot resolve {}: {e}", args.host_header))?
        .next()
        .ok_or_else(|| format!("--url: no address for {}", args.host_header))?;

    let mut redis = match &args.redis_url {
        Some(url) => Some(RedisInfo::connect(url).await?),
        None => None,
    };

    let t0 = Instant::now();
    let measure_start = t0 + args.warmup;
    let end = measure_start + args.duration;
    let plan = std::sync::Arc::new(Plan {
        host_header: args.host_header.clone(),
        login_path: args.login.as_ref().map(|l| format!("{}{}", args.prefix, l)),
        path: format!("{}{}", args.prefix, args.path),
        check: args.check,
        timeout: args.timeout,
        measure_start,
        end,
    });

    let rss_task = args.rss_pid.map(|pid| tokio::spawn(sample_rss(pid, end)));
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        // Spread users as evenly as possible over the connections.
        let n_users =
            args.users / args.connections + usize::from(i < args.users % args.connections);
        tasks.push(tokio::spawn(run_connection(addr, n_users, plan.clone())));
    }

    sleep_until(measure_start).await;
    let cpu_before = thread_cpu_ns();
    let server_before = args.rss_pid.and_then(process_cpu_us);
    let redis_before = match redis.as_mut() {
        Some(r) => Some(r.snapshot().await?),
        None => None,
    };
    sleep_until(end).await;
    let redis_after = match redis.as_mut() {
        Some(r) => Some(r.snapshot().await?),
        None => None,
    };
    let cpu_after = thread_cpu_ns();
    let server_after = args.rss_pid.and_then(process_cpu_us);

    let mut total = Tally::default();
    let mut latencies: Vec<u32> = Vec::new();
    for task in tasks {
        // Every task stops at `end` by itself; the grace period only guards against a bug.
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(mut t)) => {
                latencies.append(&mut t.latencies_us);
                total.completed += t.completed;
                total.errors.merge(&t.errors);
                total.setup_errors.merge(&t.setup_errors);
                total.reconnects += t.reconnects;
                total.users_without_cookie += t.users_without_cookie;
                total.users_not_logged_in += t.users_not_logged_in;
                for s in t.samples {
                    let kind = s.split(": ").next().unwrap_or_default();
                    let same_kind = total
                        .samples
                        .iter()
                        .filter(|x| x.split(": ").next() == Some(kind))
                        .count();
                    if same_kind < SAMPLES_PER_KIND && !total.samples.contains(&s) {
                        total.samples.push(s);
                    }
                }
            }
            Ok(Err(e)) => return Err(format!("a connection task failed: {e}")),
            Err(_) => return Err("a connection task did not stop at the end".to_string()),
        }
    }
    let rss = match rss_task {
        Some(t) => match tokio::time::timeout(Duration::from_secs(3), t).await {
            Ok(Ok(s)) => Some(s),
            _ => None,
        },
        None => None,
    };

    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let secs = args.duration.as_secs_f64();
    let rps = ok as f64 / secs;
    let mean = if ok > 0 {
        latencies.iter().map(|&x| x as u64).sum::<u64>() as f64 / ok as f64
    } else {
        0.0
    };
    let (p50, p90, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
    );
    let client_cpu_pct = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / 1e9 / secs * 100.0),
        _ => None,
    };
    // Server CPU over the measured window: (user, kernel) µs.
    let server_cpu = match (server_before, server_after) {
        (Some(b), Some(a)) => Some((a.0 - b.0, a.1 - b.1)),
        _ => None,
    };
    let delta = match (&redis_before, &redis_after) {
        (Some(b), Some(a)) => Some(redis_delta(b, a)),
        _ => None,
    };

    // Human table.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {} ==  GET {}{}  users={} connections={} duration={}s warmup={}s check={}",
        args.label,
        args.url.trim_end_matches('/'),
        args.path,
        args.users,
        args.connections,
        secs,
        args.warmup.as_secs_f64(),
        args.check.name()
    );
    let _ = writeln!(
        out,
        "requests      {ok} ok of {} completed   {rps:.1} req/s",
        total.completed
    );
    let _ = writeln!(
        out,
        "latency       p50 {p50} µs  p90 {p90} µs  p99 {p99} µs  max {max} µs  mean {mean:.0} µs"
    );
    let _ = writeln!(out, "errors        {}", total.errors.describe());
    if total.setup_errors.total() > 0 {
        let _ = writeln!(
            out,
            "setup errors  {} (login/warmup)",
            total.setup_errors.describe()
        );
    }
    for s in &total.samples {
        let _ = writeln!(out, "  e.g. {s}");
    }
    if total.reconnects > 0 {
        let _ = writeln!(out, "reconnects    {}", total.reconnects);
    }
    if total.users_not_logged_in > 0 {
        let _ = writeln!(
            out,
            "warning       {} users never logged in",
            total.users_not_logged_in
        );
    }
    if total.users_without_cookie > 0 {
        let _ = writeln!(
            out,
            "warning       {} users got no cookie from login",
            total.users_without_cookie
        );
    }
    if let Some(pct) = client_cpu_pct {
        let _ = writeln!(out, "client CPU    {pct:.0}% of one core");
    }
    let per_req = |x: f64| if ok > 0 { x / ok as f64 } else { 0.0 };
    if let Some((user, sys)) = server_cpu {
        let _ = writeln!(
            out,
            "server CPU    {:.1} µs/req (user {:.1} + kernel {:.1}), {:.0}% of one core",
            per_req(user + sys),
            per_req(user),
            per_req(sys),
            (user + sys) / 1e6 / secs * 100.0
        );
    }
    if let Some(d) = &delta {
        let mut cmds = String::new();
        for (name, n) in &d.per_command {
            let _ = write!(cmds, "{name} {:.2}  ", per_req(*n as f64));
        }
        let _ = writeln!(
            out,
            "redis cmds    {:.2}/req: {}",
            per_req(d.commands as f64),
            cmds.trim_end()
        );
        let _ = writeln!(
            out,
            "redis cost    {:.1} CPU µs/req   {:.0} bytes/req (in {:.0} + out {:.0})",
            per_req(d.cpu_us),
            per_req(d.net_in + d.net_out),
            per_req(d.net_in),
            per_req(d.net_out)
        );
        let reads_per_cmd = if d.commands > 0 {
            d.reads / d.commands as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "redis reads   {:.2}/req  {:.2}/command  (writes {:.2}/req)",
            per_req(d.reads),
            reads_per_cmd,
            per_req(d.writes)
        );
    }
    if let Some(r) = &rss {
        match (r.kb.first(), r.kb.last(), r.kb.iter().max()) {
            (Some(&first), Some(&last), Some(&max)) => {
                let _ = writeln!(
                    out,
                    "server RSS    first {}  last {}  max {}  ({} samples)",
                    fmt_mib(first),
                    fmt_mib(last),
                    fmt_mib(max),
                    r.kb.len()
                );
                if r.kb.len() > 10 {
                    // The trajectory, to tell start-up growth from a leak.
                    let every: Vec<String> =
                        r.kb.iter().step_by(10).map(|&kb| fmt_mib(kb)).collect();
                    let _ = writeln!(out, "  every 10 s  {}", every.join("  "));
                }
            }
            _ => {
                let _ = writeln!(out, "server RSS    no samples");
            }
        }
        if let Some(e) = &r.lost {
            let _ = writeln!(out, "  sampling stopped: {e}");
        }
    }
    print!("{out}");

    if args.json {
        let redis_json = delta.as_ref().map(|d| {
            let by_cmd: serde_json::Map<String, serde_json::Value> = d
                .per_command
                .iter()
                .map(|(n, c)| (n.clone(), json!(per_req(*c as f64))))
                .collect();
            json!({
                "commands_per_req": per_req(d.commands as f64),
                "by_command_per_req": by_cmd,
                "cpu_us_per_req": per_req(d.cpu_us),
                "net_in_bytes_per_req": per_req(d.net_in),
                "net_out_bytes_per_req": per_req(d.net_out),
                "net_bytes_per_req": per_req(d.net_in + d.net_out),
                "reads_per_req": per_req(d.reads),
                "reads_per_command": if d.commands > 0 { d.reads / d.commands as f64 } else { 0.0 },
                "writes_per_req": per_req(d.writes),
            })
        });
        let rss_json = rss.as_ref().map(|r| {
            json!({
                "first_kb": r.kb.first(),
                "last_kb": r.kb.last(),
                "max_kb": r.kb.iter().max(),
                "samples": r.kb.len(),
                "samples_kb": r.kb,
            })
        });
        let line = json!({
            "label": args.label,
            "url": args.url,
            "path": args.path,
            "check": args.check.name(),
            "users": args.users,
            "connections": args.connections,
            "duration_s": secs,
            "requests": total.completed,
            "ok": ok,
            "rps": rps,
            "latency_us": {"p50": p50, "p90": p90, "p99": p99, "max": max, "mean": mean},
            "errors": total.errors.to_json(),
            "errors_total": total.errors.total(),
            "setup_errors_total": total.setup_errors.total(),
            "reconnects": total.reconnects,
            "client_cpu_pct": client_cpu_pct,
            "server_cpu_us_per_req": server_cpu.map(|(u, k)| json!({
                "total": per_req(u + k),
                "user": per_req(u),
                "kernel": per_req(k),
            })),
            "redis": redis_json,
            "rss": rss_json,
        });
        println!("{line}");
    }
    Ok(total.errors.total() == 0 && total.setup_errors.total() == 0 && ok > 0)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(msg) => {
            if msg.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("loadtest: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("loadtest: {msg}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_adds_replaces_and_removes() {
        let mut jar = Jar::default();
        jar.apply_set_cookie(b"id=abc; HttpOnly; Path=/");
        jar.apply_set_cookie(b"other=1");
        jar.apply_set_cookie(b"id=def; Path=/");
        assert_eq!(
            jar.cookies,
            vec![("id".into(), "def".into()), ("other".into(), "1".into())]
        );
        jar.apply_set_cookie(b"id=def; Max-Age=0; Path=/");
        jar.apply_set_cookie(b"other=; Path=/");
        assert!(jar.cookies.is_empty());
    }

    #[test]
    fn unchanged_cookie_keeps_the_cached_request() {
        let mut jar = Jar::default();
        jar.apply_set_cookie(b"id=abc");
        let v = jar.version;
        jar.apply_set_cookie(b"id=abc; Path=/");
        assert_eq!(jar.version, v);
    }

    #[test]
    fn request_carries_all_cookies() {
        let mut jar = Jar::default();
        jar.apply_set_cookie(b"a=1");
        jar.apply_set_cookie(b"b=2");
        let mut out = Vec::new();
        build_request(&mut out, "/incr", "127.0.0.1:8080", &jar);
        assert_eq!(
            out,
            b"GET /incr HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: a=1; b=2\r\n\r\n"
        );
    }

    #[test]
    fn counter_must_step_by_one_after_the_first_value() {
        let mut user = User::new();
        assert!(verify(Check::Counter, 200, br#"{"counter":7}"#, &mut user).is_ok());
        assert!(verify(Check::Counter, 200, br#"{"counter":8}"#, &mut user).is_ok());
        let skipped = verify(Check::Counter, 200, br#"{"counter":10}"#, &mut user);
        assert!(matches!(skipped, Err(f) if f.kind == Kind::CounterMismatch));
        // After a failed request the server may or may not have counted it.
        user.counter_uncertain = true;
        assert!(verify(Check::Counter, 200, br#"{"counter":12}"#, &mut user).is_ok());
        let zero = verify(Check::Counter, 200, br#"{"counter":0}"#, &mut User::new());
        assert!(matches!(zero, Err(f) if f.kind == Kind::CounterMismatch));
        let not_json = verify(Check::Counter, 200, b"oops", &mut User::new());
        assert!(matches!(not_json, Err(f) if f.kind == Kind::Body));
        let status = verify(Check::Counter, 500, br#"{"counter":1}"#, &mut User::new());
        assert!(matches!(status, Err(f) if f.kind == Kind::Status));
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat = "42 (my (odd) server) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3";
        assert_eq!(stat_cpu_us(stat), Some((2_500_000.0, 750_000.0)));
        assert_eq!(stat_cpu_us("42 (truncated) S 1 2"), None);
        let own = process_cpu_us(std::process::id()).expect("this process's own stat");
        assert!(own.0 >= 0.0 && own.1 >= 0.0);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn url_prefix_and_unknown_options() {
        let a = parse_args(vec!["--url".into(), "http://localhost:9000/app/".into()]);
        let a = a.ok().map(|a| (a.host_header, a.prefix));
        assert_eq!(a, Some(("localhost:9000".into(), "/app".into())));
        assert!(parse_args(vec!["--bogus".into()]).is_err());
        assert!(parse_args(vec!["--check=bad".into()]).is_err());
    }
}
