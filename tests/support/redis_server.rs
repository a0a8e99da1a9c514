//! A private `redis-server` on a free loopback port: the one starter of the tests and of the
//! examples that need a Redis of their own (`examples/demo.rs` and `examples/sizing.rs` include
//! this file with `#[path]`). It depends on nothing else in `tests/support`.
//!
//! Each [`RedisServer`] is a child process we started; it is killed (by its own PID) on drop.
//! Port 6379 is never used, so a Redis someone runs on the default port is never touched.
//! [`RedisServer::start`] panics with install advice when the binary is missing (a test must
//! fail loudly, never skip); [`RedisServer::try_start`] returns the reason instead, for callers
//! that have a fallback. With a TLS feature, [`RedisServer::start_tls_with`] starts one that
//! speaks only TLS (the cluster and Sentinel tests over TLS use it for every node).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get the binary, in every message that says it is missing.
const INSTALL: &str =
    "Install it with `apt-get install -y redis-server` or run ./scripts/test.sh, which does.";

/// The PEM files of a server that speaks only TLS: its certificate and key, the CA that signed
/// them (which its clients trust), and the client certificate and key it presents when it
/// connects out (cluster bus, replication, a sentinel to the data nodes). Clients are not asked
/// for a certificate, but the cluster bus always asks: a node with no certificate for client
/// use (`tls-client-cert-file`, else `tls-cert-file`, which names only `serverAuth`) is
/// refused by its peers, and the cluster never forms.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// The `redis-server` (or sentinel) arguments: TLS only on `port` (`--port 0`), no client
    /// certificates asked for.
    fn server_args(&self, port: u16) -> Vec<String> {
        let path = |p: &PathBuf| p.to_str().expect("UTF-8 temporary path").to_owned();
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path(&self.cert),
            "--tls-key-file",
            &path(&self.key),
            "--tls-ca-cert-file",
            &path(&self.ca),
            "--tls-client-cert-file",
            &path(&self.client_cert),
            "--tls-client-key-file",
            &path(&self.client_key),
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Extra `redis-server` arguments, kept for `restart`.
    extra: Vec<String>,
    /// Set when the server speaks only TLS.
    tls: Option<TlsFiles>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING; panics, saying how to
    /// install Redis, if it cannot.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (e.g. `["--timeout", "1"]`), on a free port;
    /// panics if it cannot.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::try_start_with(extra).unwrap_or_else(|problem| panic!("{problem}"))
    }

    /// Starts a server on a free port, or says why it could not (no binary, no port).
    pub fn try_start() -> Result<Self, String> {
        Self::try_start_with(&[])
    }

    /// [`try_start`](Self::try_start) with extra `redis-server` arguments.
    pub fn try_start_with(extra: &[&str]) -> Result<Self, String> {
        Self::try_start_as(extra, None)
    }

    /// Starts a server that speaks only TLS, with these files, on a free port (`--port 0
    /// --tls-port <port>`), and extra arguments; panics if it cannot. [`url`](Self::url) is
    /// then `rediss://`, and [`connection`](Self::connection) trusts the CA.
    #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
    pub fn start_tls_with(tls: &TlsFiles, extra: &[&str]) -> Self {
        Self::try_start_as(extra, Some(tls.clone())).unwrap_or_else(|problem| panic!("{problem}"))
    }

    fn try_start_as(extra: &[&str], tls: Option<TlsFiles>) -> Result<Self, String> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // The port is found by binding port 0 and releasing it, so another process may take
        // it in between: then the server exits at once and we try another port.
        for _ in 0..5 {
            let port = free_port()?;
            if let Some(server) = Self::start_on(port, &extra, tls.as_ref())? {
                return Ok(server);
            }
        }
        Err("could not start redis-server on a free loopback port after 5 attempts".to_owned())
    }

    /// Starts a server on a given port: `Ok(None)` if it did not come up (port taken), `Err` if
    /// the binary cannot be run.
    fn start_on(
        port: u16,
        extra: &[String],
        tls: Option<&TlsFiles>,
    ) -> Result<Option<Self>, String> {
        let listen = match tls {
            Some(tls) => tls.server_args(port),
            None => vec!["--port".to_owned(), port.to_string()],
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args([
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
            .map_err(|e| format!("cannot run redis-server ({e}). {INSTALL}"))?;
        let mut server = RedisServer {
            child: Some(child),
            port,
            extra: extra.to_vec(),
            tls: tls.cloned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    server.child = None;
                    return Ok(None);
                }
            }
            if server.ping() {
                return Ok(Some(server));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The files of a TLS server.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        if self.tls.is_some() {
            return self
                .try_connection(Duration::from_millis(500))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
        }
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
            match Self::start_on(self.port, &self.extra, self.tls.as_ref()) {
                Ok(Some(mut server)) => {
                    self.child = server.child.take();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(problem) => panic!("{problem}"),
            }
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// A synchronous redis-rs connection, for inspecting and tampering with the data.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .and_then(|c| c.get_connection())
            .expect("connect to the private redis-server")
    }

    /// A synchronous connection that gives up after `timeout` (to connect, and then to read).
    pub fn try_connection(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let conn = self.client()?.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        Ok(conn)
    }

    /// A redis-rs client for the server: over TLS, trusting the CA, for a TLS server.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url()),
            #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
            Some(tls) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&tls.ca)?),
                },
            ),
            #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
            Some(_) => unreachable!("a TLS server is only started with a TLS feature"),
        }
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
    free_port().unwrap_or_else(|problem| panic!("{problem}"))
}

/// A free loopback port other than Redis's default 6379.
fn free_port() -> Result<u16, String> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("cannot bind an ephemeral loopback port: {e}"))?;
        if port != 6379 {
            return Ok(port);
        }
    }
}
