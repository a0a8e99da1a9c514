//! A private Redis Cluster: three primaries (each with 0 or more replicas) of `redis-server`
//! processes we start on free loopback ports, joined with `redis-cli --cluster create`, and
//! killed by their own PIDs on drop (see [`RedisServer`]). Never port 6379.
//!
//! Each node keeps its `nodes.conf` in a directory of its own under a temporary directory, so
//! a node killed and restarted comes back as the same node (and, after a failover, as a replica
//! of the node that replaced it). The cluster bus of each node gets a free port of its own
//! (`--cluster-port`, Redis 7+), as `port + 10000` may be taken or past 65535.
//!
//! With a TLS feature, [`RedisCluster::start_tls`] starts the same cluster speaking only TLS,
//! to clients and on the cluster bus (`--port 0 --tls-port <port> --tls-cluster yes
//! --tls-replication yes`), as managed services with in-transit encryption run it; its
//! certificates (`tls::Certs::write_to`) live in the cluster's directory.
//!
//! Why this file is long: besides starting and stopping the cluster, the fault tests need the
//! administration `redis-cli --cluster` does (a reshard, a slot migration step by step, a slot
//! no node serves), and each piece is a few lines of Redis commands.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::redis_server::{unused_port, RedisServer, TlsFiles};

/// Slot ranges and the port of the primary serving each, as one node sees them.
pub type SlotView = Vec<(u16, u16, u16)>;

/// How long the cluster may take to agree after a change.
const SETTLE: Duration = Duration::from_secs(30);
/// The longest one `redis-cli --cluster` command may run (a reshard under load included).
const REDIS_CLI_DEADLINE: Duration = Duration::from_secs(120);

pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
    /// Set when the nodes speak only TLS.
    tls: Option<TlsFiles>,
}

impl RedisCluster {
    /// Three primaries, each with `replicas` replicas, `--cluster-node-timeout 1000`, and
    /// `extra` arguments for every `redis-server`. Returns once every node says
    /// `cluster_state:ok`, all agree on who serves each slot, and every replica is in sync.
    pub fn start(replicas: usize, extra: &[&str]) -> Self {
        Self::launch(new_dir(), replicas, extra, None)
    }

    /// [`start`](Self::start), every node speaking only TLS, to clients and on the cluster bus,
    /// with certificates made for this cluster ([`tls`](Self::tls)); created with `redis-cli
    /// --tls`.
    #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
    pub fn start_tls(replicas: usize, extra: &[&str]) -> Self {
        let dir = new_dir();
        let tls = super::tls::Certs::write_to(&dir.join("tls"));
        Self::launch(dir, replicas, extra, Some(tls))
    }

    fn launch(dir: PathBuf, replicas: usize, extra: &[&str], tls: Option<TlsFiles>) -> Self {
        let count = 3 * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).expect("create a node directory");
            let bus = unused_port().to_string();
            let node_dir = node_dir.to_string_lossy().into_owned();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                &bus,
                "--dir",
                &node_dir,
            ];
            args.extend_from_slice(extra);
            nodes.push(match &tls {
                None => RedisServer::start_with(&args),
                #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
                Some(tls) => {
                    args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                    RedisServer::start_tls_with(tls, &args)
                }
                #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
                Some(_) => unreachable!("TLS files are only made with a TLS feature"),
            });
        }
        let cluster = RedisCluster { nodes, dir, tls };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let replicas = replicas.to_string();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        cluster.redis_cli(&args);
        cluster.wait_stable();
        cluster
    }

    /// The TLS files of a cluster from [`start_tls`](Self::start_tls): clients trust `ca`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The ports of every node (the TLS ports of a TLS cluster).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Seed URLs: every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A node that is running, to ask about the cluster.
    fn live(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.ping())
            .expect("some cluster node is running")
    }

    fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// A connection to the node on `port`.
    pub fn connection(&self, port: u16) -> redis::Connection {
        self.node(port).connection()
    }

    /// The node id of the node on `port` (`CLUSTER MYID`).
    pub fn node_id(&self, port: u16) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.connection(port))
            .expect("CLUSTER MYID")
    }

    /// Who serves which slots, as the node on `port` sees it, sorted by slot.
    pub fn view(&self, port: u16) -> SlotView {
        slots_view(&mut self.connection(port))
            .unwrap_or_else(|e| panic!("CLUSTER SLOTS on {port}: {e}"))
    }

    /// The ports of the primaries that serve slots.
    pub fn primaries(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .view(self.live().port())
            .into_iter()
            .map(|(_, _, p)| p)
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    /// The port of the primary serving `slot`.
    pub fn owner(&self, slot: u16) -> u16 {
        owner_in(&self.view(self.live().port()), slot)
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// How many slots each primary serves.
    pub fn slot_counts(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for (start, end, port) in self.view(self.live().port()) {
            *counts.entry(port).or_default() += (end - start) as usize + 1;
        }
        counts
    }

    /// The port of a replica of the primary on `port` (`CLUSTER NODES`).
    pub fn replica_of(&self, port: u16) -> u16 {
        let id = self.node_id(port);
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.connection(port))
            .expect("CLUSTER NODES");
        nodes
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let replica = fields.get(2)?.contains("slave") && fields.get(3) == Some(&&*id);
                let address = fields.get(1)?.split('@').next()?;
                replica.then(|| address.rsplit_once(':')?.1.parse().ok())?
            })
            .unwrap_or_else(|| panic!("the primary on {port} has no replica"))
    }

    /// `CLUSTER KEYSLOT key`, from the cluster itself.
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.live().connection())
            .expect("CLUSTER KEYSLOT")
    }

    /// A connection to the primary that serves `key`.
    pub fn connection_for(&self, key: &str) -> redis::Connection {
        self.connection(self.owner(self.keyslot(key)))
    }

    /// `HGET key field` on the primary that serves `key`.
    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query(&mut self.connection_for(key))
            .expect("HGET")
    }

    /// Every key matching `pattern`, on every primary.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .primaries()
            .into_iter()
            .flat_map(|port| {
                redis::cmd("KEYS")
                    .arg(pattern)
                    .query::<Vec<String>>(&mut self.connection(port))
                    .expect("KEYS")
            })
            .collect();
        keys.sort();
        keys
    }

    /// Kills the node on `port` (SIGKILL, by its PID), as a crash would.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
            .kill();
    }

    /// Starts the node on `port` again, with its `nodes.conf` (and no data).
    pub fn restart(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
            .restart();
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots from the primary on `from` to the
    /// one on `to`, keys included. Blocks until done; panics if redis-cli fails.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) {
        let (from, to) = (self.node_id(from), self.node_id(to));
        let entry = format!("127.0.0.1:{}", self.live().port());
        let slots = slots.to_string();
        self.redis_cli(&[
            "--cluster",
            "reshard",
            &entry,
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
        ]);
    }

    /// Starts moving `slot` from the primary on `from` to the one on `to`: `IMPORTING` on the
    /// target, `MIGRATING` on the source, as `redis-cli --cluster reshard` does for each slot.
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.cluster_cmd(to, &["SETSLOT", &slot.to_string(), "IMPORTING", &from_id]);
        self.cluster_cmd(from, &["SETSLOT", &slot.to_string(), "MIGRATING", &to_id]);
    }

    /// `MIGRATE`s these keys from `from` to `to` (a migration must have begun).
    pub fn migrate_keys(&self, from: u16, to: u16, keys: &[&str]) {
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(keys);
        let _: redis::Value = migrate
            .query(&mut self.connection(from))
            .unwrap_or_else(|e| panic!("MIGRATE {keys:?}: {e}"));
    }

    /// `MIGRATE`s every key of `slot` from `from` to `to`.
    pub fn migrate_slot_keys(&self, slot: u16, from: u16, to: u16) {
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut self.connection(from))
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                return;
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.migrate_keys(from, to, &keys);
        }
    }

    /// Ends a migration: `slot` belongs to the primary on `to`, told to the target first,
    /// then to every other running node; then waits for the cluster to agree.
    pub fn finish_migration(&self, slot: u16, to: u16) {
        let to_id = self.node_id(to);
        let mut ports = vec![to];
        ports.extend(
            self.nodes
                .iter()
                .filter(|n| n.port() != to && n.ping())
                .map(|n| n.port()),
        );
        for port in ports {
            self.cluster_cmd(port, &["SETSLOT", &slot.to_string(), "NODE", &to_id]);
        }
        self.wait_until("the cluster to agree on the moved slot", || {
            self.stable() && self.owner(slot) == to
        });
    }

    /// Moves `slot`, keys included, from the primary on `from` to the one on `to`.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        self.begin_migration(slot, from, to);
        self.migrate_slot_keys(slot, from, to);
        self.finish_migration(slot, to);
    }

    /// `CLUSTER DELSLOTS slot` on every running node: nobody serves it (its keys stay where
    /// they are). Needs `--cluster-require-full-coverage no` for the rest to stay up.
    pub fn unassign_slot(&self, slot: u16) {
        for node in self.nodes.iter().filter(|n| n.ping()) {
            self.cluster_cmd(node.port(), &["DELSLOTS", &slot.to_string()]);
        }
    }

    /// `CLUSTER ADDSLOTS slot` on the node on `port`, then waits until all agree.
    pub fn assign_slot(&self, slot: u16, port: u16) {
        self.cluster_cmd(port, &["ADDSLOTS", &slot.to_string()]);
        self.wait_until("the cluster to agree on the added slot", || {
            self.stable() && self.owner(slot) == port
        });
    }

    /// `CLUSTER <args>` on the node on `port`; panics if it fails.
    pub fn cluster_cmd(&self, port: u16, args: &[&str]) {
        let _: redis::Value = redis::cmd("CLUSTER")
            .arg(args)
            .query(&mut self.connection(port))
            .unwrap_or_else(|e| panic!("CLUSTER {} on {port}: {e}", args.join(" ")));
    }

    /// Waits until every running node says `cluster_state:ok` and all of them see the same
    /// primaries for the same slots, with every slot served; and every replica is in sync.
    pub fn wait_stable(&self) {
        self.wait_until("the cluster to settle", || self.stable());
    }

    fn stable(&self) -> bool {
        let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.ping()).collect();
        let mut first: Option<SlotView> = None;
        for node in &live {
            let info: String = match redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut node.connection())
            {
                Ok(info) => info,
                Err(_) => return false,
            };
            if !info.contains("cluster_state:ok") {
                return false;
            }
            let view = self.view(node.port());
            let covered: usize = view.iter().map(|(s, e, _)| (e - s) as usize + 1).sum();
            if covered != 16384 || first.as_ref().is_some_and(|f| *f != view) {
                return false;
            }
            first = Some(view);
            let replication: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut node.connection())
                .expect("INFO replication");
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return false;
            }
        }
        true
    }

    /// Runs `redis-cli` with `args` (over TLS, trusting the CA, on a TLS cluster); panics with
    /// its output if it fails, or if it has not ended after [`REDIS_CLI_DEADLINE`] (`--cluster
    /// create` waits for ever for nodes that cannot reach each other).
    fn redis_cli(&self, args: &[&str]) {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let mut command = Command::new("redis-cli");
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        // Its output goes to a file: a reshard prints a line per key moved, more than a pipe
        // holds while nobody reads it.
        let out = self.dir.join(format!(
            "redis-cli-{}.out",
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&out).expect("create redis-cli's output file");
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(
                file.try_clone()
                    .expect("a second handle on the output file"),
            )
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}). Install it with `apt-get install -y \
                     redis-server` (or redis-tools), or run ./scripts/test.sh, which does."
                )
            });
        let deadline = Instant::now() + REDIS_CLI_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for redis-cli") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = std::fs::read_to_string(&out).unwrap_or_default();
        match status {
            Some(status) if status.success() => {}
            Some(status) => panic!("redis-cli {} failed ({status}):\n{output}", args.join(" ")),
            None => panic!(
                "redis-cli {} had not ended after {REDIS_CLI_DEADLINE:?}:\n{output}",
                args.join(" ")
            ),
        }
    }

    /// Polls `ready` every 50 ms until it holds; panics after [`SETTLE`].
    pub fn wait_until(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + SETTLE;
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory of its own for a new cluster.
fn new_dir() -> PathBuf {
    static STARTED: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "circumflex-cluster-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Who serves which slots, as the node on `port` sees it, sorted by slot; for a thread that
/// watches a (plain) cluster without holding it.
pub fn view_of(port: u16) -> redis::RedisResult<SlotView> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    slots_view(&mut conn)
}

/// Who serves which slots, as the node `conn` is connected to sees it, sorted by slot.
fn slots_view(conn: &mut redis::Connection) -> redis::RedisResult<SlotView> {
    let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(conn)?;
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => *n,
        other => panic!("expected an integer in CLUSTER SLOTS, got {other:?}"),
    };
    let redis::Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS answered {slots:?}")
    };
    let mut view: SlotView = ranges
        .into_iter()
        .map(|range| {
            let redis::Value::Array(fields) = range else {
                panic!("a CLUSTER SLOTS range is {range:?}")
            };
            let redis::Value::Array(primary) = &fields[2] else {
                panic!("a CLUSTER SLOTS node is {:?}", fields[2])
            };
            (
                int(&fields[0]) as u16,
                int(&fields[1]) as u16,
                int(&primary[1]) as u16,
            )
        })
        .collect();
    view.sort();
    Ok(view)
}

/// The port of the primary serving `slot` in `view`.
pub fn owner_in(view: &SlotView, slot: u16) -> Option<u16> {
    view.iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, port)| *port)
}
