//! Test support: a private `redis-server` per test, on a free loopback port.
//!
//! Each [`RedisServer`] is a child process we started; it is killed (by its own PID) on drop.
//! A missing `redis-server` binary is a loud failure that says how to install it.
#![allow(dead_code)]

pub mod app;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Extra `redis-server` arguments, kept for `restart`.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (e.g. `["--timeout", "1"]`), on a free port.
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = Self::start_on(port, &extra) {
                return server;
            }
        }
        panic!("could not start redis-server on a free loopback port after 5 attempts");
    }

    /// Starts a server on a given port; `None` if it did not come up (port taken).
    fn start_on(port: u16, extra: &[String]) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}). Install it with `apt-get install -y redis-server` \
                     or run ./scripts/test.sh, which does."
                )
            });
        let mut server = RedisServer {
            child: Some(child),
            port,
            extra: extra.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    server.child = None;
                    return None;
                }
            }
            if server.ping() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same port after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(mut server) = Self::start_on(self.port, &self.extra) {
                self.child = server.child.take();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// A synchronous redis-rs connection, for inspecting and tampering with the data.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    /// Total commands processed, from `INFO stats`.
    pub fn commands_processed(&self) -> u64 {
        self.info_field("stats", "total_commands_processed")
    }

    /// One numeric field of an INFO section.
    pub fn info_field(&self, section: &str, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.connection())
            .expect("INFO");
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port with nothing listening on it (bound once, then released), for tests of a
/// store that is down.
pub fn unused_port() -> u16 {
    free_port()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}
