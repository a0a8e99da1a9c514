//! Redis Sentinel: which server is the master, asked afresh for every new connection, and
//! (in `watch`) what the sentinels say in between.
//!
//! Every connection the pool opens starts with redis-rs's sentinel client: it asks the
//! sentinels (up to three at once, in the configured order) for the master, skips a master
//! they flag down, and connects to the one named to confirm with `ROLE` that it is a master.
//! Nothing about the master is remembered beyond the connection itself; `watch` says when the
//! connections must go.
//!
//! # Settings
//! The sentinels' URLs carry their own credentials (one user and password for all of them:
//! redis-rs's sentinel client takes one); the master gets the database, user and password of
//! the [`RedisConfig`], and TLS when the sentinel URLs are `rediss://`. The master's user needs
//! `ROLE` (or `INFO`), which the lookup sends. TLS files (a private CA, a client certificate)
//! apply to the sentinels; to the master only with the `tls-rustls` feature, because redis-rs's
//! sentinel client takes custom certificates for the master from rustls alone (in redis 1.8.1,
//! `SentinelNodeConnectionInfo::create_connection_info` sets the master's `tls_params` from
//! them under `tls-rustls`, and to `None` otherwise). A connection that fails, to a sentinel
//! or to the master, is named in the words of a standalone server's (`errors::setup_error`):
//! a TLS handshake that failed says which setting to check.

use std::sync::Arc;

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError};

use super::client;
use super::errors::setup_error;
use crate::config::{redact_url, RedisConfig, SentinelConfig};
use crate::error::{Error, StoreError};

mod watch;

use watch::{named_master, Watch};

/// The sentinels of one master.
pub(super) struct Sentinels {
    /// redis-rs's sentinel client. Behind a lock because a lookup takes `&mut self` (it keeps
    /// one verified connection per sentinel); lookups only happen when a connection opens.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The sentinel URLs with their passwords redacted, for messages.
    shown: String,
    /// Whether the sentinels (and so the master) are reached over TLS.
    tls: bool,
    watch: Arc<Watch>,
}

impl Sentinels {
    /// The sentinels of `sentinel`, the master getting the settings of `config`.
    pub(super) fn new(config: &RedisConfig, sentinel: &SentinelConfig) -> Result<Self, Error> {
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
            nodes.push(
                client::client(info, &config.tls)?
                    .get_connection_info()
                    .clone(),
            );
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
        if nodes
            .iter()
            .any(|n| client::is_tls(n) != client::is_tls(first))
        {
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
        let client = tokio::sync::Mutex::new(sentinel_client(config, sentinel, &nodes)?);
        Ok(Self {
            client,
            shown,
            tls: client::is_tls(first),
            watch: Arc::new(Watch::new(
                sentinel.master_name.clone(),
                nodes,
                config.connect_timeout_duration(),
                config.response_timeout_duration(),
            )),
        })
    }

    /// A client for the master the sentinels name now, confirmed by its `ROLE`.
    pub(super) async fn master(&self) -> Result<redis::Client, RedisError> {
        let master = self.client.lock().await.async_get_client().await?;
        tracing::debug!(name = %self.watch.master_name(),
            master = %master.get_connection_info().addr(), "the sentinels named the master");
        Ok(master)
    }

    /// Starts the watcher unless it runs (see `watch`). Cheap: called on every use of the pool.
    pub(super) fn watch(&self) {
        self.watch.start();
    }

    /// How many times the master switched (or a failover started): a connection opened at a
    /// lower count may talk to an old master.
    pub(super) fn switches(&self) -> u64 {
        self.watch.switches()
    }

    /// The error to fail commands with while a sentinel fails the master over, if one does.
    pub(super) fn failing_over(&self) -> Option<Error> {
        self.watch.failing_over().then(|| {
            Error::unavailable(StoreError::new(format!(
                "a sentinel is failing over the master \"{}\"",
                self.watch.master_name()
            )))
        })
    }

    /// The error for a failed lookup of the master, naming the master and the sentinels.
    pub(super) fn lookup_error(&self, e: RedisError) -> Error {
        let name = self.watch.master_name();
        if e.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            let message = format!(
                "no sentinel ({}) names a master \"{name}\" that is up and answers ROLE as a \
                 master",
                self.shown
            );
            return Error::unavailable(StoreError::caused_by(message, e));
        }
        self.connect_error(
            format!(
                "cannot reach the master \"{name}\" through the sentinels ({})",
                self.shown
            ),
            &e,
        )
    }

    /// `context` caused by `e`, a failure to connect to a sentinel or to the master, in the
    /// words of a standalone server's (a TLS handshake that failed names the setting to fix).
    fn connect_error(&self, context: String, e: &RedisError) -> Error {
        let cause = match setup_error(e, self.tls) {
            Error::Unavailable(cause) => cause,
            other => StoreError::caused_by("", other),
        };
        Error::unavailable(StoreError::caused_by(context, cause))
    }

    /// Asks each sentinel in turn whether it monitors the master, for a startup check: fails
    /// if none answers, or none knows the name.
    pub(super) async fn check(&self) -> Result<(), Error> {
        let name = self.watch.master_name();
        let nodes = self.watch.nodes();
        let mut answered = 0;
        let mut last_error = None;
        for node in nodes {
            let named = match self.watch.connect(node).await {
                Ok(mut conn) => named_master(&mut conn, name).await,
                Err(e) => Err(e),
            };
            match named {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => answered += 1,
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(e) if answered == 0 => {
                Err(self.connect_error(format!("no sentinel answered ({})", self.shown), &e))
            }
            _ => Err(Error::unavailable(StoreError::new(format!(
                "no sentinel monitors a master named \"{name}\" ({answered} of {} answered: {})",
                nodes.len(),
                self.shown
            )))),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sentinels: &[&str]) -> String {
        let config = RedisConfig::sentinel("mymaster", sentinels.iter().copied());
        let sentinel = config.sentinel.as_ref().expect("a sentinel config");
        match Sentinels::new(&config, sentinel) {
            Ok(_) => panic!("{sentinels:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sentinel_urls_that_cannot_be_served_are_config_errors_without_passwords() {
        let mixed = refused(&["redis://:pw-one@127.0.0.1:1", "redis://:pw-two@127.0.0.1:2"]);
        assert!(mixed.contains("same user name and password"), "{mixed}");
        assert!(
            !mixed.contains("pw-one") && !mixed.contains("pw-two"),
            "{mixed}"
        );
        let db = refused(&["redis://:pw-one@127.0.0.1:1/2"]);
        assert!(
            db.contains("names a database") && !db.contains("pw-one"),
            "{db}"
        );
        let nodes = [
            "redis://127.0.0.1:1",
            "redis://127.0.0.1:2",
            "redis://127.0.0.1:3",
        ];
        let config = RedisConfig::sentinel("mymaster", nodes);
        let sentinel = config.sentinel.as_ref().expect("a sentinel config");
        assert!(Sentinels::new(&config, sentinel).is_ok());
    }

    /// A master whose certificate does not verify (the sentinels' did) is named in the words
    /// of a standalone server's: the lookup error names the setting to check.
    #[cfg(feature = "tls-rustls")]
    #[test]
    fn a_master_whose_certificate_does_not_verify_fails_the_lookup_naming_the_ca_file() {
        let config = RedisConfig::sentinel("mymaster", ["rediss://127.0.0.1:1"]);
        let sentinel = config.sentinel.as_ref().expect("a sentinel config");
        let sentinels = Sentinels::new(&config, sentinel).expect("valid sentinels");
        // How a handshake the certificate failed reaches us from tokio-rustls.
        let handshake = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let message = sentinels.lookup_error(handshake).to_string();
        assert!(
            message.contains("cannot reach the master \"mymaster\" through the sentinels")
                && message.contains("TLS handshake")
                && message.contains("redis.tls.ca_file"),
            "{message}"
        );
    }
}
