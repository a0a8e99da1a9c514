//! A closed-loop HTTP/1.1 load tool for apps that keep a session per user.
//!
//! Each virtual user logs in once (to get its session cookie), then sends a request, waits for the
//! whole answer, verifies it and sends the next one, over a keep-alive connection. Answers are
//! verified so that a broken server cannot look fast (`--check counter` proves that every
//! increment of a per-session counter was stored and read back).
//!
//! The tool runs on one thread (a tokio current-thread runtime), so that it can be pinned to one
//! core while the server runs on another:
//!
//! ```text
//! taskset -c 1 cargo run --release --example loadtest -- \
//!     --url http://127.0.0.1:8080 --login /login --path /incr --check counter \
//!     --users 64 --duration 10 --warmup 1 --redis-url redis://127.0.0.1:6390 --json
//! ```
//!
//! With `--redis-url`, Redis `INFO` is read just before and just after the measured window and
//! the deltas are printed per request (commands by name, CPU, bytes, read calls). For a Redis
//! Cluster, give every master (`--redis-url A,B,C` or the flag repeated): the deltas are summed,
//! so read calls per request count the pipelines all masters received. With
//! `--server-pid`, the server's resident memory is sampled once a second and its CPU time
//! (user and kernel, all threads) over the measured window is printed per request. `client CPU`
//! is this process's own user and kernel time over the window.
//!
//! The exit status is 0 when every request succeeded, 1 when any error was counted, 2 for a bad
//! command line or an unreachable `--redis-url`.
//!
//! Crates do the parts that are not the tool itself: clap (arguments), the `cookie` jar (one per
//! user), hdrhistogram (percentiles), the redis crate (`INFO`) and procfs (`/proc`, with the
//! system's clock tick). The HTTP/1.1 exchange stays hand-written on httparse because hyper 1's
//! client connection costs clearly more client CPU per request. Measured against one
//! `bench_server --mode circumflex` (core 0, with Redis), tool on core 1, `--path /incr --check
//! counter --users 64 --duration 5 --warmup 1`, 4 builds alternated 3 times, the tool's whole
//! user+sys time per request: the previous all-hand-written tool 10.0-10.9 µs, this file
//! 10.7-11.5 µs, the same with hyper's `client::conn::http1` (connection spawned as its own task)
//! 15.6-16.1 µs (+50%), hyper with the connection polled in the request's task 16.5-18.3 µs.
//!
//! Why this file is long (about 1,100 lines, from 1,590): the HTTP/1.1 exchange (about 190
//! lines, kept for the reason above), the human report and the `--json` line whose fields
//! `scripts/bench.sh` reads (about 170), the tests (about 100), and the tool itself: the user
//! loop with logins, timeouts and back-off, the answer checks and the error tally.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::{Cookie, CookieJar};
use actix_web::http::Uri;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use procfs::process::Process;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

#[path = "shared/redis_info.rs"]
mod redis_info;

/// A closed-loop HTTP/1.1 load tool: virtual users with their own cookie jars, every answer
/// verified. Exit status 0: no error; 1: errors counted; 2: bad command line or Redis.
#[derive(Parser)]
#[command(name = "loadtest")]
struct Args {
    /// Base URL, http only; a path in it is a prefix for --login and --path
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Path each virtual user calls once first; '' or none for no login
    #[arg(long, default_value = "/login")]
    login: String,
    /// Path to hammer
    #[arg(long, default_value = "/incr")]
    path: String,
    /// Virtual users, each with its own cookie jar
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    users: u32,
    /// Keep-alive connections [default: users]; users are spread over them
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: Option<u32>,
    /// Measured window, seconds
    #[arg(long, default_value = "10", value_parser = positive_secs)]
    duration: Duration,
    /// Seconds not counted
    #[arg(long, default_value = "1", value_parser = secs)]
    warmup: Duration,
    /// Per-request timeout in seconds, counted as an error
    #[arg(long, default_value = "5", value_parser = positive_secs)]
    timeout: Duration,
    /// What an answer must be (counter: {"counter":N}, up by exactly one per user)
    #[arg(long, value_enum, default_value_t = Check::Status)]
    check: Check,
    /// redis://[[user]:pass@]host:port to read INFO deltas from (several, comma-separated or
    /// repeated, for the masters of a cluster: summed)
    #[arg(long, value_delimiter = ',')]
    redis_url: Vec<String>,
    /// The server's pid: its VmRSS is sampled once a second and its CPU time (user and kernel,
    /// from /proc/PID/stat) is reported per request
    #[arg(long, visible_alias = "rss-pid")]
    server_pid: Option<i32>,
    /// Name for the report [default: the path]
    #[arg(long)]
    label: Option<String>,
    /// Also print one JSON line with the results
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Check {
    Status,
    Json,
    Counter,
}

fn secs(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("expected seconds from 0 to 86400, got {v:?}")),
    }
}

fn positive_secs(v: &str) -> Result<Duration, String> {
    let d = secs(v)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// `host[:port]` (the `Host` header) and the path prefix without a trailing slash.
fn split_url(url: &str) -> Result<(String, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if !a.as_str().contains('@') => {
            Ok((a.to_string(), uri.path().trim_end_matches('/').to_string()))
        }
        _ => Err(format!(
            "--url must be http://host[:port][/prefix], got {url:?}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and per-connection tallies

const KINDS: [&str; 6] = [
    "connect",
    "io",
    "timeout",
    "status",
    "body",
    "counter-mismatch",
];
const CONNECT: usize = 0;
const IO: usize = 1;
const TIMEOUT: usize = 2;
const STATUS: usize = 3;
const BODY: usize = 4;
const MISMATCH: usize = 5;
/// At most this many distinct error messages of each kind are kept to show what went wrong.
const SAMPLES_PER_KIND: usize = 2;
/// A response header section larger than this is treated as a broken answer.
const MAX_HEADER_BYTES: usize = 1 << 20;
/// A body larger than this is treated as a broken answer.
const MAX_BODY_BYTES: usize = 64 << 20;

/// An error kind (an index into `KINDS`) and what happened.
struct Failure(usize, String);

fn fail<T>(kind: usize, msg: impl std::fmt::Display) -> Result<T, Failure> {
    Err(Failure(kind, msg.to_string()))
}

/// Counts by kind, in the order of `KINDS`.
type Counts = [u64; KINDS.len()];

fn describe(counts: &Counts) -> String {
    let parts: Vec<String> = (KINDS.iter().zip(counts))
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join("  ")
    }
}

/// What one connection task brings back.
struct Tally {
    /// Latency in µs of every successful request that started inside the measured window.
    latencies_us: Histogram<u64>,
    /// Responses completed in the window, successful or not.
    completed: u64,
    /// Errors while the request started inside the measured window.
    errors: Counts,
    /// Errors during login and warmup.
    setup_errors: Counts,
    samples: Vec<String>,
    reconnects: u64,
    users_without_cookie: u64,
    users_not_logged_in: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latencies_us: Histogram::new(3).expect("3 significant digits are supported"),
            completed: 0,
            errors: Counts::default(),
            setup_errors: Counts::default(),
            samples: Vec::new(),
            reconnects: 0,
            users_without_cookie: 0,
            users_not_logged_in: 0,
        }
    }

    fn add_sample(&mut self, line: String) {
        let kind = line.split(": ").next();
        let same_kind = self.samples.iter().filter(|s| s.split(": ").next() == kind);
        if same_kind.count() < SAMPLES_PER_KIND && !self.samples.contains(&line) {
            self.samples.push(line);
        }
    }

    fn record_error(&mut self, in_window: bool, f: &Failure) {
        let counts = if in_window {
            &mut self.errors
        } else {
            &mut self.setup_errors
        };
        counts[f.0] += 1;
        self.add_sample(format!("{}: {}", KINDS[f.0], f.1));
    }

    fn merge(&mut self, t: Tally) {
        let _ = self.latencies_us.add(&t.latencies_us);
        self.completed += t.completed;
        (0..KINDS.len()).for_each(|k| self.errors[k] += t.errors[k]);
        (0..KINDS.len()).for_each(|k| self.setup_errors[k] += t.setup_errors[k]);
        self.reconnects += t.reconnects;
        self.users_without_cookie += t.users_without_cookie;
        self.users_not_logged_in += t.users_not_logged_in;
        t.samples.into_iter().for_each(|s| self.add_sample(s));
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual users and their connection

#[derive(Default)]
struct User {
    jar: CookieJar,
    /// The `Cookie` header's value for the jar as it is (empty for no cookies); `None` after a
    /// change, rebuilt on next use.
    cookie_header: Option<String>,
    logged_in: bool,
    /// Last counter value seen (`--check counter`).
    last_counter: Option<u64>,
    /// A request failed after it may have reached the server, so the next counter may have
    /// skipped one value.
    counter_uncertain: bool,
}

impl User {
    /// Applies one `Set-Cookie`; a cookie is removed when it comes back with `Max-Age=0` (or
    /// negative) or an empty value.
    fn set_cookie(&mut self, raw: &[u8]) {
        let text = std::str::from_utf8(raw).ok();
        let Some(c) = text.and_then(|s| Cookie::parse(s.to_owned()).ok()) else {
            return;
        };
        let gone = c.value().is_empty() || c.max_age().is_some_and(|a| !a.is_positive());
        match self.jar.get(c.name()) {
            None if gone => return,
            Some(old) if !gone && old.value() == c.value() => return,
            _ if gone => self.jar.force_remove(&c),
            _ => self.jar.add(c),
        }
        self.cookie_header = None;
    }

    fn cookie_header(&mut self) -> &str {
        let jar = &self.jar;
        self.cookie_header.get_or_insert_with(|| {
            let pairs: Vec<String> = jar.iter().map(|c| c.stripped().to_string()).collect();
            pairs.join("; ")
        })
    }
}

#[derive(serde::Deserialize)]
struct CounterBody {
    counter: u64,
}

/// Checks one response of the hammered path against `--check`.
fn verify(check: Check, status: u16, body: &[u8], user: &mut User) -> Result<(), Failure> {
    if !(200..300).contains(&status) {
        return fail(STATUS, format!("HTTP {status}"));
    }
    let n = match check {
        Check::Status => return Ok(()),
        Check::Json => {
            let parsed = serde_json::from_slice::<serde::de::IgnoredAny>(body);
            return parsed
                .map(drop)
                .or_else(|e| fail(BODY, format!("not JSON: {e}")));
        }
        Check::Counter => match serde_json::from_slice::<CounterBody>(body) {
            Ok(c) => c.counter,
            Err(e) => {
                let shown = String::from_utf8_lossy(&body[..body.len().min(80)]);
                return fail(BODY, format!("expected {{\"counter\":N}}: {e}: {shown}"));
            }
        },
    };
    let uncertain = std::mem::take(&mut user.counter_uncertain);
    match user.last_counter.replace(n) {
        None if n >= 1 => Ok(()),
        None => fail(MISMATCH, format!("first counter after login was {n}")),
        Some(last) if n == last + 1 || (uncertain && n == last + 2) => Ok(()),
        Some(last) => fail(MISMATCH, format!("counter went from {last} to {n}")),
    }
}

/// One keep-alive HTTP/1.1 connection, reopened after an error. Hand-written on httparse, see the
/// module doc for why.
struct Conn {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    request: Vec<u8>,
    /// Body of the last response.
    body: Vec<u8>,
    reconnects: u64,
    ever_connected: bool,
}

impl Conn {
    fn new(addr: SocketAddr, host: String) -> Self {
        let (stream, buf, request, body) = (None, Vec::new(), Vec::new(), Vec::new());
        let (reconnects, ever_connected) = (0, false);
        Conn {
            addr,
            host,
            stream,
            buf,
            request,
            body,
            reconnects,
            ever_connected,
        }
    }

    /// Sends `GET path` with the user's cookies, applies every `Set-Cookie` to the user's jar,
    /// reads the whole body into `self.body` and returns the status. Closes the connection on
    /// error.
    async fn round_trip(&mut self, path: &str, user: &mut User) -> Result<u16, Failure> {
        let result = self.exchange(path, user).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// Reads more bytes into `buf`; `Ok(false)` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return fail(IO, "not connected");
        };
        if self.buf.len() > MAX_HEADER_BYTES + MAX_BODY_BYTES {
            return fail(IO, "response too large");
        }
        self.buf.reserve(16 * 1024);
        let read = stream.read_buf(&mut self.buf).await;
        read.map(|n| n > 0)
            .or_else(|e| fail(IO, format!("read: {e}")))
    }

    /// Makes sure `buf` holds at least `n` bytes.
    async fn need(&mut self, n: usize) -> Result<(), Failure> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return fail(IO, "connection closed mid-body");
            }
        }
        Ok(())
    }

    async fn exchange(&mut self, path: &str, user: &mut User) -> Result<u16, Failure> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await;
            let stream = stream.or_else(|e| fail(CONNECT, format!("{}: {e}", self.addr)))?;
            // Small requests and answers: do not let Nagle delay them.
            let _ = stream.set_nodelay(true);
            self.reconnects += u64::from(self.ever_connected);
            self.ever_connected = true;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let cookies = user.cookie_header();
        let cookie_lines: [&str; 3] = match cookies.is_empty() {
            true => ["", "", ""],
            false => ["Cookie: ", cookies, "\r\n"],
        };
        self.request.clear();
        for part in ["GET ", path, " HTTP/1.1\r\nHost: ", &self.host, "\r\n"]
            .into_iter()
            .chain(cookie_lines)
            .chain(["\r\n"])
        {
            self.request.extend_from_slice(part.as_bytes());
        }
        if let Some(stream) = self.stream.as_mut() {
            let written = stream.write_all(&self.request).await;
            written.or_else(|e| fail(IO, format!("write: {e}")))?;
        }

        // Header section: status, length (`Some(None)`: chunked; `None`: until close), close.
        let (status, head, length, mut close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let status = response.code.unwrap_or(0);
                    let no_body = status < 200 || status == 204 || status == 304;
                    let mut length = no_body.then_some(Some(0));
                    let mut close = response.version == Some(0);
                    for h in response.headers.iter() {
                        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
                        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                        if is("set-cookie") {
                            user.set_cookie(h.value);
                        } else if is("content-length") && length.is_none() {
                            let n = value.parse().or_else(|_| fail(IO, "bad Content-Length"))?;
                            length = Some(Some(n));
                        } else if is("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                            length = Some(None);
                        } else if is("connection") && value.eq_ignore_ascii_case("close") {
                            close = true;
                        } else if is("connection") && value.eq_ignore_ascii_case("keep-alive") {
                            close = false;
                        }
                    }
                    break (status, head, length, close);
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEADER_BYTES => {}
                Ok(httparse::Status::Partial) => return fail(IO, "response headers too large"),
                Err(e) => return fail(IO, format!("bad response: {e}")),
            }
            if !self.fill().await? {
                return fail(IO, "connection closed before the whole response header");
            }
        };

        self.body.clear();
        let end = match length {
            Some(Some(n)) if n > MAX_BODY_BYTES => return fail(IO, "body too large"),
            Some(Some(n)) => {
                self.need(head + n).await?;
                self.body.extend_from_slice(&self.buf[head..head + n]);
                head + n
            }
            Some(None) => loop {
                let pos = head + self.body.len();
                let (size_len, size) = match httparse::parse_chunk_size(&self.buf[pos..]) {
                    Ok(httparse::Status::Complete(v)) => v,
                    Ok(httparse::Status::Partial) if self.fill().await? => continue,
                    _ => return fail(IO, "bad or unfinished chunk size"),
                };
                let size = usize::try_from(size)
                    .unwrap_or(usize::MAX)
                    .min(MAX_BODY_BYTES + 1);
                if self.body.len() + size > MAX_BODY_BYTES {
                    return fail(IO, "body too large");
                }
                // The chunked body is copied over its own framing in `buf`, so `pos` stays
                // `head + body.len()`: drop the size line first.
                self.buf.drain(pos..pos + size_len);
                self.need(pos + size + 2).await?;
                // Every chunk, the last (empty) one too, ends with CRLF; trailers are not supported.
                if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                    return fail(
                        IO,
                        "chunk not followed by CRLF (trailers are not supported)",
                    );
                }
                self.body.extend_from_slice(&self.buf[pos..pos + size]);
                self.buf.drain(pos + size..pos + size + 2);
                if size == 0 {
                    break pos;
                }
            },
            None => {
                // Neither length nor chunked: the body runs until the server closes.
                while self.fill().await? {}
                self.body.extend_from_slice(&self.buf[head..]);
                close = true;
                self.buf.len()
            }
        };
        self.buf.drain(..end);
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

struct Plan {
    login: Option<String>,
    path: String,
    check: Check,
    timeout: Duration,
    measure_start: Instant,
    end: Instant,
}

/// One bounded round trip; `None` when the run's end came first (the request is not counted).
async fn bounded(
    conn: &mut Conn,
    plan: &Plan,
    path: &str,
    user: &mut User,
) -> Option<Result<u16, Failure>> {
    let deadline = (Instant::now() + plan.timeout).min(plan.end);
    match timeout_at(deadline, conn.round_trip(path, user)).await {
        Ok(r) => Some(r),
        Err(_) => {
            conn.stream = None;
            (deadline < plan.end).then(|| fail(TIMEOUT, "no complete answer in time"))
        }
    }
}

/// After an error, wait a little before the next try so a dead server does not spin the CPU.
async fn backoff(plan: &Plan) {
    sleep_until((Instant::now() + Duration::from_millis(50)).min(plan.end)).await;
}

/// One connection, shared round-robin by `n_users` virtual users. Stops by itself at `plan.end`.
async fn run_connection(mut conn: Conn, n_users: usize, plan: Arc<Plan>) -> Tally {
    let plan = &*plan;
    let mut tally = Tally::new();
    let mut users: Vec<User> = (0..n_users).map(|_| User::default()).collect();

    // Log every user in once (during warmup, usually); retry until it works or the run ends.
    'users: for user in users.iter_mut() {
        let Some(login) = &plan.login else {
            user.logged_in = true;
            continue;
        };
        while Instant::now() < plan.end {
            let in_window = Instant::now() >= plan.measure_start;
            let failure = match bounded(&mut conn, plan, login, user).await {
                None => break 'users,
                Some(Ok(status)) if (200..300).contains(&status) => {
                    user.logged_in = true;
                    tally.users_without_cookie += u64::from(user.jar.iter().next().is_none());
                    continue 'users;
                }
                Some(Ok(status)) => Failure(STATUS, format!("login answered HTTP {status}")),
                Some(Err(f)) => f,
            };
            tally.record_error(in_window, &failure);
            backoff(plan).await;
        }
    }
    // A run that ended in the middle of a login leaves the later users unused.
    tally.users_not_logged_in = users.iter().filter(|u| !u.logged_in).count() as u64;

    for next in (0..n_users).cycle() {
        let user = &mut users[next];
        if Instant::now() >= plan.end {
            break;
        } else if !user.logged_in {
            continue;
        }
        let started = Instant::now();
        let in_window = started >= plan.measure_start;
        let Some(result) = bounded(&mut conn, plan, &plan.path, user).await else {
            break;
        };
        let elapsed = started.elapsed();
        tally.completed += u64::from(in_window);
        match result.and_then(|status| verify(plan.check, status, &conn.body, user)) {
            Ok(()) if in_window => {
                let _ = tally.latencies_us.record(elapsed.as_micros() as u64);
            }
            Ok(()) => {}
            Err(f) => {
                user.counter_uncertain |= matches!(f.0, IO | TIMEOUT);
                tally.record_error(in_window, &f);
                if matches!(f.0, CONNECT | IO | TIMEOUT) {
                    backoff(plan).await;
                }
            }
        }
    }
    tally.reconnects = conn.reconnects;
    tally
}

// ---------------------------------------------------------------------------------------------
// Redis INFO, server memory and CPU

/// One `INFO` snapshot: `cmdstat_*` calls by command, and the numeric fields of the other sections.
struct InfoSnapshot {
    calls: BTreeMap<String, u64>,
    fields: BTreeMap<String, f64>,
    /// Bytes of the `INFO` requests we sent and of their replies, to take our own traffic out.
    request_bytes: u64,
    reply_bytes: u64,
    /// Servers summed into this snapshot (one `INFO` read call each).
    servers: u64,
}

/// One snapshot summed over several servers (the masters of a cluster).
async fn redis_info_all(
    cons: &mut [redis::aio::MultiplexedConnection],
) -> Result<InfoSnapshot, String> {
    let mut sum = InfoSnapshot {
        calls: BTreeMap::new(),
        fields: BTreeMap::new(),
        request_bytes: 0,
        reply_bytes: 0,
        servers: 0,
    };
    for con in cons {
        let snap = redis_info(con).await?;
        for (name, n) in snap.calls {
            *sum.calls.entry(name).or_default() += n;
        }
        for (name, x) in snap.fields {
            *sum.fields.entry(name).or_default() += x;
        }
        sum.request_bytes += snap.request_bytes;
        sum.reply_bytes += snap.reply_bytes;
        sum.servers += snap.servers;
    }
    Ok(sum)
}

async fn redis_info(con: &mut redis::aio::MultiplexedConnection) -> Result<InfoSnapshot, String> {
    // One INFO with three sections, so that our own traffic between two snapshots is exactly
    // one request and one reply (taken out in `redis_delta`).
    let cmd = redis::cmd("INFO")
        .arg("commandstats")
        .arg("stats")
        .arg("cpu")
        .clone();
    let text: String = timeout(Duration::from_secs(3), cmd.query_async(con))
        .await
        .map_err(|_| "redis: INFO timed out".to_string())?
        .map_err(|e| format!("redis INFO: {e}"))?;
    let info = redis_info::parse(&text);
    let snap = InfoSnapshot {
        calls: info.calls,
        fields: info.fields,
        request_bytes: cmd.get_packed_command().len() as u64,
        // A bulk string: `$<len>\r\n<text>\r\n`.
        reply_bytes: (text.len() + text.len().to_string().len() + 5) as u64,
        servers: 1,
    };
    Ok(snap)
}

/// Redis costs per request between two snapshots: the report's JSON object, and the commands by
/// name in the order to show them.
fn redis_delta(
    a: &InfoSnapshot,
    b: &InfoSnapshot,
    per_req: impl Fn(f64) -> f64,
) -> (serde_json::Value, Vec<(String, f64)>) {
    let mut per_command: Vec<(String, u64)> = (b.calls.iter())
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| {
            (
                name.clone(),
                n - a.calls.get(name).copied().unwrap_or(0).min(n),
            )
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    per_command.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    let commands = per_command.iter().map(|(_, n)| n).sum::<u64>() as f64;
    let per_command: Vec<(String, f64)> = per_command
        .into_iter()
        .map(|(n, c)| (n, per_req(c as f64)))
        .collect();
    let d = |k: &str| b.fields.get(k).unwrap_or(&0.0) - a.fields.get(k).unwrap_or(&0.0);
    // The first snapshot's reply is counted as output after it was generated; the second
    // snapshot's request was counted as input (one read) before the reply was generated.
    let net_in = (d("total_net_input_bytes") - b.request_bytes as f64).max(0.0);
    let net_out = (d("total_net_output_bytes") - a.reply_bytes as f64).max(0.0);
    let reads = (d("total_reads_processed") - b.servers as f64).max(0.0);
    let json = json!({
        "commands_per_req": per_req(commands),
        "by_command_per_req": per_command.iter().map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "cpu_us_per_req": per_req((d("used_cpu_sys") + d("used_cpu_user")) * 1e6),
        "net_in_bytes_per_req": per_req(net_in),
        "net_out_bytes_per_req": per_req(net_out),
        "net_bytes_per_req": per_req(net_in + net_out),
        "reads_per_req": per_req(reads),
        "reads_per_command": if commands > 0.0 { reads / commands } else { 0.0 },
        "writes_per_req": per_req((d("total_writes_processed") - b.servers as f64).max(0.0)),
    });
    (json, per_command)
}

/// Samples the server's RSS (kB) once a second and once more at `end`; the error that stopped it.
async fn sample_rss(pid: i32, end: Instant) -> (Vec<u64>, Option<String>) {
    let mut kb = Vec::new();
    let mut at = Instant::now();
    loop {
        match Process::new(pid).and_then(|p| p.status()).map(|s| s.vmrss) {
            Ok(Some(v)) => kb.push(v),
            Ok(None) => return (kb, Some(format!("no VmRSS in /proc/{pid}/status"))),
            Err(e) => return (kb, Some(format!("/proc/{pid}/status: {e}"))),
        }
        if at >= end {
            return (kb, None);
        }
        at = (at + Duration::from_secs(1)).min(end);
        sleep_until(at).await;
    }
}

/// User and kernel CPU time of a whole process (all threads), in µs.
fn process_cpu_us(pid: i32) -> Option<(f64, f64)> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    let tick_us = 1e6 / procfs::ticks_per_second() as f64;
    Some((stat.utime as f64 * tick_us, stat.stime as f64 * tick_us))
}

// ---------------------------------------------------------------------------------------------

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

async fn run(args: Args) -> Result<bool, String> {
    let (host, prefix) = split_url(&args.url)?;
    let addr = tokio::net::lookup_host(&host)
        .await
        .map_err(|e| format!("--url: cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url: no address for {host}"))?;
    let mut redis = Vec::with_capacity(args.redis_url.len());
    for url in &args.redis_url {
        let client =
            redis::Client::open(url.as_str()).map_err(|e| format!("--redis-url {url:?}: {e}"))?;
        let con = timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection(),
        )
        .await;
        let con = con.map_err(|_| format!("redis {url}: connect timed out"))?;
        redis.push(con.map_err(|e| format!("redis {url}: {e}"))?);
    }

    let with_slash = |p: &str| format!("/{}", p.trim_start_matches('/'));
    let path = with_slash(&args.path);
    let label = args.label.clone().unwrap_or_else(|| path.clone());
    let (users, secs) = (args.users as usize, args.duration.as_secs_f64());
    let connections = args.connections.map_or(users, |c| (c as usize).min(users));
    let measure_start = Instant::now() + args.warmup;
    let end = measure_start + args.duration;
    let plan = Arc::new(Plan {
        login: match args.login.as_str() {
            "" | "none" => None,
            login => Some(format!("{prefix}{}", with_slash(login))),
        },
        path: format!("{prefix}{path}"),
        check: args.check,
        timeout: args.timeout,
        measure_start,
        end,
    });
    let rss_task = args
        .server_pid
        .map(|pid| tokio::spawn(sample_rss(pid, end)));
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let conn = Conn::new(addr, host.clone());
            // Spread users as evenly as possible over the connections.
            let n_users = users / connections + usize::from(i < users % connections);
            tokio::spawn(run_connection(conn, n_users, plan.clone()))
        })
        .collect();

    sleep_until(measure_start).await;
    let own_pid = std::process::id() as i32;
    let client_before = process_cpu_us(own_pid);
    let server_before = args.server_pid.and_then(process_cpu_us);
    let redis_before = if redis.is_empty() {
        None
    } else {
        Some(redis_info_all(&mut redis).await?)
    };
    sleep_until(end).await;
    let redis_after = if redis.is_empty() {
        None
    } else {
        Some(redis_info_all(&mut redis).await?)
    };
    let client_after = process_cpu_us(own_pid);
    let server_after = args.server_pid.and_then(process_cpu_us);

    let mut total = Tally::new();
    for task in tasks {
        // Every task stops at `end` by itself; the grace period only guards against a bug.
        match timeout(Duration::from_secs(5), task).await {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => return Err(format!("a connection task failed: {e}")),
            Err(_) => return Err("a connection task did not stop at the end".to_string()),
        }
    }
    let rss = match rss_task {
        Some(t) => timeout(Duration::from_secs(3), t)
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };

    let h = &total.latencies_us;
    let (ok, check) = (
        h.len(),
        args.check
            .to_possible_value()
            .map(|v| v.get_name().to_string()),
    );
    let rps = ok as f64 / secs;
    let [p50, p90, p99] = [0.5, 0.9, 0.99].map(|q| h.value_at_quantile(q));
    let (max, mean) = (h.max(), if ok > 0 { h.mean() } else { 0.0 });
    let per_req = |x: f64| if ok > 0 { x / ok as f64 } else { 0.0 };
    let cpu_delta = |b: Option<(f64, f64)>, a: Option<(f64, f64)>| Some((a?.0 - b?.0, a?.1 - b?.1));
    let client_cpu_pct =
        cpu_delta(client_before, client_after).map(|(u, k)| (u + k) / 1e6 / secs * 100.0);
    // Server CPU over the measured window: (user, kernel) µs.
    let server_cpu = cpu_delta(server_before, server_after);
    let redis = match (&redis_before, &redis_after) {
        (Some(a), Some(b)) => Some(redis_delta(a, b, per_req)),
        _ => None,
    };

    // Human table.
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "== {label} ==  GET {}{path}  users={users} connections={connections} duration={secs}s warmup={}s check={}",
        args.url.trim_end_matches('/'),
        args.warmup.as_secs_f64(),
        check.as_deref().unwrap_or_default(),
    );
    let _ = writeln!(
        w,
        "requests      {ok} ok of {} completed   {rps:.1} req/s",
        total.completed
    );
    let _ = writeln!(
        w,
        "latency       p50 {p50} µs  p90 {p90} µs  p99 {p99} µs  max {max} µs  mean {mean:.0} µs"
    );
    let _ = writeln!(w, "errors        {}", describe(&total.errors));
    if total.setup_errors.iter().sum::<u64>() > 0 {
        let _ = writeln!(
            w,
            "setup errors  {} (login/warmup)",
            describe(&total.setup_errors)
        );
    }
    for s in &total.samples {
        let _ = writeln!(w, "  e.g. {s}");
    }
    if total.reconnects > 0 {
        let _ = writeln!(w, "reconnects    {}", total.reconnects);
    }
    if total.users_not_logged_in > 0 {
        let _ = writeln!(
            w,
            "warning       {} users never logged in",
            total.users_not_logged_in
        );
    }
    if total.users_without_cookie > 0 {
        let _ = writeln!(
            w,
            "warning       {} users got no cookie from login",
            total.users_without_cookie
        );
    }
    if let Some(pct) = client_cpu_pct {
        let _ = writeln!(w, "client CPU    {pct:.0}% of one core");
    }
    if let Some((u, k)) = server_cpu {
        let (total, pct) = (per_req(u + k), (u + k) / 1e6 / secs * 100.0);
        let (u, k) = (per_req(u), per_req(k));
        let _ = writeln!(
            w,
            "server CPU    {total:.1} µs/req (user {u:.1} + kernel {k:.1}), {pct:.0}% of one core"
        );
    }
    if let Some((j, per_command)) = &redis {
        let f = |k: &str| j[k].as_f64().unwrap_or(0.0);
        let cmds: Vec<String> = per_command
            .iter()
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        let _ = writeln!(
            w,
            "redis cmds    {:.2}/req: {}",
            f("commands_per_req"),
            cmds.join("  ")
        );
        let (cpu, bytes, inb, outb) = (
            f("cpu_us_per_req"),
            f("net_bytes_per_req"),
            f("net_in_bytes_per_req"),
            f("net_out_bytes_per_req"),
        );
        let _ = writeln!(w, "redis cost    {cpu:.1} CPU µs/req   {bytes:.0} bytes/req (in {inb:.0} + out {outb:.0})");
        let (reads, per_cmd, writes) = (
            f("reads_per_req"),
            f("reads_per_command"),
            f("writes_per_req"),
        );
        let _ = writeln!(
            w,
            "redis reads   {reads:.2}/req  {per_cmd:.2}/command  (writes {writes:.2}/req)"
        );
    }
    if let Some((kb, lost)) = &rss {
        match (kb.first(), kb.last(), kb.iter().max()) {
            (Some(&first), Some(&last), Some(&max)) => {
                let (first, last, max, n) = (mib(first), mib(last), mib(max), kb.len());
                let _ = writeln!(
                    w,
                    "server RSS    first {first}  last {last}  max {max}  ({n} samples)"
                );
                if kb.len() > 10 {
                    // The trajectory, to tell start-up growth from a leak.
                    let every: Vec<String> = kb.iter().step_by(10).map(|&kb| mib(kb)).collect();
                    let _ = writeln!(w, "  every 10 s  {}", every.join("  "));
                }
            }
            _ => {
                let _ = writeln!(w, "server RSS    no samples");
            }
        }
        if let Some(e) = lost {
            let _ = writeln!(w, "  sampling stopped: {e}");
        }
    }
    print!("{out}");

    let (errors, setup_errors) = (
        total.errors.iter().sum::<u64>(),
        total.setup_errors.iter().sum::<u64>(),
    );
    if args.json {
        let line = json!({
            "label": label,
            "url": args.url,
            "path": path,
            "check": check,
            "users": users,
            "connections": connections,
            "duration_s": secs,
            "requests": total.completed,
            "ok": ok,
            "rps": rps,
            "latency_us": {"p50": p50, "p90": p90, "p99": p99, "max": max, "mean": mean},
            "errors": KINDS.iter().zip(total.errors).map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "errors_total": errors,
            "setup_errors_total": setup_errors,
            "reconnects": total.reconnects,
            "client_cpu_pct": client_cpu_pct,
            "server_cpu_us_per_req": server_cpu.map(|(u, k)| json!({
                "total": per_req(u + k),
                "user": per_req(u),
                "kernel": per_req(k),
            })),
            "redis": redis.map(|(j, _)| j),
            "rss": rss.map(|(kb, _)| json!({
                "first_kb": kb.first(),
                "last_kb": kb.last(),
                "max_kb": kb.iter().max(),
                "samples": kb.len(),
                "samples_kb": kb,
            })),
        });
        println!("{line}");
    }
    Ok(errors == 0 && setup_errors == 0 && ok > 0)
}

fn main() -> ExitCode {
    // A bad command line exits with 2 (clap's own status for usage errors), --help with 0.
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match result {
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
        let mut user = User::default();
        for raw in ["id=abc; HttpOnly; Path=/", "other=1", "id=def; Path=/"] {
            user.set_cookie(raw.as_bytes());
        }
        let mut pairs: Vec<String> = user.cookie_header().split("; ").map(String::from).collect();
        pairs.sort();
        assert_eq!(pairs, ["id=def", "other=1"]);
        // An unchanged cookie keeps the cached header.
        user.set_cookie(b"id=def; Path=/");
        assert!(user.cookie_header.is_some());
        user.set_cookie(b"id=def; Max-Age=0; Path=/");
        user.set_cookie(b"other=; Path=/");
        assert_eq!(user.cookie_header(), "");
    }

    #[test]
    fn counter_must_step_by_one_after_the_first_value() {
        let mut user = User::default();
        let check = |body: &[u8], status, user: &mut User| {
            verify(Check::Counter, status, body, user)
                .err()
                .map(|f| KINDS[f.0])
        };
        assert_eq!(check(br#"{"counter":7}"#, 200, &mut user), None);
        assert_eq!(check(br#"{"counter":8}"#, 200, &mut user), None);
        assert_eq!(
            check(br#"{"counter":10}"#, 200, &mut user),
            Some("counter-mismatch")
        );
        // After a failed request the server may or may not have counted it.
        user.counter_uncertain = true;
        assert_eq!(check(br#"{"counter":12}"#, 200, &mut user), None);
        let fresh = &mut User::default();
        assert_eq!(
            check(br#"{"counter":0}"#, 200, fresh),
            Some("counter-mismatch")
        );
        assert_eq!(check(b"oops", 200, &mut User::default()), Some("body"));
        assert_eq!(
            check(br#"{"counter":1}"#, 500, &mut User::default()),
            Some("status")
        );
    }

    #[test]
    fn command_line() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_from(["lt", "--users=3", "--rss-pid", "7", "--check", "json"]);
        let a = a.expect("valid");
        assert_eq!((a.users, a.server_pid, a.check), (3, Some(7), Check::Json));
        for bad in [
            "--bogus",
            "--check=bad",
            "--users=0",
            "--duration=0",
            "--warmup=-1",
        ] {
            assert!(Args::try_parse_from(["lt", bad]).is_err(), "{bad}");
        }
        let url = split_url("http://localhost:9000/app/");
        assert_eq!(url, Ok(("localhost:9000".into(), "/app".into())));
        assert!(split_url("https://x").is_err());
    }

    #[tokio::test]
    async fn chunked_and_sized_bodies_on_one_keep_alive_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0; 4096];
            for answer in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: id=1\r\n\r\n\
                 3\r\n{\"c\r\na\r\nounter\":1}\r\n0\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"counter\":2}",
            ] {
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let (mut conn, mut user) = (Conn::new(addr, "h".into()), User::default());
        assert_eq!(conn.round_trip("/incr", &mut user).await.ok(), Some(200));
        assert_eq!(conn.body, br#"{"counter":1}"#);
        assert_eq!(user.cookie_header(), "id=1");
        assert_eq!(conn.round_trip("/incr", &mut user).await.ok(), Some(200));
        assert_eq!(conn.body, br#"{"counter":2}"#);
        assert!(conn.buf.is_empty() && conn.reconnects == 0);
    }

    #[test]
    fn own_cpu_time_is_read_with_the_system_clock_tick() {
        let (user, kernel) = process_cpu_us(std::process::id() as i32).expect("own /proc stat");
        assert!(user >= 0.0 && kernel >= 0.0);
    }
}
