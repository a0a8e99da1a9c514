//! Redis errors in words an operator can act on: refusals that make the whole store unusable
//! to us (a wrong password, a missing permission, a replica, a server still loading), and why
//! a connection could not be opened, TLS handshakes included (the TLS libraries' own messages
//! name neither the setting to fix nor which side refused). No message holds a password.

use std::sync::Arc;

use redis::RedisError;

use crate::error::{Error, StoreError};

/// A Redis refusal that makes the store unavailable to us as a whole rather than failing one
/// command: authentication and permission errors, a server still loading its data, a replica
/// or a master that lost its replicas, a failing disk. The error names the cause in words an
/// operator can act on (it never holds a password: Redis does not echo it).
pub(super) fn store_refusal(e: &RedisError) -> Option<Error> {
    // Redis answers a long command from a client that has not authenticated with a protocol
    // error instead of NOAUTH (and closes the connection).
    let unauthenticated = e
        .detail()
        .is_some_and(|d| d.starts_with("Protocol error: unauthenticated"));
    let cause = match e.code() {
        _ if unauthenticated => "Redis requires a password that is not configured (NOAUTH)",
        Some("NOAUTH") => "Redis requires a password that is not configured (NOAUTH)",
        Some("WRONGPASS") => "Redis rejected the configured user name or password (WRONGPASS)",
        // redis-rs reports a failed AUTH so, without Redis's WRONGPASS.
        _ if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            "Redis rejected the configured user name or password (WRONGPASS at AUTH: the user \
             is unknown or disabled, or the password is wrong)"
        }
        Some("NOPERM") => "the Redis user lacks a permission the session store needs (NOPERM)",
        // Redis 7.0 refuses a command a script calls without the permission as ERR, naming
        // neither NOPERM nor the command (7.2 says NOPERM).
        _ if e
            .detail()
            .is_some_and(|d| d.contains("user executing the script can't run")) =>
        {
            "the Redis user lacks a permission the session store needs (a command its scripts \
             call was refused: they call TIME, which needs +time, besides @read and @write)"
        }
        Some("LOADING") => "Redis is still loading its data set (LOADING)",
        Some("READONLY") => "Redis is a read-only replica: point the URL at a master (READONLY)",
        Some("MASTERDOWN") => "the Redis replica lost its master (MASTERDOWN)",
        Some("MISCONF") => "Redis cannot persist to disk and refuses writes (MISCONF)",
        _ => return None,
    };
    Some(Error::unavailable(StoreError::caused_by(cause, e.clone())))
}

/// The error for a failure of the Redis client: a refusal or a TLS failure named in words, or
/// the client's own.
pub(super) fn redis_error(e: RedisError) -> Error {
    store_refusal(&e)
        .or_else(|| tls_failure(&e))
        .unwrap_or_else(|| Error::unavailable(e))
}

/// Why opening a connection failed. A server that hangs up while the connection is being set
/// up, before answering anything, most often refused it at the TLS layer, and the alert that
/// said why can be lost: sent just as our first command arrives, it is discarded when the
/// server's reset overtakes it. The message says what to check.
pub(super) fn setup_error(e: &RedisError, tls: bool) -> Error {
    if let Some(known) = store_refusal(e).or_else(|| tls_failure(e)) {
        return known;
    }
    let hung_up = find::<std::io::Error>(e).is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    });
    if !hung_up {
        return Error::unavailable(e.clone());
    }
    let cause = if tls {
        "Redis closed the TLS connection while it was being set up: if it requires client \
         certificates (tls-auth-clients), set redis.tls.client_cert_file and client_key_file \
         to a certificate signed by a CA in its tls-ca-cert-file"
    } else {
        "Redis closed the connection while it was being set up: if that port expects TLS, use \
         a rediss:// URL"
    };
    Error::unavailable(StoreError::caused_by(cause, e.clone()))
}

/// A TLS connection that failed, in words an operator can act on: the TLS libraries' own
/// ("invalid peer certificate: UnknownIssuer", "error:0A000086:SSL routines::certificate
/// verify failed") name neither the setting to fix nor which side refused.
fn tls_failure(e: &RedisError) -> Option<Error> {
    let cause = tls_cause(e)?;
    Some(Error::unavailable(StoreError::caused_by(cause, e.clone())))
}

/// The words for TLS failures. Which of them a build uses depends on its TLS library.
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
#[allow(dead_code)]
mod tls_words {
    pub(super) const NOT_VERIFIED: &str = "the TLS handshake with Redis failed: the server's \
        certificate did not verify against the CA in redis.tls.ca_file (the system's roots when \
        it is unset)";
    pub(super) const NOT_VERIFIED_OR_NAMED: &str = "the TLS handshake with Redis failed: the \
        server's certificate did not verify against the CA in redis.tls.ca_file (the system's \
        roots when it is unset), or does not name the host of the URL";
    pub(super) const WRONG_NAME: &str =
        "the TLS handshake with Redis failed: the server's certificate does not name the host \
         of the URL";
    pub(super) const EXPIRED: &str = "the TLS handshake with Redis failed: the server's \
        certificate has expired or is not valid yet";
    pub(super) const CLIENT_CERT_WANTED: &str = "Redis requires a TLS client certificate that \
        it trusts (mutual TLS), and did not get one: set redis.tls.client_cert_file and \
        client_key_file to a certificate signed by a CA in Redis's tls-ca-cert-file";
    pub(super) const NOT_TLS: &str =
        "the TLS handshake with Redis failed: does the server speak TLS on this port?";
    pub(super) const FAILED: &str = "the TLS connection to Redis failed";
}

#[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
fn tls_cause(_: &RedisError) -> Option<&'static str> {
    None
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
fn tls_cause(e: &RedisError) -> Option<&'static str> {
    #[cfg(feature = "tls-rustls")]
    if let Some(tls) = find::<rustls::Error>(e) {
        return Some(rustls_cause(tls));
    }
    #[cfg(all(
        feature = "tls-native-tls",
        not(any(target_os = "windows", target_vendor = "apple"))
    ))]
    if let Some(stack) = find::<openssl::error::ErrorStack>(e) {
        return Some(openssl_cause(stack));
    }
    #[cfg(feature = "tls-native-tls")]
    if find::<native_tls::Error>(e).is_some() {
        return Some(tls_words::NOT_VERIFIED_OR_NAMED);
    }
    None
}

#[cfg(feature = "tls-rustls")]
fn rustls_cause(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    match e {
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            tls_words::WRONG_NAME
        }
        Tls::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        ) => tls_words::EXPIRED,
        Tls::InvalidCertificate(_) => tls_words::NOT_VERIFIED,
        Tls::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::HandshakeFailure,
        ) => tls_words::CLIENT_CERT_WANTED,
        Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => tls_words::NOT_TLS,
        _ => tls_words::FAILED,
    }
}

/// OpenSSL (native-tls on Linux) reports a certificate that did not verify, whatever the
/// reason (another CA, another host name), as one reason code, and an alert from the server as
/// 1000 plus the alert's number.
#[cfg(all(
    feature = "tls-native-tls",
    not(any(target_os = "windows", target_vendor = "apple"))
))]
fn openssl_cause(stack: &openssl::error::ErrorStack) -> &'static str {
    const CERTIFICATE_VERIFY_FAILED: i32 = 134;
    const ALERT: i32 = 1000;
    // handshake_failure, bad_certificate, certificate_unknown, unknown_ca, certificate_required
    const CLIENT_CERT_ALERTS: [i32; 5] = [40, 42, 46, 48, 116];
    let ssl = || {
        stack
            .errors()
            .iter()
            .filter(|e| e.library() == Some("SSL routines"))
            .map(|e| e.reason_code())
    };
    if ssl().any(|code| code == CERTIFICATE_VERIFY_FAILED) {
        tls_words::NOT_VERIFIED_OR_NAMED
    } else if ssl().any(|code| CLIENT_CERT_ALERTS.contains(&(code - ALERT))) {
        tls_words::CLIENT_CERT_WANTED
    } else {
        tls_words::FAILED
    }
}

/// The first error of type `T` in the chain of `e`, looking inside the `Arc` redis-rs keeps
/// its sources in and inside I/O errors (whose `source` skips the error they wrap).
fn find<T: std::error::Error + 'static>(e: &RedisError) -> Option<&T> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = if let Some(shared) = err.downcast_ref::<Shared>() {
            Some(&**shared)
        } else if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io.get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static))
        } else {
            err.source()
        };
    }
    None
}
