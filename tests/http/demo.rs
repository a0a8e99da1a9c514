//! The demo as a user runs it: the `demo` example binary, started against a private
//! `redis-server`, spoken to over real HTTP. It checks that the playground answers bad input
//! with a 400 that says why, instead of the library's opaque 500, drives the sessions-by-user
//! routes from two browsers (two cookie jars), and reads its `/metrics` after traffic.
//!
//! Why this file is long: the demo is a separate process, so the file carries its own small
//! HTTP/1.1 client with a cookie jar per browser and the code that starts, waits for and stops
//! the binary (about 200 lines); the tests themselves are the rest.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::prometheus::Scrape;
use crate::support::RedisServer;

/// The demo binary (`cargo build --example demo`, next to this test's own binary), built
/// first if it is missing: `cargo test` builds examples only as test harnesses.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let demo = profile.join("examples").join("demo");
    if !demo.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--example", "demo"]);
        // With the TLS features of this test binary: the TLS tests run the demo too.
        if cfg!(feature = "tls-rustls") {
            build.args(["--features", "tls-rustls"]);
        }
        if cfg!(feature = "tls-native-tls") {
            build.args(["--features", "tls-native-tls"]);
        }
        if profile.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build --example demo");
        assert!(status.success(), "cargo build --example demo failed");
    }
    assert!(demo.exists(), "{} is missing", demo.display());
    demo
}

/// The demo process, killed (by its own PID) when dropped.
pub(crate) struct Demo {
    child: Child,
    port: u16,
    /// Every line the demo printed to stdout (its log) so far.
    log: Arc<Mutex<Vec<String>>>,
}

/// One answer of the demo.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The whole `Set-Cookie` header, attributes included, if there is one.
    pub(crate) set_cookie: Option<String>,
    pub(crate) body: String,
}

impl Answer {
    /// The `name=value` part of `Set-Cookie`: what a browser sends back.
    fn cookie(&self) -> Option<String> {
        let set_cookie = self.set_cookie.as_deref()?;
        Some(set_cookie.split(';').next().unwrap_or_default().to_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `Max-Age` attribute of `Set-Cookie`, in seconds.
    fn max_age(&self) -> Option<u64> {
        self.set_cookie
            .as_deref()?
            .split(';')
            .find_map(|a| a.trim().strip_prefix("Max-Age="))
            .and_then(|secs| secs.parse().ok())
    }
}

impl Demo {
    fn start(redis: &RedisServer) -> Self {
        Self::start_with(&[("REDIS_URL", redis.url())])
    }

    /// Starts the demo with these environment variables (`REDIS_URL`, `REDIS_TLS_CA`, ...) on
    /// a free port, and waits until it listens.
    pub(crate) fn start_with(env: &[(&str, String)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut child = Command::new(demo_binary())
            .env("PORT", port.to_string())
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let demo = Demo { child, port, log };
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the demo did not start listening within 20 s");
        demo
    }

    /// A GET over a fresh connection: status, the session cookie it sets (if any), body.
    pub(crate) fn get(&self, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
        let answer = self.request(path, cookie, None);
        (answer.status, answer.cookie(), answer.body)
    }

    /// A GET over a fresh connection, with a `Cookie` and a `User-Agent` if given.
    pub(crate) fn request(
        &self,
        path: &str,
        cookie: Option<&str>,
        user_agent: Option<&str>,
    ) -> Answer {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        let agent = user_agent.map_or(String::new(), |a| format!("User-Agent: {a}\r\n"));
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}{agent}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the response");
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let body_at = match response.parse(&raw).expect("a valid response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial response"),
        };
        let set_cookie = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("set-cookie"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned());
        Answer {
            status: response.code.expect("a status"),
            set_cookie,
            body: String::from_utf8_lossy(&raw[body_at..]).into_owned(),
        }
    }

    /// Waits (at most 20 s) until a line of the demo's log satisfies `found`; answers the whole
    /// log then.
    fn log_with(&self, found: impl Fn(&str) -> bool) -> Vec<String> {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.iter().any(|line| found(line)) {
                return log;
            }
            assert!(
                Instant::now() < give_up,
                "no such line in the demo's log:\n{}",
                log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A browser: its own cookie jar and `User-Agent`.
struct Browser<'a> {
    demo: &'a Demo,
    agent: &'static str,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(demo: &'a Demo, agent: &'static str) -> Self {
        Browser {
            demo,
            agent,
            cookie: None,
        }
    }

    /// A GET with the jar's cookie; keeps the cookie the answer sets, forgets a removed one.
    fn get(&mut self, path: &str) -> Answer {
        let answer = self
            .demo
            .request(path, self.cookie.as_deref(), Some(self.agent));
        if let Some(cookie) = answer.cookie() {
            let removed = cookie.ends_with('=') || answer.max_age() == Some(0);
            self.cookie = (!removed).then_some(cookie);
        }
        answer
    }

    /// A GET that must answer 200; its JSON body.
    fn json(&mut self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answer.json()
    }
}

/// The `/sessions` of a browser: label to (id, current).
fn sessions_by_label(browser: &mut Browser) -> Vec<(String, String, bool)> {
    let listed = browser.json("/sessions");
    let mut out: Vec<_> = listed["sessions"]
        .as_array()
        .expect("a list of sessions")
        .iter()
        .map(|s| {
            let (created, refreshed, expires) = (
                s["created"].as_u64().expect("created, Unix seconds"),
                s["last_refresh"]
                    .as_u64()
                    .expect("last_refresh, Unix seconds"),
                s["expires"].as_u64().expect("expires, Unix seconds"),
            );
            assert!(created <= refreshed && refreshed < expires, "{s}");
            (
                s["label"].as_str().unwrap_or_default().to_owned(),
                s["id"].as_str().expect("an id").to_owned(),
                s["current"].as_bool().expect("current"),
            )
        })
        .collect();
    out.sort();
    out
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_demo_answers_bad_input_with_a_400_that_says_why() {
    let redis = RedisServer::start();
    let demo = Demo::start(&redis);

    let (status, cookie, body) = demo.get("/counter", None);
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("the first write sets the session cookie");

    // A counter read as a string: the library's 500, the playground's 400 with the reason.
    let (status, _, body) = demo.get("/kv/get?key=counter", Some(&cookie));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("counter") && body.contains("could not be (de)serialised"),
        "{body}"
    );
    // A key with the reserved NUL byte.
    let (status, _, body) = demo.get("/kv/set?key=%00x&value=1", Some(&cookie));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid session key"), "{body}");
    // A session filled to its 256 keys (the counter and 255 more): the next key is refused.
    let (status, _, _) = demo.get("/kv/set?key=name&value=ann", Some(&cookie));
    assert_eq!(status, 200);
    for i in 0..254 {
        let (status, _, body) = demo.get(&format!("/kv/set?key=k{i}&value=v"), Some(&cookie));
        assert_eq!(status, 200, "key {i}: {body}");
    }
    let (status, _, body) = demo.get("/kv/set?key=one-too-many&value=v", Some(&cookie));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("session is full"), "{body}");
    // And the session is intact.
    let (status, _, body) = demo.get("/kv/get?key=name", Some(&cookie));
    assert_eq!(status, 200);
    assert!(body.contains("\"ann\""), "{body}");
}

#[test]
fn a_demo_whose_redis_refuses_its_password_stops_with_the_reason_and_without_the_password() {
    let redis = RedisServer::start();
    crate::support::faults::config_set(&mut redis.connection(), "requirepass", "right-pw-5e1f");
    let url = format!("redis://:wrong-pw-9c3a@127.0.0.1:{}", redis.port());
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let out = Command::new(demo_binary())
        .env("PORT", port.to_string())
        .env("REDIS_URL", &url)
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the demo served with a wrong password"
    );
    assert!(
        stderr.contains("error: Redis is not usable") && stderr.contains("WRONGPASS"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-pw-9c3a") && !stdout.contains("wrong-pw-9c3a"),
        "the password was printed: {stdout} {stderr}"
    );
}

#[test]
fn two_browsers_of_one_user_in_the_demo_list_each_other_and_logout_everywhere_ends_the_other() {
    let redis = RedisServer::start();
    let demo = Demo::start(&redis);
    let mut laptop = Browser::new(&demo, "laptop-browser/1.0");
    let mut phone = Browser::new(&demo, "phone-browser/2.0");

    // The laptop had an anonymous session before login: login keeps what it held.
    laptop.json("/kv/set?key=theme&value=dark");
    let anonymous = laptop.cookie.clone();
    assert_eq!(laptop.json("/login?user=ann"), json!({ "user": "ann" }));
    assert_ne!(
        laptop.cookie, anonymous,
        "login moves the session to a new id"
    );
    assert_eq!(phone.json("/login?user=ann"), json!({ "user": "ann" }));
    assert_eq!(laptop.json("/kv/get?key=theme")["value"], "dark");

    // Both see both sessions, labelled with their user agents, each marked as its own.
    let from_laptop = sessions_by_label(&mut laptop);
    let labels: Vec<_> = from_laptop
        .iter()
        .map(|(l, _, c)| (l.as_str(), *c))
        .collect();
    assert_eq!(
        labels,
        [("laptop-browser/1.0", true), ("phone-browser/2.0", false)]
    );
    let from_phone = sessions_by_label(&mut phone);
    let labels: Vec<_> = from_phone
        .iter()
        .map(|(l, _, c)| (l.as_str(), *c))
        .collect();
    assert_eq!(
        labels,
        [("laptop-browser/1.0", false), ("phone-browser/2.0", true)]
    );
    let ids: BTreeSet<_> = from_laptop.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(
        ids,
        from_phone.iter().map(|(_, id, _)| id.clone()).collect(),
        "the same two sessions"
    );

    // Logging out everywhere else from the laptop ends the phone's session.
    assert_eq!(laptop.json("/logout-everywhere"), json!({ "revoked": 1 }));
    assert_eq!(phone.json("/whoami"), json!({ "user": null }));
    assert_eq!(laptop.json("/whoami"), json!({ "user": "ann" }));
    let left = sessions_by_label(&mut laptop);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].2, "the laptop's own session is the one left");

    // `?all=1` ends the laptop's too, and removes its cookie.
    assert_eq!(
        laptop.json("/logout-everywhere?all=1"),
        json!({ "revoked": 1 })
    );
    assert_eq!(laptop.cookie, None, "the cookie was removed");
    assert_eq!(laptop.json("/whoami"), json!({ "user": null }));

    // The event listener logged the logins and revocations with their user, never a session id.
    let log = demo.log_with(|line| line.contains("kind=Revoked") && line.contains("user=ann"));
    assert!(
        log.iter()
            .any(|line| line.contains("kind=Bound") && line.contains("user=ann")),
        "{log:#?}"
    );
    for id in &ids {
        assert!(
            log.iter().all(|line| !line.contains(id.as_str())),
            "a session id was logged: {log:#?}"
        );
    }
}

#[test]
fn remember_me_in_the_demo_makes_the_cookie_persistent_within_the_bounds() {
    let redis = RedisServer::start();
    let demo = Demo::start(&redis);
    let mut browser = Browser::new(&demo, "remembering-browser/1.0");
    let login = browser.get("/login?user=bo");
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(login.set_cookie.is_some(), "login sets the cookie");
    assert_eq!(
        login.max_age(),
        None,
        "a browser-session cookie before remember-me"
    );

    let remembered = browser.get("/remember-me");
    assert_eq!(remembered.status, 200, "{}", remembered.body);
    assert_eq!(remembered.json(), json!({ "days": 30 }));
    assert_eq!(
        remembered.max_age(),
        Some(30 * 24 * 3600),
        "{:?}",
        remembered.set_cookie
    );

    let week = browser.get("/remember-me?days=7");
    assert_eq!(week.status, 200, "{}", week.body);
    assert_eq!(week.max_age(), Some(7 * 24 * 3600), "{:?}", week.set_cookie);
    let listed = browser.json("/sessions");
    let session = &listed["sessions"][0];
    let idle = session["expires"].as_u64().unwrap() - session["last_refresh"].as_u64().unwrap();
    assert_eq!(
        idle,
        7 * 24 * 3600,
        "listed with its own time to idle: {session}"
    );

    // Past `session.max_tti_secs` (30 days): the client's mistake, a 400 that says why.
    let too_long = browser.get("/remember-me?days=31");
    assert_eq!(too_long.status, 400, "{}", too_long.body);
    assert!(too_long.body.contains("time to idle"), "{}", too_long.body);
    assert_eq!(browser.json("/whoami"), json!({ "user": "bo" }));
}

#[test]
fn the_demo_serves_metrics_that_count_the_traffic_it_had() {
    let redis = RedisServer::start();
    let demo = Demo::start(&redis);
    let mut browser = Browser::new(&demo, "counting-browser/1.0");
    for expected in 1..=3 {
        assert_eq!(browser.json("/counter"), json!({ "counter": expected }));
    }
    assert_eq!(browser.json("/kv/get?key=color")["value"], Value::Null);

    let answer = demo.request("/metrics", browser.cookie.as_deref(), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.set_cookie, None,
        "the scrape does not touch the session"
    );
    let scrape = Scrape::parse(&answer.body);
    let redis_backend = [("backend", "redis")];
    let batches = scrape.get("circumflex_session_batch_size_count", &redis_backend);
    let commands = scrape.get("circumflex_session_batch_size_sum", &redis_backend);
    // One command per request here (the counter's incr, or the read), each request alone.
    assert!(
        batches >= 1.0 && commands == 4.0,
        "{batches} batches of {commands} commands"
    );
    assert_eq!(
        scrape.get("circumflex_session_commands_total", &[("op", "incr")]),
        3.0
    );
    assert_eq!(
        scrape.get("circumflex_session_commands_total", &[("op", "get")]),
        1.0
    );
    assert_eq!(
        scrape.get("circumflex_session_commands_total", &[]),
        commands
    );
    assert_eq!(
        scrape.get("circumflex_session_sessions_created_total", &redis_backend),
        1.0
    );
    assert!(scrape.get("circumflex_session_round_trips_total", &[]) >= batches);
    assert_eq!(
        scrape.get(
            "circumflex_session_flush_duration_seconds_count",
            &redis_backend
        ),
        batches
    );
    assert_eq!(
        scrape.get("circumflex_session_errors_total", &[]),
        0.0,
        "no command failed"
    );
}
