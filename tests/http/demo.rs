//! The demo as a user runs it: the `demo` example binary, started against a private
//! `redis-server`, spoken to over real HTTP. It checks that the playground answers bad input
//! with a 400 that says why, instead of the library's opaque 500.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let demo = Demo { child, port };
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the demo did not start listening within 20 s");
        demo
    }

    /// A GET over a fresh connection: status, the session cookie it sets (if any), body.
    pub(crate) fn get(&self, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}Connection: close\r\n\r\n"
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
            .map(|h| {
                let value = String::from_utf8_lossy(h.value);
                value.split(';').next().unwrap_or_default().to_owned()
            });
        let body = String::from_utf8_lossy(&raw[body_at..]).into_owned();
        (response.code.expect("a status"), set_cookie, body)
    }
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
