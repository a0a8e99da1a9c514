//! Redis Sentinel: which server is the master, asked afresh for every new connection, and a
//! watcher that notices when the sentinels name another one.
//!
//! Every connection the pool opens starts with redis-rs's sentinel client: it asks the
//! sentinels (up to three at once, in the configured order) for the master, skips a master
//! they flag down, and connects to the one named to confirm with `ROLE` that it is a master.
//! Nothing about the master is remembered beyond the connection itself.
//!
//! # Why a watcher
//! A pooled connection outlives the answer it was opened with, and a failover does not always
//! break it. Measured with Redis 7.0 (`down-after-milliseconds` 1000), after
//! `SENTINEL FAILOVER`: the replica is master after 0.26 s, the sentinels name it after 1.1 s,
//! but the old master, still running, answers as a master and accepts writes, which the new
//! master never sees, until the sentinels turn it into a replica 10 s later. Waiting for its
//! `READONLY` would write into the void for those ten seconds. So the first use of the pool
//! starts a task that asks one sentinel for the master every [`WATCH_PERIOD`]; when the answer
//! changes it counts a switch, and the pool replaces every connection opened before it. The
//! task stops when the backend is dropped; if its runtime ends first, the next use of the pool
//! starts another.
//!
//! Writes that the old master acknowledged between the promotion and the switch (about a
//! second, plus up to one [`WATCH_PERIOD`]) are lost: Redis replicates asynchronously, and no
//! sentinel client can see that window.
//!
//! # Settings
//! The sentinels' URLs carry their own credentials (one user and password for all of them:
//! redis-rs's sentinel client takes one); the master gets the database, user and password of
//! the [`RedisConfig`], and TLS when the sentinel URLs are `rediss://`. The master's user needs
//! `ROLE` (or `INFO`), which the discovery sends. TLS files (a private CA, a client
//! certificate) apply to the sentinels; to the master only with the `tls-rustls` feature,
//! because redis-rs's sentinel client takes custom certificates for the master from rustls
//! alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError};

use super::client;
use crate::config::{redact_url, RedisConfig, SentinelConfig};
use crate::error::{Error, StoreError};

/// How often the watcher asks a sentinel which server is the master. A write sent to the old
/// master after a switch is lost, so this bounds how long that can go on; two questions a
/// second to a sentinel cost nothing.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// The sentinels of one master, and what the watcher last heard from them.
pub(super) struct Sentinels {
    /// redis-rs's sentinel client. Behind a lock because a lookup takes `&mut self` (it keeps
    /// one verified connection per sentinel); lookups only happen when a connection opens.
    client: tokio::sync::Mutex<SentinelClient>,
    master_name: String,
    /// The sentinels, with their credentials and TLS settings, for the watcher and `check`.
    nodes: Vec<ConnectionInfo>,
    /// The sentinel URLs with their passwords redacted, for messages.
    shown: String,
    /// Connect and response timeouts of the watcher's and `check`'s connections.
    timeouts: AsyncConnectionConfig,
    /// How many times the watcher saw the sentinels name a new master.
    switches: AtomicU64,
    /// The master the watcher last heard named, `host:port`.
    named: Mutex<Option<String>>,
    /// Whether a watcher task is running.
    watching: AtomicBool,
}

impl Sentinels {
    /// The sentinels of `sentinel`, the master getting the settings of `config`.
    pub(super) fn new(config: &RedisConfig, sentinel: &SentinelConfig) -> Result<Arc<Self>, Error> {
        let mut nodes = Vec::with_capacity(sentinel.nodes.len());
        for url in &sentinel.nodes {
            // The master's database, user and password are not the sentinel's: parse the URL
            // with none of them.
            let info = client::connection_info(url, &RedisConfig::default())?;
            if info.redis_settings().db() != 0 {
                return Err(Error::Config(format!(
                    "redis.sentinel.nodes: {} names a database; a sentinel has none (set redis.db \
                     for the master)",
                    redact_url(url)
                )));
            }
            // TLS files apply to the sentinels too; a client built with them carries them in
            // its connection info.
            nodes.push(client::client(info, &config.tls)?.get_connection_info().clone());
        }
        let Some(first) = nodes.first() else {
            return Err(Error::Config(
                "redis.sentinel.nodes must name at least one sentinel".into(),
            ));
        };
        let credentials = |info: &ConnectionInfo| {
            let settings = info.redis_settings();
            (
                settings.username().map(str::to_owned),
                settings.password().map(str::to_owned),
            )
        };
        if nodes.iter().any(|n| credentials(n) != credentials(first)) {
            return Err(Error::Config(
                "redis.sentinel.nodes: every sentinel URL must carry the same user name and \
                 password"
                    .into(),
            ));
        }
        if nodes.iter().any(|n| client::is_tls(n) != client::is_tls(first)) {
            return Err(Error::Config(
                "redis.sentinel.nodes: use rediss:// for all sentinels or for none".into(),
            ));
        }
        let shown = sentinel
            .nodes
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Arc::new(Self {
            client: tokio::sync::Mutex::new(sentinel_client(config, sentinel, &nodes)?),
            master_name: sentinel.master_name.clone(),
            shown,
            timeouts: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout_duration()))
                .set_response_timeout(Some(config.response_timeout_duration())),
            nodes,
            switches: AtomicU64::new(0),
            named: Mutex::new(None),
            watching: AtomicBool::new(false),
        }))
    }

    /// A client for the master the sentinels name now, confirmed by its `ROLE`.
    pub(super) async fn master(&self) -> Result<redis::Client, RedisError> {
        let master = self.client.lock().await.async_get_client().await?;
        tracing::debug!(name = %self.master_name, master = %master.get_connection_info().addr(),
            "the sentinels named the master");
        Ok(master)
    }

    /// How many times the watcher has seen the sentinels name a new master: a connection
    /// opened at a lower count may talk to an old master.
    pub(super) fn switches(&self) -> u64 {
        self.switches.load(Ordering::Acquire)
    }

    /// The error for a failed lookup of the master, naming the master and the sentinels.
    pub(super) fn lookup_error(&self, e: RedisError) -> Error {
        let message = if e.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            format!(
                "no sentinel ({}) names a master \"{}\" that is up and answers ROLE as a master",
                self.shown, self.master_name
            )
        } else {
            format!(
                "cannot reach the master \"{}\" through the sentinels ({})",
                self.master_name, self.shown
            )
        };
        Error::unavailable(StoreError::caused_by(message, e))
    }

    /// Asks each sentinel in turn whether it monitors the master, for a startup check: fails
    /// if none answers, or none knows the name.
    pub(super) async fn check(&self) -> Result<(), Error> {
        let mut answered = 0;
        let mut last_error = None;
        for node in &self.nodes {
            match self.ask(node).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => answered += 1,
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(e) if answered == 0 => Err(Error::unavailable(StoreError::caused_by(
                format!("no sentinel answered ({})", self.shown),
                e,
            ))),
            _ => Err(Error::unavailable(StoreError::new(format!(
                "no sentinel monitors a master named \"{}\" ({answered} of {} answered: {})",
                self.master_name,
                self.nodes.len(),
                self.shown
            )))),
        }
    }

    /// Connects to one sentinel and asks it for the master's address.
    async fn ask(&self, node: &ConnectionInfo) -> Result<Option<String>, RedisError> {
        let mut conn = self.connect(node).await?;
        named_master(&mut conn, &self.master_name).await
    }

    async fn connect(&self, node: &ConnectionInfo) -> Result<MultiplexedConnection, RedisError> {
        redis::Client::open(node.clone())?
            .get_multiplexed_async_connection_with_config(&self.timeouts)
            .await
    }

    /// Starts the watcher unless it runs (see the module doc). Cheap: called on every use of
    /// the pool.
    pub(super) fn watch(self: &Arc<Self>) {
        if self.watching.load(Ordering::Acquire) || self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.watching.store(false, Ordering::Release);
            return;
        };
        let watcher = Watcher {
            sentinels: Arc::downgrade(self),
            node: 0,
            conn: None,
        };
        runtime.spawn(watcher.run());
    }

    /// Records the master a sentinel named; a change counts as a switch.
    fn heard(&self, master: String) {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if named.as_deref() == Some(master.as_str()) {
            return;
        }
        if let Some(old) = named.replace(master.clone()) {
            self.switches.fetch_add(1, Ordering::AcqRel);
            tracing::info!(name = %self.master_name, old = %old, new = %master,
                "the sentinels named a new master; connections to the old one are replaced");
        }
    }
}

/// The watcher task's state: which sentinel it asks, over which connection.
struct Watcher {
    sentinels: Weak<Sentinels>,
    node: usize,
    conn: Option<MultiplexedConnection>,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            let Some(sentinels) = self.sentinels.upgrade() else {
                return;
            };
            self.poll(&sentinels).await;
            drop(sentinels);
            tokio::time::sleep(WATCH_PERIOD).await;
        }
    }

    /// Asks the current sentinel; if it fails, the next ones, once each.
    async fn poll(&mut self, sentinels: &Sentinels) {
        for _ in 0..sentinels.nodes.len() {
            let node = &sentinels.nodes[self.node % sentinels.nodes.len()];
            if self.conn.is_none() {
                self.conn = sentinels.connect(node).await.ok();
            }
            if let Some(conn) = self.conn.as_mut() {
                match named_master(conn, &sentinels.master_name).await {
                    Ok(Some(master)) => return sentinels.heard(master),
                    // A sentinel that forgot the master is no better than one that is down.
                    Ok(None) | Err(_) => self.conn = None,
                }
            }
            self.node = self.node.wrapping_add(1);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Ended with the backend or with its runtime: let the next use of the pool start
        // another if the backend lives on.
        if let Some(sentinels) = self.sentinels.upgrade() {
            sentinels.watching.store(false, Ordering::Release);
        }
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the master's `host:port`, or `None` if the sentinel
/// does not monitor that name.
async fn named_master(
    conn: &mut MultiplexedConnection,
    name: &str,
) -> Result<Option<String>, RedisError> {
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(addr.map(|(host, port)| format!("{host}:{port}")))
}

/// redis-rs's sentinel client for the master: the sentinels' credentials and TLS settings
/// from their URLs, the master's from `config`.
fn sentinel_client(
    config: &RedisConfig,
    sentinel: &SentinelConfig,
    nodes: &[ConnectionInfo],
) -> Result<SentinelClient, Error> {
    let invalid = |e: RedisError| Error::Config(format!("invalid redis.sentinel settings: {e}"));
    let nodelay = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    let mut builder = SentinelClientBuilder::new(
        nodes.iter().map(|n| n.addr().clone()),
        &sentinel.master_name,
        SentinelServerType::Master,
    )
    .map_err(invalid)?
    .set_client_to_sentinel_tcp_settings(nodelay.clone())
    .set_client_to_redis_tcp_settings(nodelay);
    if let Some(first) = nodes.first() {
        let settings = first.redis_settings();
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let ConnectionAddr::TcpTls { insecure, .. } = first.addr() {
            builder = builder.set_client_to_redis_tls_mode(if *insecure {
                redis::TlsMode::Insecure
            } else {
                redis::TlsMode::Secure
            });
        }
    }
    if let Some(db) = config.db {
        builder = builder.set_client_to_redis_db(db);
    }
    if let Some(user) = &config.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &config.password {
        builder = builder.set_client_to_redis_password(password);
    }
    master_certificates(builder, config)?
        .build()
        .map_err(invalid)
}

/// The TLS files for the connections to the master: redis-rs takes them with rustls only.
#[cfg(feature = "tls-rustls")]
fn master_certificates(
    builder: SentinelClientBuilder,
    config: &RedisConfig,
) -> Result<SentinelClientBuilder, Error> {
    if !config.tls.is_set() {
        return Ok(builder);
    }
    Ok(builder.set_client_to_redis_certificates(client::certificates(&config.tls)?))
}

/// The TLS files for the connections to the master: redis-rs takes them with rustls only.
#[cfg(not(feature = "tls-rustls"))]
fn master_certificates(
    builder: SentinelClientBuilder,
    config: &RedisConfig,
) -> Result<SentinelClientBuilder, Error> {
    if config.tls.is_set() {
        return Err(Error::Config(
            "redis.tls files with redis.sentinel need the tls-rustls feature: redis-rs's \
             sentinel client gives custom certificates to its connections to the master only \
             with rustls"
                .into(),
        ));
    }
    Ok(builder)
}
