//! Turning a [`RedisConfig`] and one node's URL into a `redis::Client`: the settings that
//! override the URL (database, user, password), TCP_NODELAY, and TLS with a private CA or a
//! client certificate. Every topology builds its clients here, so a cluster node or a
//! sentinel-discovered master gets exactly the settings of a standalone server.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::{redact_url, RedisConfig, TlsConfig};
use crate::error::Error;

/// The connection info for `url` with the database, user and password of `config` applied,
/// and TCP_NODELAY set: a small pipeline must not wait for the previous one's bytes to be
/// acknowledged (Nagle's algorithm).
pub(super) fn connection_info(url: &str, config: &RedisConfig) -> Result<ConnectionInfo, Error> {
    if cfg!(not(any(feature = "tls-rustls", feature = "tls-native-tls")))
        && url.starts_with("rediss:")
    {
        return Err(Error::Config(
            "rediss:// needs circumflex-session built with the tls-rustls or tls-native-tls feature"
                .into(),
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| Error::Config(format!("invalid redis url {}: {e}", redact_url(url))))?;
    let mut settings = info.redis_settings().clone();
    if let Some(db) = config.db {
        settings = settings.set_db(db);
    }
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password);
    }
    Ok(info
        .set_redis_settings(settings)
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// Whether the connection info asks for TLS.
pub(super) fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// A client for `info`, trusting the CA and presenting the client certificate of `tls`.
pub(super) fn client(info: ConnectionInfo, tls: &TlsConfig) -> Result<redis::Client, Error> {
    if tls.is_set() && !is_tls(&info) {
        return Err(Error::Config(
            "redis.tls files are set, but the URL is not rediss://".into(),
        ));
    }
    if !tls.is_set() {
        return redis::Client::open(info)
            .map_err(|e| Error::Config(format!("invalid redis connection settings: {e}")));
    }
    tls_client(info, tls)
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
fn tls_client(info: ConnectionInfo, tls: &TlsConfig) -> Result<redis::Client, Error> {
    redis::Client::build_with_tls(info, certificates(tls)?)
        .map_err(|e| Error::Config(format!("invalid redis TLS settings: {e}")))
}

/// The CA and client certificate of `tls`, read from their files.
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
pub(super) fn certificates(tls: &TlsConfig) -> Result<redis::TlsCertificates, Error> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read redis.tls {what} {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = tls
        .ca_file
        .as_deref()
        .map(|p| read(p, "ca_file"))
        .transpose()?;
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert, "client_cert_file")?,
            client_key: read(key, "client_key_file")?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

#[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
fn tls_client(_info: ConnectionInfo, _tls: &TlsConfig) -> Result<redis::Client, Error> {
    Err(Error::Config(
        "redis.tls needs circumflex-session built with the tls-rustls or tls-native-tls feature"
            .into(),
    ))
}
