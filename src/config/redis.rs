//! Where sessions are stored.
//!
//! Why this file is long: it is the one place where a Redis setting is declared, documented,
//! overridden from the environment (`REDIS_URL`, `REDIS_CLUSTER_NODES`, `REDIS_SENTINEL` and
//! its URL form, `REDIS_TLS_*`) and validated, with the unit tests of all of that; split, one
//! setting would be spread over several files.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_POOL_SIZE, DEFAULT_REDIS_URL,
    DEFAULT_RESPONSE_TIMEOUT,
};
use crate::error::Error;

/// Redis connection settings: which Redis (one server, a Cluster, or a master found through
/// Sentinel), as whom, over TLS or not, under which key prefix, and how patiently.
///
/// Set at most one of `url`, `cluster_nodes` and `sentinel`; with none, the URL defaults to
/// `redis://127.0.0.1:6379`. `Debug` hides every password, in URLs too.
///
/// ```
/// use std::time::Duration;
/// use circumflex_session::{Error, RedisConfig};
///
/// let config = RedisConfig::new("redis://app:secret@10.0.0.5:6379")
///     .db(2)
///     .key_prefix("shop")
///     .response_timeout(Duration::from_millis(500));
/// config.validate()?;
/// assert!(!format!("{config:?}").contains("secret"));
///
/// // A cluster has only database 0:
/// let cluster = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).db(2);
/// assert!(matches!(cluster.validate(), Err(Error::Config(_))));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379` or `rediss://` for TLS. `None` means "none
    /// configured": the demo then starts a private server; [`RedisConfig::url_or_default`]
    /// falls back to `redis://127.0.0.1:6379`.
    pub url: Option<String>,
    /// Redis Cluster: the URLs of some of its nodes (any role; the rest are discovered). Not
    /// empty: the cluster backend is used. A discovered node is reached at the host and port
    /// `CLUSTER SLOTS` names, with the first URL's scheme, credentials and TLS files. Over TLS
    /// the cluster must announce its TLS ports (Redis 7 does with `tls-cluster yes`), and each
    /// node's certificate must name the host it is announced by: an IP address entry, unless
    /// the nodes announce host names (`cluster-preferred-endpoint-type hostname`).
    pub cluster_nodes: Vec<String>,
    /// Sentinel: find the master through these sentinels.
    pub sentinel: Option<SentinelConfig>,
    /// TLS files: a CA to trust instead of the system's roots, and a client certificate for
    /// mutual TLS. Used with `rediss://` URLs; needs the `tls-rustls` or `tls-native-tls`
    /// feature (see [`TlsConfig`]).
    pub tls: TlsConfig,
    /// Database index; overrides the one in the URL when set. A cluster has only database 0.
    pub db: Option<i64>,
    /// ACL user name; overrides the one in the URL when set.
    pub username: Option<String>,
    /// Password; overrides the one in the URL when set.
    pub password: Option<String>,
    /// Key prefix. A session is the hash `<prefix>:{<tag>}:<id>`. Default `session`.
    pub key_prefix: String,
    /// bb8 pool size (per node, on a cluster). Default 4: each connection is multiplexed, so
    /// few are needed.
    pub pool_size: u32,
    /// How long to wait for a pooled connection, in milliseconds. Default 2000.
    pub connect_timeout_ms: u64,
    /// How long to wait for Redis to answer a pipeline before the connection is considered
    /// broken and replaced, in milliseconds. Default 2000.
    pub response_timeout_ms: u64,
}

/// Master discovery through Redis Sentinel.
///
/// Each new connection asks the sentinels for the master and checks with `ROLE` that it is
/// one. Failovers are followed without a restart: while a sentinel fails the master over,
/// session commands fail at once with [`Error::Unavailable`] (a 503) instead of being
/// acknowledged by a master about to be abandoned; then they go to the new master.
///
/// The master's user name, password and database are those of the enclosing
/// [`RedisConfig`] (its user needs the `ROLE` command); a sentinel's own credentials go in its
/// URL, the same for every sentinel.
///
/// `rediss://` sentinel URLs mean TLS to the sentinels and to the master (the sentinels must
/// then run with `tls-replication yes` to reach the data nodes over TLS). The master is
/// reached at the address the sentinels report, so its certificate must name that host: an IP
/// address entry, unless the sentinels announce host names (`sentinel resolve-hostnames yes`
/// and `sentinel announce-hostnames yes`). The [`tls`](RedisConfig::tls) files apply to the
/// sentinels, and to the master only with the `tls-rustls` feature: redis-rs 1.8's sentinel
/// client builds its connections to the master itself (it connects to check `ROLE` before it
/// hands us a client), and gives them custom certificates
/// (`SentinelClientBuilder::set_client_to_redis_certificates`) with rustls only; with
/// native-tls they trust the system's roots alone. So `redis.tls` files with `redis.sentinel`
/// and only `tls-native-tls` are a configuration error, while TLS with certificates the
/// system trusts works with either feature.
///
/// ```
/// use circumflex_session::Config;
///
/// let config = Config::from_toml(
///     r#"
///     [redis]
///     username = "app"
///     sentinel = { master_name = "main", nodes = ["redis://:sentinel-pw@10.0.0.1:26379"] }
///     "#,
/// )?;
/// let sentinel = config.redis.sentinel.as_ref().expect("configured");
/// assert_eq!(sentinel.master_name, "main");
/// assert!(!format!("{sentinel:?}").contains("sentinel-pw"));
/// # Ok::<(), circumflex_session::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// Sentinel URLs, e.g. `redis://127.0.0.1:26379`; `rediss://` when the sentinels and the
    /// data nodes speak TLS.
    pub nodes: Vec<String>,
}

impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field("nodes", &redact_all(&self.nodes))
            .finish()
    }
}

/// TLS files for `rediss://` URLs, all PEM; relative paths are relative to the working
/// directory. In TOML: `[redis] tls = { ca_file = "ca.pem" }`; in the environment
/// (see [`RedisConfig::apply_env`]): `REDIS_TLS_CA`, `REDIS_TLS_CERT`, `REDIS_TLS_KEY`.
///
/// Works the same with either TLS feature, `tls-rustls` or `tls-native-tls`; without one, a
/// `rediss://` URL or any of these files is an [`Error::Config`] at connect. The server's
/// certificate must be signed by a trusted CA and name the URL's host (for
/// `rediss://127.0.0.1:6380`, an IP address entry `127.0.0.1` in its subject alternative
/// names). The files are read, and the key checked, when the backend is created.
///
/// ```
/// use circumflex_session::{Config, Error};
///
/// let config = Config::from_toml(
///     r#"
///     [redis]
///     url = "rediss://redis.internal:6380"
///     tls = { ca_file = "ca.pem", client_cert_file = "me.pem", client_key_file = "me.key" }
///     "#,
/// )?;
/// assert!(config.redis.tls.is_set());
/// // A certificate without its key is refused when the configuration is read:
/// let half = Config::from_toml("[redis]\ntls = { client_cert_file = \"client.pem\" }\n");
/// assert!(matches!(half, Err(Error::Config(_))));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) to trust instead of the system's roots: a private CA, or a managed
    /// service's CA bundle. Unset, the system's roots are trusted (a public CA).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (with its chain, if any) for mutual TLS, when Redis runs with
    /// `tls-auth-clients yes`; needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key, unencrypted. `tls-native-tls` reads only PKCS#8
    /// (`BEGIN PRIVATE KEY`; convert another with `openssl pkcs8 -topk8 -nocrypt`);
    /// `tls-rustls` also reads PKCS#1 (`BEGIN RSA PRIVATE KEY`) and SEC1 (`BEGIN EC PRIVATE
    /// KEY`).
    pub client_key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert_file.is_some() || self.client_key_file.is_some()
    }
}

/// Which Redis a [`RedisConfig`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology<'a> {
    Standalone(&'a str),
    Cluster(&'a [String]),
    Sentinel(&'a SentinelConfig),
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("cluster_nodes", &redact_all(&self.cluster_nodes))
            .field("sentinel", &self.sentinel)
            .field("tls", &self.tls)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .finish()
    }
}

fn redact_all(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| redact_url(u)).collect()
}

/// A URL with its userinfo password (`redis://user:secret@host`) replaced, for logs and
/// errors.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme + 3 => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{}{}:<redacted>{}", &url[..scheme + 3], user, &url[at..])
            } else {
                url.to_owned()
            }
        }
        _ => url.to_owned(),
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster_nodes: Vec::new(),
            sentinel: None,
            tls: TlsConfig::default(),
            db: None,
            username: None,
            password: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
            response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT.as_millis() as u64,
        }
    }
}

impl RedisConfig {
    /// A config for one URL, everything else default.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// A config for a Redis Cluster, given some of its nodes' URLs.
    #[must_use]
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A config for the master that the sentinels at `sentinels` monitor as `master_name`
    /// (see [`SentinelConfig`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), circumflex_session::Error> {
    /// use circumflex_session::{RedisBackend, RedisConfig};
    /// let config = RedisConfig::sentinel(
    ///     "mymaster",
    ///     ["redis://:sentinel-pw@10.0.0.1:26379", "redis://:sentinel-pw@10.0.0.2:26379"],
    /// )
    /// .username("app")
    /// .password("app-pw");
    /// let backend = RedisBackend::connect(config).await?;
    /// backend.check().await?; // fails at startup if no sentinel knows "mymaster"
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn sentinel<I, S>(master_name: impl Into<String>, sentinels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            sentinel: Some(SentinelConfig {
                master_name: master_name.into(),
                nodes: sentinels.into_iter().map(Into::into).collect(),
            }),
            ..Self::default()
        }
    }

    /// Trusts the CA certificate(s) in this PEM file instead of the system's roots, for a
    /// `rediss://` URL (see [`TlsConfig::ca_file`]). Unset by default: the system's roots.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), circumflex_session::Error> {
    /// use circumflex_session::{RedisBackend, RedisConfig};
    /// let config = RedisConfig::new("rediss://redis.internal:6380")
    ///     .tls_ca_file("/etc/redis/ca.pem");
    /// let backend = RedisBackend::connect(config).await?;
    /// backend.check().await?; // fails now, in words, if the certificate does not verify
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and its key (PEM files) for mutual TLS, when Redis
    /// runs with `tls-auth-clients yes` (see [`TlsConfig::client_key_file`] for the key
    /// formats each TLS feature reads). Unset by default: no client certificate.
    #[must_use]
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_cert_file = Some(cert.into());
        self.tls.client_key_file = Some(key.into());
        self
    }

    /// Sets the database index.
    #[must_use]
    pub fn db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// Sets the ACL user name.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the password.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets the key prefix (default `session`).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the pool size (default 4).
    #[must_use]
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets how long to wait for a pooled connection (default 2 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// The configured URL, or `redis://127.0.0.1:6379`.
    pub fn url_or_default(&self) -> &str {
        self.url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// Which Redis this points at (after [`validate`](Self::validate): at most one is set).
    pub(crate) fn topology(&self) -> Topology<'_> {
        if let Some(sentinel) = &self.sentinel {
            Topology::Sentinel(sentinel)
        } else if !self.cluster_nodes.is_empty() {
            Topology::Cluster(&self.cluster_nodes)
        } else {
            Topology::Standalone(self.url_or_default())
        }
    }

    /// Applies the environment: `REDIS_URL`, `REDIS_CLUSTER_NODES` (comma-separated URLs) or
    /// `REDIS_SENTINEL` (`redis+sentinel://[user:pass@]host:port[,host:port...]/<master>`,
    /// `rediss+sentinel://` for TLS) replace whichever of `url`, `cluster_nodes` and
    /// `sentinel` the file set; `REDIS_TLS_CA`, `REDIS_TLS_CERT` and `REDIS_TLS_KEY` set the
    /// TLS files. Empty variables count as unset.
    ///
    /// ```
    /// use circumflex_session::{Error, RedisConfig};
    ///
    /// std::env::set_var("REDIS_SENTINEL", "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main");
    /// let mut config = RedisConfig::new("redis://127.0.0.1:6379"); // as read from a file
    /// config.apply_env()?;
    /// assert_eq!(config.url, None); // replaced
    /// let sentinel = config.sentinel.expect("REDIS_SENTINEL is set");
    /// assert_eq!(sentinel.master_name, "main");
    /// assert_eq!(sentinel.nodes.len(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] if more than one of the three topology variables is set, or
    /// `REDIS_SENTINEL` is malformed.
    pub fn apply_env(&mut self) -> Result<(), Error> {
        self.apply_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        let url = var("REDIS_URL");
        let cluster = var("REDIS_CLUSTER_NODES");
        let sentinel = var("REDIS_SENTINEL");
        if [&url, &cluster, &sentinel]
            .iter()
            .filter(|v| v.is_some())
            .count()
            > 1
        {
            return Err(Error::Config(
                "set only one of REDIS_URL, REDIS_CLUSTER_NODES and REDIS_SENTINEL".into(),
            ));
        }
        if url.is_some() || cluster.is_some() || sentinel.is_some() {
            self.url = url;
            self.cluster_nodes = cluster
                .map(|nodes| {
                    nodes
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            self.sentinel = sentinel.as_deref().map(parse_sentinel_url).transpose()?;
        }
        if let Some(ca) = var("REDIS_TLS_CA") {
            self.tls.ca_file = Some(ca.into());
        }
        if let Some(cert) = var("REDIS_TLS_CERT") {
            self.tls.client_cert_file = Some(cert.into());
        }
        if let Some(key) = var("REDIS_TLS_KEY") {
            self.tls.client_key_file = Some(key.into());
        }
        Ok(())
    }

    /// Sets how long Redis may take to answer before its connection is replaced (default 2 s).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout_ms = timeout.as_millis() as u64;
        self
    }

    pub(crate) fn connect_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn response_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// Checks the prefix, the pool size and the timeouts.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.key_prefix.is_empty() {
            return Err(Error::Config("redis.key_prefix must not be empty".into()));
        }
        if self.key_prefix.contains(['{', '}']) {
            // Redis Cluster would hash the prefix's braces instead of the session's tag.
            return Err(Error::Config(
                "redis.key_prefix must not contain '{' or '}'".into(),
            ));
        }
        let topologies = [
            self.url.is_some(),
            !self.cluster_nodes.is_empty(),
            self.sentinel.is_some(),
        ];
        if topologies.iter().filter(|set| **set).count() > 1 {
            return Err(Error::Config(
                "set only one of redis.url, redis.cluster_nodes and redis.sentinel".into(),
            ));
        }
        if !self.cluster_nodes.is_empty() && self.db.is_some_and(|db| db != 0) {
            return Err(Error::Config(
                "redis.db must be unset or 0 with redis.cluster_nodes: a cluster has only database 0"
                    .into(),
            ));
        }
        if let Some(sentinel) = &self.sentinel {
            if sentinel.master_name.is_empty() {
                return Err(Error::Config(
                    "redis.sentinel.master_name must not be empty".into(),
                ));
            }
            if sentinel.nodes.is_empty() {
                return Err(Error::Config(
                    "redis.sentinel.nodes must name at least one sentinel".into(),
                ));
            }
        }
        if self.tls.client_cert_file.is_some() != self.tls.client_key_file.is_some() {
            return Err(Error::Config(
                "redis.tls.client_cert_file and redis.tls.client_key_file go together".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(Error::Config("redis.pool_size must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(Error::Config(
                "redis.connect_timeout_ms must be positive".into(),
            ));
        }
        if self.response_timeout_ms == 0 {
            return Err(Error::Config(
                "redis.response_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Parses `redis+sentinel://[user:pass@]host:port[,host:port...]/<master>` (or
/// `rediss+sentinel://`) into sentinel URLs that share the scheme and credentials.
fn parse_sentinel_url(url: &str) -> Result<SentinelConfig, Error> {
    let malformed = || {
        Error::Config(format!(
            "REDIS_SENTINEL must look like redis+sentinel://host:port[,host:port...]/<master>, got {}",
            redact_url(url)
        ))
    };
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
        ("rediss", rest)
    } else {
        return Err(malformed());
    };
    let (authority, master) = rest.split_once('/').ok_or_else(malformed)?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{scheme}://{userinfo}{host}"))
        .collect();
    if master.is_empty() || master.contains('/') || hosts.split(',').any(str::is_empty) {
        return Err(malformed());
    }
    Ok(SentinelConfig {
        master_name: master.to_owned(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_passwords() {
        let config = RedisConfig::new("redis://app:hunter2@127.0.0.1:6379/0").password("s3cret");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://app:<redacted>@127.0.0.1:6379/0"),
            "{shown}"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn debug_output_hides_passwords_of_cluster_and_sentinel_nodes() {
        let mut config = RedisConfig::cluster(["redis://u:pw1@127.0.0.1:7000"]);
        config.sentinel = Some(SentinelConfig {
            master_name: "m".into(),
            nodes: vec!["redis://:pw2@127.0.0.1:26379".into()],
        });
        let shown = format!("{config:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_replaces_the_topology_of_the_file() {
        let mut config = RedisConfig::new("redis://file:6379");
        config
            .apply_vars(vars(&[(
                "REDIS_CLUSTER_NODES",
                "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
            )]))
            .unwrap();
        assert_eq!(config.url, None);
        assert_eq!(
            config.cluster_nodes,
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        config.validate().unwrap();

        config
            .apply_vars(vars(&[(
                "REDIS_SENTINEL",
                "rediss+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster",
            )]))
            .unwrap();
        assert!(config.cluster_nodes.is_empty());
        assert_eq!(
            config.sentinel,
            Some(SentinelConfig {
                master_name: "mymaster".into(),
                nodes: vec![
                    "rediss://:pw@127.0.0.1:26379".into(),
                    "rediss://:pw@127.0.0.1:26380".into()
                ],
            })
        );

        config
            .apply_vars(vars(&[
                ("REDIS_URL", "rediss://h:6380"),
                ("REDIS_TLS_CA", "ca.pem"),
            ]))
            .unwrap();
        assert_eq!(config.topology(), Topology::Standalone("rediss://h:6380"));
        assert_eq!(config.tls.ca_file, Some(PathBuf::from("ca.pem")));

        let both = config.apply_vars(vars(&[("REDIS_URL", "redis://a"), ("REDIS_SENTINEL", "x")]));
        assert!(both.unwrap_err().to_string().contains("only one"));
    }

    #[test]
    fn a_malformed_sentinel_url_is_rejected_without_its_password() {
        for bad in [
            "redis://127.0.0.1:26379/m",
            "redis+sentinel://:secret@127.0.0.1:26379",
            "redis+sentinel://:secret@127.0.0.1:26379/",
            "redis+sentinel://:secret@127.0.0.1:26379,/m",
        ] {
            let err = parse_sentinel_url(bad).unwrap_err().to_string();
            assert!(
                err.contains("REDIS_SENTINEL") && !err.contains("secret"),
                "{err}"
            );
        }
    }

    #[test]
    fn conflicting_or_incomplete_settings_are_rejected_by_name() {
        let mut two = RedisConfig::new("redis://a");
        two.cluster_nodes = vec!["redis://b".into()];
        assert!(two.validate().unwrap_err().to_string().contains("only one"));
        let db = RedisConfig::cluster(["redis://b"]).db(3);
        assert!(db.validate().unwrap_err().to_string().contains("redis.db"));
        let braces = RedisConfig::default().key_prefix("s{x}");
        assert!(braces
            .validate()
            .unwrap_err()
            .to_string()
            .contains("key_prefix"));
        let no_name = RedisConfig::sentinel("", ["redis://127.0.0.1:26379"]);
        assert!(no_name
            .validate()
            .unwrap_err()
            .to_string()
            .contains("master_name"));
        let mut half = RedisConfig::default();
        half.tls.client_cert_file = Some("c.pem".into());
        assert!(half
            .validate()
            .unwrap_err()
            .to_string()
            .contains("client_key_file"));
    }
}
