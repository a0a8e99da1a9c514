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
    #[cfg(feature = "tls-rustls")]
    if is_tls(&info) {
        install_crypto_provider();
    }
    if !tls.is_set() {
        return redis::Client::open(info)
            .map_err(|e| Error::Config(format!("invalid redis connection settings: {e}")));
    }
    tls_client(info, tls)
}

/// Makes ring rustls's process-wide crypto provider, unless the application installed one.
///
/// redis-rs builds its rustls configuration with the process default provider, which rustls
/// picks by itself only when exactly one provider is compiled in. An application whose other
/// dependencies also enable aws-lc-rs (many HTTP and cloud clients do) would otherwise panic
/// on its first `rediss://` connection. An application that installed its own provider keeps
/// it: this only fills the gap, before the first connection.
#[cfg(feature = "tls-rustls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only if another thread installed one in between, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Rejects, at startup and naming the file, a client key that the TLS library would refuse
/// later, on every connection, with a vaguer error: an encrypted key (redis-rs cannot be given
/// its passphrase), a key that is not PKCS#8 (`BEGIN RSA PRIVATE KEY`, `BEGIN EC PRIVATE
/// KEY`) with native-tls, which reads only PKCS#8, and with rustls, one it cannot load.
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
fn check_client_key(pem: &[u8], path: &std::path::Path) -> Result<(), Error> {
    let has = |label: &str| {
        pem.windows(label.len() + 11)
            .any(|w| w.starts_with(b"-----BEGIN ") && &w[11..] == label.as_bytes())
    };
    let convert = format!(
        "convert it with `openssl pkcs8 -topk8 -nocrypt -in {0} -out {0}.pk8`",
        path.display()
    );
    if has("ENCRYPTED PRIVATE KEY") {
        return Err(Error::Config(format!(
            "redis.tls.client_key_file {} is encrypted, which is not supported: {convert}",
            path.display()
        )));
    }
    if cfg!(all(feature = "tls-native-tls", not(feature = "tls-rustls")))
        && !has("PRIVATE KEY")
        && (has("RSA PRIVATE KEY") || has("EC PRIVATE KEY"))
    {
        return Err(Error::Config(format!(
            "redis.tls.client_key_file {} is not a PKCS#8 key (BEGIN PRIVATE KEY), the only \
             kind the tls-native-tls build reads: {convert}",
            path.display()
        )));
    }
    #[cfg(feature = "tls-rustls")]
    {
        use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
        let unusable = |e: &dyn std::fmt::Display| {
            Error::Config(format!(
                "redis.tls.client_key_file {} is not a private key rustls can use: {e}",
                path.display()
            ))
        };
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| unusable(&e))?;
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()));
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| unusable(&e))?;
    }
    Ok(())
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
fn tls_client(info: ConnectionInfo, tls: &TlsConfig) -> Result<redis::Client, Error> {
    redis::Client::build_with_tls(info, certificates(tls)?)
        .map_err(|e| Error::Config(format!("invalid redis.tls files {}: {e}", tls_files(tls))))
}

/// The CA and client certificate of `tls`, read from their files.
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
pub(super) fn certificates(tls: &TlsConfig) -> Result<redis::TlsCertificates, Error> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read redis.tls.{what} {}: {e}",
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
        (Some(cert), Some(key)) => {
            let client_key = read(key, "client_key_file")?;
            check_client_key(&client_key, key)?;
            Some(redis::ClientTlsConfig {
                client_cert: read(cert, "client_cert_file")?,
                client_key,
            })
        }
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// The TLS files that are set, for an error message: `ca_file a.pem, client_cert_file c.pem`.
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
fn tls_files(tls: &TlsConfig) -> String {
    [
        ("ca_file", &tls.ca_file),
        ("client_cert_file", &tls.client_cert_file),
        ("client_key_file", &tls.client_key_file),
    ]
    .iter()
    .filter_map(|(name, path)| path.as_ref().map(|p| format!("{name} {}", p.display())))
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
fn tls_client(_info: ConnectionInfo, _tls: &TlsConfig) -> Result<redis::Client, Error> {
    Err(Error::Config(
        "redis.tls needs circumflex-session built with the tls-rustls or tls-native-tls feature"
            .into(),
    ))
}
