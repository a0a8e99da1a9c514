//! Which primary serves each of the 16384 hash slots: learned from `CLUSTER SLOTS` on our own
//! node connections, patched by `MOVED` replies, and refreshed on demand (rate-limited).
//!
//! Why this file is long: the slot map, its refresh and the parsing of `CLUSTER SLOTS` are one
//! job (the refresh only makes sense with the map it fills, the parser only with the refresh),
//! and a third of the file is the unit tests of the slot function and the parser.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::{ConnectionAddr, ConnectionInfo, Value};

use crate::backend::redis::client;
use crate::backend::redis::connections::Connections;
use crate::backend::redis::errors::redis_error;
use crate::config::RedisConfig;
use crate::error::{Error, StoreError};

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;
/// An entry of the owner table for a slot no known primary serves.
const UNSERVED: u16 = u16::MAX;
/// Least time between two refreshes of the slot map: during a failover every batch that
/// touches the dead primary asks for one, and one answer per interval is plenty.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The slot of a key: CRC16/XMODEM of its hash tag (the part between the first `{` and the
/// next `}`, when not empty) or of the whole key, modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % SLOTS as u16
}

/// One cluster node and the pool of connections to it.
pub(super) struct Node {
    /// `host:port`, as the cluster names the node (never holds a password).
    pub(super) addr: String,
    host: String,
    port: u16,
    pub(super) connections: Connections,
}

impl Node {
    /// The host a redirect names, or this node's when it names only a port (`MOVED 3999 :6381`:
    /// the node that answered, on another port).
    pub(super) fn or_self<'a>(&'a self, host: &'a str) -> &'a str {
        if host.is_empty() {
            &self.host
        } else {
            host
        }
    }

    fn is(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host == host
    }

    /// An error of this node, naming it.
    pub(super) fn error(&self, error: Error) -> Error {
        let context = format!("cluster node {}", self.addr);
        match error {
            Error::Unavailable(cause) => Error::unavailable(StoreError::caused_by(context, cause)),
            other => Error::unavailable(StoreError::caused_by(context, other)),
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.addr)
            .field("pool", &self.connections.state())
            .finish()
    }
}

/// The slot map as last learned.
struct Map {
    /// For each slot, the index in `nodes` of its primary, or [`UNSERVED`].
    owners: Box<[u16]>,
    /// Every node of the last view (primaries and replicas), and those redirects named since.
    nodes: Vec<Arc<Node>>,
    /// Whether a view was ever installed.
    loaded: bool,
}

impl Map {
    fn index_of(&self, host: &str, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.is(host, port))
    }
}

/// One slot range of a `CLUSTER SLOTS` reply: its primary, then its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    start: u16,
    end: u16,
    nodes: Vec<(String, u16)>,
}

/// The slot map of one cluster, and how to reach its nodes.
pub(super) struct Topology {
    config: RedisConfig,
    /// The connection settings of the first seed (scheme, user, password, TLS), given to every
    /// node discovered: only host and port change.
    template: ConnectionInfo,
    /// The configured nodes, always asked for the map besides those it names.
    seeds: Vec<Arc<Node>>,
    map: RwLock<Map>,
    /// When the last refresh ended; held while one runs, so that concurrent callers wait for
    /// it and then use its result.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    /// Why the last refresh failed, to say why a slot has no known owner.
    refresh_error: Mutex<Option<Error>>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Topology")
            .field("seeds", &self.seeds)
            .field("nodes", &map.nodes)
            .finish()
    }
}

impl Topology {
    /// The topology of the cluster the seed URLs belong to. Nothing is connected yet: the map
    /// is loaded by the first batch (or [`check`](super::Cluster::check)).
    pub(super) fn new(config: &RedisConfig, seeds: &[String]) -> Result<Self, Error> {
        let mut template = None;
        let mut nodes = Vec::with_capacity(seeds.len());
        for url in seeds {
            let info = client::connection_info(url, config)?;
            let (host, port) = match info.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    (host.clone(), *port)
                }
                // Not echoed: a socket URL may carry its password in the query.
                _ => {
                    return Err(Error::Config(
                        "redis.cluster_nodes must be redis:// or rediss:// URLs".into(),
                    ))
                }
            };
            template.get_or_insert_with(|| info.clone());
            nodes.push(new_node(config, info, host, port)?);
        }
        let template = template.ok_or_else(|| {
            Error::Config("redis.cluster_nodes must name at least one node".into())
        })?;
        Ok(Self {
            config: config.clone(),
            template,
            seeds: nodes,
            map: RwLock::new(Map {
                owners: vec![UNSERVED; SLOTS].into_boxed_slice(),
                nodes: Vec::new(),
                loaded: false,
            }),
            refreshed: tokio::sync::Mutex::new(None),
            refresh_error: Mutex::new(None),
        })
    }

    /// Whether a slot map was ever loaded.
    pub(super) fn loaded(&self) -> bool {
        self.map.read().unwrap_or_else(|p| p.into_inner()).loaded
    }

    /// The primary of each slot, as far as the map knows (`None`: no known primary).
    pub(super) fn owners(&self, slots: impl Iterator<Item = u16>) -> Vec<Option<Arc<Node>>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        slots
            .map(|slot| {
                let index = map.owners[slot as usize];
                map.nodes.get(index as usize).cloned()
            })
            .collect()
    }

    /// The distinct primaries of the map.
    pub(super) fn primaries(&self) -> Vec<Arc<Node>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut seen = vec![false; map.nodes.len()];
        let mut primaries = Vec::new();
        for &index in map.owners.iter() {
            if let Some(node) = map.nodes.get(index as usize) {
                if !seen[index as usize] {
                    seen[index as usize] = true;
                    primaries.push(node.clone());
                }
            }
        }
        primaries
    }

    /// How many slots no known primary serves.
    pub(super) fn unserved(&self) -> usize {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.owners.iter().filter(|&&i| i == UNSERVED).count()
    }

    /// The error for a slot with no known primary.
    pub(super) fn unserved_error(&self, slot: u16) -> Error {
        let last = self
            .refresh_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match last {
            Some(cause) if !self.loaded() => Error::unavailable(StoreError::caused_by(
                "could not load the cluster's slot map",
                cause,
            )),
            _ => Error::unavailable(StoreError::new(format!(
                "no known cluster node serves hash slot {slot}"
            ))),
        }
    }

    /// The node at `host:port`, known or new (a redirect may name a node the map does not
    /// know yet).
    pub(super) fn node(&self, host: &str, port: u16) -> Result<Arc<Node>, Error> {
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = map.index_of(host, port) {
                return Ok(map.nodes[i].clone());
            }
        }
        let node = self.discovered(host, port)?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = map.index_of(host, port) {
            return Ok(map.nodes[i].clone());
        }
        map.nodes.push(node.clone());
        Ok(node)
    }

    /// Records what a `MOVED` reply said: `host:port` now serves `slot`.
    pub(super) fn moved(&self, slot: u16, host: &str, port: u16) -> Result<Arc<Node>, Error> {
        let node = self.node(host, port)?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = map.nodes.iter().position(|n| Arc::ptr_eq(n, &node)) {
            if let Some(owner) = map.owners.get_mut(slot as usize) {
                *owner = i as u16;
            }
        }
        Ok(node)
    }

    /// Starts a refresh in the background, if one is due: after a `MOVED` the map is patched
    /// for that slot already, and a reshard usually moved its neighbours too.
    pub(super) fn refresh_soon(self: &Arc<Self>) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let topology = self.clone();
            runtime.spawn(async move { topology.refresh(false).await });
        }
    }

    /// Loads the slot map again, unless one was loaded less than [`MIN_REFRESH_INTERVAL`] ago
    /// (`force` skips that check), or while this call waited for another refresh to end.
    ///
    /// Every known node and every seed is asked for `CLUSTER SLOTS` at once, and the view most
    /// of them give wins: a node that restarted with an old `nodes.conf` may claim slots for a
    /// moment before the others tell it about the failover, and must not decide alone.
    pub(super) async fn refresh(&self, force: bool) -> Result<(), Error> {
        let asked = Instant::now();
        let mut refreshed = self.refreshed.lock().await;
        if let Some(at) = *refreshed {
            if at > asked || (!force && at.elapsed() < MIN_REFRESH_INTERVAL) {
                return Ok(());
            }
        }
        let result = self.load().await;
        *refreshed = Some(Instant::now());
        *self.refresh_error.lock().unwrap_or_else(|p| p.into_inner()) = result.clone().err();
        if let Err(error) = &result {
            tracing::debug!(%error, "could not refresh the cluster slot map");
        }
        result
    }

    async fn load(&self) -> Result<(), Error> {
        let candidates: Vec<Arc<Node>> = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<Arc<Node>> = map.nodes.clone();
            for seed in &self.seeds {
                if !all.iter().any(|n| n.is(&seed.host, seed.port)) {
                    all.push(seed.clone());
                }
            }
            all
        };
        let answers = join_all(candidates.iter().map(|node| cluster_slots(node))).await;
        let mut views: Vec<(Vec<Range>, usize)> = Vec::new();
        let mut last_error = None;
        for answer in answers {
            match answer {
                Ok(view) => match views.iter_mut().find(|(v, _)| same_primaries(v, &view)) {
                    Some((_, votes)) => *votes += 1,
                    None => views.push((view, 1)),
                },
                Err(error) => last_error = Some(error),
            }
        }
        // The most common view; of equals, the first answer's.
        let Some((view, _)) = views
            .into_iter()
            .rev()
            .max_by_key(|(_, votes)| *votes)
            .filter(|(view, _)| !view.is_empty())
        else {
            return Err(last_error.unwrap_or_else(|| {
                Error::unavailable(StoreError::new("no cluster node knows of any hash slot"))
            }));
        };
        self.install(&view)
    }

    /// Replaces the map with `view`, keeping the pools of nodes that stay.
    fn install(&self, view: &[Range]) -> Result<(), Error> {
        let known: Vec<Arc<Node>> = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            map.nodes.clone()
        };
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut owners = vec![UNSERVED; SLOTS].into_boxed_slice();
        for range in view {
            let mut first = true;
            for (host, port) in &range.nodes {
                let index = match nodes.iter().position(|n| n.is(host, *port)) {
                    Some(i) => i,
                    None => {
                        let node = match known
                            .iter()
                            .chain(self.seeds.iter())
                            .find(|n| n.is(host, *port))
                        {
                            Some(node) => node.clone(),
                            None => self.discovered(host, *port)?,
                        };
                        nodes.push(node);
                        nodes.len() - 1
                    }
                };
                if first {
                    owners[range.start as usize..=range.end as usize].fill(index as u16);
                    first = false;
                }
            }
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let changed = !map.loaded
            || map.owners != owners
            || map.nodes.len() != nodes.len()
            || map.nodes.iter().zip(&nodes).any(|(a, b)| a.addr != b.addr);
        *map = Map {
            owners,
            nodes,
            loaded: true,
        };
        if changed {
            let primaries = {
                let mut seen: Vec<u16> = map.owners.to_vec();
                seen.sort_unstable();
                seen.dedup();
                seen.into_iter().filter(|&i| i != UNSERVED).count()
            };
            tracing::info!(
                primaries,
                nodes = map.nodes.len(),
                "Redis Cluster slot map loaded"
            );
        }
        Ok(())
    }

    /// The connection settings of a node found in a slot map or a redirect: the first
    /// seed's (scheme, user, password, database, TCP settings), at `host:port`.
    fn node_info(&self, host: &str, port: u16) -> ConnectionInfo {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        self.template.clone().set_addr(addr)
    }

    /// A node found in a slot map or a redirect, with the first seed's settings.
    fn discovered(&self, host: &str, port: u16) -> Result<Arc<Node>, Error> {
        let info = self.node_info(host, port);
        new_node(&self.config, info, host.to_owned(), port).map_err(|e| {
            Error::unavailable(StoreError::caused_by(
                format!("cannot connect to cluster node {host}:{port}"),
                e,
            ))
        })
    }
}

fn new_node(
    config: &RedisConfig,
    info: ConnectionInfo,
    host: String,
    port: u16,
) -> Result<Arc<Node>, Error> {
    let client = client::client(info, &config.tls)?;
    Ok(Arc::new(Node {
        addr: format!("{host}:{port}"),
        host,
        port,
        connections: Connections::fail_fast(config, client),
    }))
}

/// Whether two views give every slot range the same primary.
fn same_primaries(a: &[Range], b: &[Range]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.start == y.start && x.end == y.end && x.nodes.first() == y.nodes.first()
        })
}

/// Asks one node for its view of the slot map.
async fn cluster_slots(node: &Node) -> Result<Vec<Range>, Error> {
    let mut conn = node.connections.live().await.map_err(|e| node.error(e))?;
    match redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Value>(&mut conn.conn)
        .await
    {
        Ok(value) => {
            conn.alive_at = Instant::now();
            parse_slots(value, &node.host).ok_or_else(|| {
                node.error(Error::unavailable(StoreError::new(
                    "unexpected CLUSTER SLOTS reply",
                )))
            })
        }
        Err(e) => {
            conn.broken = true;
            if e.is_connection_dropped() {
                node.connections.lost();
            }
            Err(node.error(redis_error(e)))
        }
    }
}

/// Parses a `CLUSTER SLOTS` reply, sorted by slot. A node named by an empty host (or a
/// wildcard, or NULL) is on the host we asked; a range whose primary is unknown (`?`) is left
/// out. `None` for a reply of the wrong shape.
fn parse_slots(value: Value, asked_host: &str) -> Option<Vec<Range>> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(fields) = item else {
            return None;
        };
        let mut fields = fields.into_iter();
        let (Some(Value::Int(start)), Some(Value::Int(end))) = (fields.next(), fields.next())
        else {
            return None;
        };
        let (start, end) = (u16::try_from(start).ok()?, u16::try_from(end).ok()?);
        if start > end || end as usize >= SLOTS {
            return None;
        }
        let mut nodes = Vec::new();
        for (i, node) in fields.enumerate() {
            match parse_node(node, asked_host) {
                Some(node) => nodes.push(node),
                // Without its primary the range is not served as far as we know.
                None if i == 0 => break,
                None => {}
            }
        }
        if !nodes.is_empty() {
            ranges.push(Range { start, end, nodes });
        }
    }
    ranges.sort_by_key(|r| r.start);
    Some(ranges)
}

fn parse_node(value: Value, asked_host: &str) -> Option<(String, u16)> {
    let Value::Array(fields) = value else {
        return None;
    };
    let mut fields = fields.into_iter();
    let host = match fields.next()? {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        Value::SimpleString(s) => s,
        Value::Nil => String::new(),
        _ => return None,
    };
    let Some(Value::Int(port)) = fields.next() else {
        return None;
    };
    let port = u16::try_from(port).ok()?;
    let host = match host.as_str() {
        "?" => return None,
        "" | "0.0.0.0" | "::" => asked_host.to_owned(),
        _ => host,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(id.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn the_slot_of_a_key_hashes_its_tag_only() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"session:{0a1b}:x"), slot(b"0a1b"));
        assert_eq!(slot(b"session:{0a1b}:x"), slot(b"other:{0a1b}:y"));
        // An empty tag hashes the whole key; only the first `{` counts.
        assert_eq!(slot(b"foo{}{bar}"), crc(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar"), crc(b"foo{bar"));
    }

    fn crc(key: &[u8]) -> u16 {
        crc16::State::<crc16::XMODEM>::calculate(key) % SLOTS as u16
    }

    #[test]
    fn a_cluster_slots_reply_becomes_sorted_ranges_of_primaries_and_replicas() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("", 7001, "b"),
                node("127.0.0.1", 7004, "e"),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000, "a"),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("?", 7002, "c"),
                node("10.0.0.3", 7005, "f"),
            ]),
        ]);
        let ranges = parse_slots(reply, "10.0.0.9").expect("a valid reply");
        assert_eq!(
            ranges,
            vec![
                Range {
                    start: 0,
                    end: 5460,
                    nodes: vec![("10.0.0.1".into(), 7000)],
                },
                Range {
                    start: 5461,
                    end: 10922,
                    nodes: vec![("10.0.0.9".into(), 7001), ("127.0.0.1".into(), 7004)],
                },
            ],
            "an empty host is the asked node's; a range with an unknown primary is left out"
        );
    }

    #[tokio::test]
    async fn a_discovered_node_gets_the_first_seeds_credentials_and_scheme() {
        // (A runtime because the seeds' pools are built at once, connected lazily.)
        let config =
            RedisConfig::cluster(["redis://ann:pw@10.0.0.1:7000", "redis://10.0.0.2:7001"])
                .password("from-config");
        let topology = Topology::new(&config, &config.cluster_nodes).expect("valid seeds");
        let info = topology.node_info("10.0.0.9", 7005);
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(h, 7005) if h == "10.0.0.9"));
        assert_eq!(info.redis_settings().username(), Some("ann"));
        assert_eq!(
            info.redis_settings().password(),
            Some("from-config"),
            "the config overrides the URL"
        );
        let unix = RedisConfig::cluster(["unix:///tmp/r.sock?pass=s3cret"]);
        let error = Topology::new(&unix, &unix.cluster_nodes)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("redis://") && !error.contains("s3cret"),
            "{error}"
        );
    }

    #[test]
    fn a_malformed_cluster_slots_reply_is_refused() {
        assert_eq!(parse_slots(Value::Okay, "h"), None);
        let bad_range = Value::Array(vec![Value::Array(vec![
            Value::Int(10),
            Value::Int(16384),
            node("h", 1, "x"),
        ])]);
        assert_eq!(parse_slots(bad_range, "h"), None);
        let reversed = Value::Array(vec![Value::Array(vec![
            Value::Int(10),
            Value::Int(9),
            node("h", 1, "x"),
        ])]);
        assert_eq!(parse_slots(reversed, "h"), None);
    }
}
