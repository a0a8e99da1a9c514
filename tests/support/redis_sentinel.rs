//! A private Sentinel setup on free loopback ports: one master, one replica and three sentinels
//! (quorum 2, `down-after-milliseconds` 1000, `failover-timeout` 5000), all child processes of
//! the test, killed by their own PIDs on drop. The sentinels' config files (which they rewrite)
//! and whatever the data nodes save live in a temporary directory that is removed on drop.
//!
//! The data nodes have an ACL user for the app ([`APP_USER`], [`APP_PASSWORD`]); the sentinels
//! require [`SENTINEL_PASSWORD`]. So a test that works proves that the master got the app's
//! credentials and the sentinels their own.
//!
//! With a TLS feature, [`SentinelGroup::start_tls`] starts the same group speaking only TLS:
//! data nodes on `--tls-port` with `--port 0` (the replica replicating over TLS), sentinels
//! with `port 0`, `tls-port` and `tls-replication yes` (so that they reach the data nodes and
//! each other over TLS), all with certificates made for the group.
//!
//! Why this file is long: besides starting the group (plain or TLS) and waiting until the
//! sentinels agree, the failover tests need the administration of it (a forced failover, a
//! `REPLICAOF` behind the sentinels' back, who is master, who is connected), each a few lines
//! of Redis commands on the group's own connections.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use circumflex_session::RedisConfig;

use super::{unused_port, RedisServer, TlsFiles};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";
/// The app's ACL user on the data nodes.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pw-81c2";
/// The sentinels' `requirepass`.
pub const SENTINEL_PASSWORD: &str = "sentinel-pw-5d07";

/// A master, its replica and three sentinels.
pub struct SentinelGroup {
    /// The two data nodes; which one is master changes with a failover.
    pub nodes: [RedisServer; 2],
    sentinels: Vec<SentinelProcess>,
    dir: PathBuf,
    /// Set when every node and sentinel speaks only TLS.
    tls: Option<TlsFiles>,
}

struct SentinelProcess {
    child: Child,
    port: u16,
}

impl SentinelGroup {
    /// Starts the group and waits until every sentinel sees the replica and the two other
    /// sentinels; panics (saying how to install Redis) if it cannot.
    pub fn start() -> Self {
        Self::launch(new_dir(), None)
    }

    /// [`start`](Self::start), every data node and sentinel speaking only TLS, with
    /// certificates made for the group: [`sentinel_urls`](Self::sentinel_urls) are
    /// `rediss://`, and [`config`](Self::config) trusts the group's CA.
    #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
    pub fn start_tls() -> Self {
        let dir = new_dir();
        let tls = super::tls::Certs::write_to(&dir.join("tls"));
        Self::launch(dir, Some(tls))
    }

    fn launch(dir: PathBuf, tls: Option<TlsFiles>) -> Self {
        std::fs::create_dir_all(&dir).expect("create the group's directory");
        let dir_arg = dir.display().to_string();
        // No wait for more replicas before a full sync (Redis waits 5 s by default).
        let node_args = ["--dir", &dir_arg, "--repl-diskless-sync-delay", "0"];
        let start_node = |args: &[&str]| match &tls {
            None => RedisServer::start_with(args),
            #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
            Some(tls) => RedisServer::start_tls_with(
                tls,
                &[args, &["--tls-replication", "yes"][..]].concat(),
            ),
            #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
            Some(_) => unreachable!("TLS files are only made with a TLS feature"),
        };
        let master = start_node(&node_args);
        let replica = start_node(
            &[
                &node_args[..],
                &["--replicaof", "127.0.0.1", &master.port().to_string()],
            ]
            .concat(),
        );
        for node in [&master, &replica] {
            let mut conn = node.connection();
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(APP_USER)
                .arg("on")
                .arg(format!(">{APP_PASSWORD}"))
                .arg("~*")
                .arg("+@all")
                .query::<()>(&mut conn)
                .expect("ACL SETUSER");
        }
        wait_until("the replica to sync", || {
            info_field(
                &mut replica.connection(),
                "replication",
                "master_link_status",
            )
            .as_deref()
                == Some("up")
        });
        let mut group = SentinelGroup {
            nodes: [master, replica],
            sentinels: Vec::new(),
            dir,
            tls,
        };
        for _ in 0..3 {
            let sentinel = group.start_sentinel();
            group.sentinels.push(sentinel);
        }
        group.wait_until_sentinels_agree();
        group
    }

    fn start_sentinel(&self) -> SentinelProcess {
        for _ in 0..5 {
            let port = unused_port();
            let conf = self.dir.join(format!("sentinel-{port}.conf"));
            let listen = match &self.tls {
                None => format!("port {port}\n"),
                Some(tls) => format!(
                    "port 0\n\
                     tls-port {port}\n\
                     tls-replication yes\n\
                     tls-cert-file {cert}\n\
                     tls-key-file {key}\n\
                     tls-ca-cert-file {ca}\n\
                     tls-client-cert-file {client_cert}\n\
                     tls-client-key-file {client_key}\n\
                     tls-auth-clients no\n",
                    cert = tls.cert.display(),
                    key = tls.key.display(),
                    ca = tls.ca.display(),
                    client_cert = tls.client_cert.display(),
                    client_key = tls.client_key.display(),
                ),
            };
            std::fs::write(
                &conf,
                format!(
                    "{listen}\
                     bind 127.0.0.1\n\
                     protected-mode no\n\
                     dir {dir}\n\
                     requirepass {SENTINEL_PASSWORD}\n\
                     sentinel sentinel-pass {SENTINEL_PASSWORD}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n",
                    dir = self.dir.display(),
                    master = self.nodes[0].port(),
                ),
            )
            .expect("write a sentinel config");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run redis-server --sentinel ({e}). Install it with \
                         `apt-get install -y redis-server` or run ./scripts/test.sh"
                    )
                });
            let mut sentinel = SentinelProcess { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = sentinel.child.try_wait() {
                    break; // the port was taken in between: try another
                }
                if self.sentinel_connection(port).is_some() {
                    return sentinel;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = sentinel.child.kill();
            let _ = sentinel.child.wait();
        }
        panic!("could not start a sentinel on a free loopback port after 5 attempts");
    }

    fn wait_until_sentinels_agree(&self) {
        for sentinel in &self.sentinels {
            wait_until("the sentinels to see the replica and each other", || {
                let Some(mut conn) = self.sentinel_connection(sentinel.port) else {
                    return false;
                };
                let master: Result<std::collections::HashMap<String, String>, _> =
                    redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(MASTER_NAME)
                        .query(&mut conn);
                master.is_ok_and(|m| {
                    m.get("num-slaves").map(String::as_str) == Some("1")
                        && m.get("num-other-sentinels").map(String::as_str) == Some("2")
                })
            });
        }
    }

    /// The sentinels' URLs, with their password (`rediss://` for a TLS group).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| sentinel_url(s.port, self.tls.is_some()))
            .collect()
    }

    /// The app's config: the master through the sentinels, as the app's ACL user (trusting
    /// the group's CA, for a TLS group).
    pub fn config(&self) -> RedisConfig {
        let config = RedisConfig::sentinel(MASTER_NAME, self.sentinel_urls())
            .username(APP_USER)
            .password(APP_PASSWORD);
        match &self.tls {
            Some(tls) => config.tls_ca_file(&tls.ca),
            None => config,
        }
    }

    /// The TLS files of a group from [`start_tls`](Self::start_tls): clients trust `ca`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The `REDIS_SENTINEL` form: `redis+sentinel://:pw@host:port,host:port,.../mymaster`.
    pub fn sentinel_env_url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!(
            "{scheme}://:{SENTINEL_PASSWORD}@{}/{MASTER_NAME}",
            hosts.join(",")
        )
    }

    /// The port the first sentinel that answers names as the master's.
    pub fn named_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let mut conn = self.sentinel_connection(s.port)?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .ok()?;
            addr.map(|(_, port)| port)
        })
    }

    /// The data node the sentinels name as the master.
    pub fn master(&self) -> &RedisServer {
        let port = self
            .named_master_port()
            .expect("the sentinels name a master");
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("the sentinels name {port}, not a data node"))
    }

    /// The data node on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// The port of the data node that is not on `port`.
    pub fn other_node(&self, port: u16) -> u16 {
        self.nodes
            .iter()
            .map(RedisServer::port)
            .find(|&p| p != port)
            .expect("two data nodes")
    }

    /// How many connections the app's ACL user has on the node at `port`.
    pub fn app_connections(&self, port: u16) -> usize {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of the group");
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut node.connection())
            .expect("CLIENT LIST");
        clients
            .lines()
            .filter(|c| c.contains(&format!(" user={APP_USER} ")))
            .count()
    }

    /// Sends `SENTINEL FAILOVER` to the first sentinel.
    pub fn force_failover(&self) {
        let mut conn = self
            .sentinel_connection(self.sentinels[0].port)
            .expect("a sentinel answers");
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query::<()>(&mut conn)
            .expect("SENTINEL FAILOVER");
    }

    /// Waits until the replica has every write the master acknowledged (`WAIT 1`), so that a
    /// failover cannot lose them.
    pub fn wait_for_replication(&self, master_port: u16) {
        let master = self
            .nodes
            .iter()
            .find(|n| n.port() == master_port)
            .expect("the master is a node of the group");
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut master.connection())
            .expect("WAIT");
        assert_eq!(acked, 1, "the replica did not acknowledge the writes");
    }

    /// `REPLICAOF` on the node at `port`, behind the sentinels' back: of the node at `master`,
    /// or of none (a master).
    pub fn replicaof(&self, port: u16, master: Option<u16>) {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of the group");
        let mut cmd = redis::cmd("REPLICAOF");
        match master {
            Some(master) => cmd.arg("127.0.0.1").arg(master),
            None => cmd.arg("NO").arg("ONE"),
        };
        cmd.query::<()>(&mut node.connection()).expect("REPLICAOF");
    }

    /// Whether the node on `port` reports itself a master.
    pub fn is_master(&self, port: u16) -> bool {
        let Some(node) = self.nodes.iter().find(|n| n.port() == port) else {
            return false;
        };
        let Ok(mut conn) = node.try_connection(Duration::from_secs(1)) else {
            return false;
        };
        info_field(&mut conn, "replication", "role").as_deref() == Some("master")
    }

    /// A connection to the sentinel on `port` that answered PING (over TLS, trusting the CA,
    /// for a TLS group).
    fn sentinel_connection(&self, port: u16) -> Option<redis::Connection> {
        let url = sentinel_url(port, self.tls.is_some());
        let client = match &self.tls {
            None => redis::Client::open(url).ok()?,
            #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
            Some(tls) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&tls.ca).ok()?),
                },
            )
            .ok()?,
            #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
            Some(_) => unreachable!("TLS files are only made with a TLS feature"),
        };
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        redis::cmd("PING").query::<()>(&mut conn).ok()?;
        Some(conn)
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            let _ = sentinel.child.kill();
            let _ = sentinel.child.wait();
        }
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory of its own for a new group: everything the servers write (the replica saves
/// what it syncs) goes in here, not in the working directory.
fn new_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "circumflex-sentinel-{}-{}",
        std::process::id(),
        unused_port()
    ))
}

/// The URL of the sentinel on `port`, with its password.
fn sentinel_url(port: u16, tls: bool) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    format!("{scheme}://:{SENTINEL_PASSWORD}@127.0.0.1:{port}")
}

fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(conn).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// Polls `done` every 50 ms for up to 15 s; panics naming `what` if it never holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port that the first of `sentinel_urls` to answer names as the master's, asked over
/// async connections (for tests that must not block their runtime while load runs); plain
/// sentinels only.
pub async fn named_master_port(sentinel_urls: &[String]) -> Option<u16> {
    for url in sentinel_urls {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let connect = client.get_multiplexed_async_connection();
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_millis(500), connect).await
        else {
            continue;
        };
        let addr: Result<Option<(String, u16)>, _> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await;
        if let Ok(Some((_, port))) = addr {
            return Some(port);
        }
    }
    None
}
