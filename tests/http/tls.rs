//! `rediss://` against a real TLS-only `redis-server` with a private CA made at run time
//! (`support::tls`): the whole flow, mutual TLS, a client that does not trust the server, the
//! TLS files from a TOML file and from the environment, and key files the TLS library cannot
//! read; and Sentinel over TLS (sentinels and data nodes TLS-only). Built with either TLS
//! feature; `scripts/test.sh` runs this module with both.

use actix_web::http::StatusCode;
use circumflex_session::{Config, Error, RedisBackend, RedisConfig, SessionEngine};
use serde_json::json;

use crate::demo::Demo;
use crate::support::app::*;
use crate::support::flow::login_flow;
use crate::support::redis_sentinel::SentinelGroup;
use crate::support::tls::TlsRedisServer;

/// The error of the startup check for `config`, which must fail.
async fn check_error(config: RedisConfig) -> Error {
    let backend =
        RedisBackend::connect(config.connect_timeout(std::time::Duration::from_millis(500)))
            .await
            .expect("valid redis config");
    backend
        .check()
        .await
        .expect_err("the startup check must fail")
}

/// Sends a session request through an app on `config` and returns its status.
async fn counter_status(config: RedisConfig) -> StatusCode {
    let backend =
        RedisBackend::connect(config.connect_timeout(std::time::Duration::from_millis(500)))
            .await
            .expect("valid redis config");
    let app = app_on(SessionEngine::new(backend)).await;
    send(&app, get("/counter", None).to_request()).await.status
}

#[actix_web::test]
async fn the_whole_flow_works_over_tls_with_a_private_ca() {
    let server = TlsRedisServer::start();
    let backend = checked_backend(server.config()).await;
    login_flow(SessionEngine::new(backend), &server).await;
}

#[actix_web::test]
async fn mutual_tls_works_with_the_client_certificate_and_fails_clearly_without_it() {
    let server = TlsRedisServer::start_mutual();
    let backend = checked_backend(server.mutual_config()).await;
    let app = app_on(SessionEngine::new(backend)).await;
    let mut visitor = Visitor::default();
    for expected in 1..=2 {
        let reply = visitor.get(&app, "/counter").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json(), json!({ "counter": expected }));
    }

    let refused = check_error(server.config()).await;
    let message = refused.to_string();
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
    // Which words depend on whether the server's alert or its reset reaches us first.
    assert!(
        message.contains("client certificate") && message.contains("redis.tls.client_cert_file"),
        "the message says a client certificate is wanted: {message}"
    );
    assert_eq!(
        counter_status(server.config()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[actix_web::test]
async fn a_client_that_does_not_trust_the_servers_ca_fails_the_check_clearly_and_gets_503s() {
    let server = TlsRedisServer::start();
    let without_ca = RedisConfig::new(server.url());
    let wrong_ca = RedisConfig::new(server.url()).tls_ca_file(server.certs().other_ca());
    for (label, config) in [("no ca_file", without_ca), ("another CA", wrong_ca)] {
        let refused = check_error(config.clone()).await;
        let message = refused.to_string();
        assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
        assert!(
            message.contains("TLS handshake") && message.contains("certificate"),
            "{label}: the message says the certificate did not verify: {message}"
        );
        assert!(message.contains("redis.tls.ca_file"), "{label}: {message}");
        assert_eq!(
            counter_status(config).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "{label}"
        );
    }
}

#[actix_web::test]
async fn a_plain_redis_url_on_a_tls_port_fails_the_check_saying_to_use_rediss() {
    let server = TlsRedisServer::start();
    let plain = RedisConfig::new(format!("redis://127.0.0.1:{}", server.port()));
    let refused = check_error(plain).await;
    assert!(
        refused.to_string().contains("use a rediss:// URL"),
        "{refused}"
    );
}

#[actix_web::test]
async fn the_tls_table_of_a_toml_file_configures_mutual_tls() {
    let server = TlsRedisServer::start_mutual();
    let certs = server.certs();
    let toml = format!(
        "[redis]\nurl = {:?}\ntls = {{ ca_file = {:?}, client_cert_file = {:?}, \
         client_key_file = {:?} }}\n",
        server.url(),
        certs.ca(),
        certs.client_cert(),
        certs.client_key(),
    );
    let config = Config::from_toml(&toml).expect("the TOML loads");
    assert_eq!(config.redis.tls.ca_file, Some(certs.ca()));
    let backend = checked_backend(config.redis).await;
    let app = app_on(SessionEngine::new(backend)).await;
    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[test]
fn the_demo_reads_the_tls_files_from_redis_tls_variables() {
    let server = TlsRedisServer::start_mutual();
    let certs = server.certs();
    let path = |p: std::path::PathBuf| p.to_str().expect("UTF-8 path").to_owned();
    let demo = Demo::start_with(&[
        ("REDIS_URL", server.url()),
        ("REDIS_TLS_CA", path(certs.ca())),
        ("REDIS_TLS_CERT", path(certs.client_cert())),
        ("REDIS_TLS_KEY", path(certs.client_key())),
    ]);
    let (status, cookie, body) = demo.get("/counter", None);
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("the first write sets the session cookie");
    let (status, _, body) = demo.get("/counter", Some(&cookie));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains('2'), "the counter went on over TLS: {body}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("session:*")
        .query(&mut server.connection())
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
}

#[actix_web::test]
async fn a_client_key_the_tls_library_cannot_read_is_a_config_error_naming_the_file() {
    let server = TlsRedisServer::start_mutual();
    let certs = server.certs();
    let encrypted = certs.dir().join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = RedisBackend::connect(
        server
            .config()
            .tls_client_cert(certs.client_cert(), &encrypted),
    )
    .await
    .expect_err("an encrypted key is refused");
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        message.contains("encrypted") && message.contains(&*encrypted.to_string_lossy()),
        "{message}"
    );

    // A SEC1 key (`openssl ecparam -genkey`'s format): rustls reads it, native-tls only reads
    // PKCS#8, and the message says how to convert it.
    let sec1 = certs.dir().join("sec1.key");
    std::fs::write(
        &sec1,
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = RedisBackend::connect(server.config().tls_client_cert(certs.client_cert(), &sec1))
        .await
        .expect_err("a malformed key is refused");
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(message.contains(&*sec1.to_string_lossy()), "{message}");
    if cfg!(not(feature = "tls-rustls")) {
        assert!(
            message.contains("PKCS#8") && message.contains("openssl pkcs8"),
            "{message}"
        );
    }
}

/// Sentinels and data nodes that speak only TLS, with a private CA: the master's certificate
/// is checked against `redis.tls.ca_file` too, which redis-rs's sentinel client supports with
/// rustls only (see `SentinelConfig`).
#[cfg(feature = "tls-rustls")]
#[actix_web::test]
async fn sentinels_and_master_over_tls_pass_the_check_and_serve_the_whole_flow() {
    let group = SentinelGroup::start_tls();
    assert!(group.sentinel_urls()[0].starts_with("rediss://"));
    let backend = checked_backend(group.config()).await;
    login_flow(SessionEngine::new(backend), group.master()).await;
}

#[actix_web::test]
async fn a_client_that_does_not_trust_the_sentinels_ca_fails_the_check_clearly_and_gets_503s() {
    let group = SentinelGroup::start_tls();
    let mut without_ca = group.config();
    without_ca.tls = Default::default();
    let refused = check_error(without_ca.clone()).await;
    let message = refused.to_string();
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
    assert!(
        message.contains("no sentinel answered")
            && message.contains("TLS handshake")
            && message.contains("certificate")
            && message.contains("redis.tls.ca_file"),
        "the message says the sentinels' certificate did not verify: {message}"
    );
    assert_eq!(
        counter_status(without_ca).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// With native-tls alone, redis-rs's sentinel client cannot give the master a private CA (see
/// `SentinelConfig`): refused at connect, saying which feature can.
#[cfg(not(feature = "tls-rustls"))]
#[actix_web::test]
async fn tls_files_for_sentinel_without_rustls_are_a_config_error_naming_the_feature() {
    let group = SentinelGroup::start_tls();
    let err = RedisBackend::connect(group.config())
        .await
        .expect_err("a private CA for the master needs rustls");
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        message.contains("redis.sentinel") && message.contains("tls-rustls"),
        "{message}"
    );
}
