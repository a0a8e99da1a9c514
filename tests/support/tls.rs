//! TLS for the tests: a private CA with a server and a client certificate, made at run time
//! (rcgen) in a temporary directory the test owns, and a `redis-server` that speaks only TLS
//! on a free loopback port.
//!
//! The server certificate names `127.0.0.1` (an IP SAN) and `localhost`, so a client that
//! verifies host names (both TLS libraries do) accepts it for `rediss://127.0.0.1:<port>`.
//! Like [`RedisServer`](super::RedisServer), the server is a child process killed by its own
//! PID on drop, never on port 6379. The TLS cluster and Sentinel starters put the same files
//! in their own directories ([`Certs::write_to`]) and start their nodes with
//! [`RedisServer::start_tls_with`](super::RedisServer::start_tls_with).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use circumflex_session::RedisConfig;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::app::Inspect;
use super::TlsFiles;

/// PEM files in a temporary directory, removed on drop: a CA, a server certificate and a
/// client certificate it signed, and a second CA that signed nothing of ours.
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Generates the CA, the server and client certificates (ECDSA P-256, keys in PKCS#8) and
    /// an unrelated CA.
    pub fn generate() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "circumflex-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Self::write_to(&dir);
        Certs { dir }
    }

    /// Generates the certificates of [`generate`](Self::generate) into `dir` (created), which
    /// the caller removes, and returns the files a TLS-only server needs.
    pub fn write_to(dir: &Path) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("create the certificates' temporary directory");
        let write = |name: &str, pem: &str| {
            std::fs::write(dir.join(name), pem)
                .unwrap_or_else(|e| panic!("cannot write {name}: {e}"))
        };
        let (ca_pem, ca) = certificate_authority("circumflex test CA");
        write("ca.pem", &ca_pem);
        let (other_ca_pem, _) = certificate_authority("a CA that signed nothing of ours");
        write("other-ca.pem", &other_ca_pem);
        let (server, server_key) = leaf(
            &ca,
            "redis-server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.pem", &server);
        write("server.key", &server_key);
        let (client, client_key) = leaf(
            &ca,
            "session-store",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("client.pem", &client);
        write("client.key", &client_key);
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The directory, for files a test adds (a config file, a malformed key).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The private CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed neither certificate.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The client certificate, signed by the private CA, for mutual TLS.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("no names to check");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().expect("generate a CA key");
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate signed by `ca` and its PKCS#8 key, both PEM.
fn leaf(
    ca: &Issuer<'static, KeyPair>,
    name: &str,
    alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = alt_names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("valid subject alt names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().expect("generate a key");
    let cert = params.signed_by(&key, ca).expect("sign with the CA");
    (cert.pem(), key.serialize_pem())
}

/// A `redis-server` that accepts only TLS (`--port 0`), with its own [`Certs`].
pub struct TlsRedisServer {
    child: Option<Child>,
    port: u16,
    certs: Certs,
}

impl TlsRedisServer {
    /// A server that does not ask clients for a certificate (`--tls-auth-clients no`).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that requires a client certificate signed by its CA (`--tls-auth-clients
    /// yes`): mutual TLS.
    pub fn start_mutual() -> Self {
        Self::start_with(true)
    }

    fn start_with(mutual: bool) -> Self {
        let certs = Certs::generate();
        // As for `RedisServer`: a port found free may be taken before the server binds it,
        // and then the server exits at once; try another.
        for _ in 0..5 {
            let port = super::unused_port();
            match start_on(port, &certs, mutual) {
                Ok(Some(child)) => {
                    return TlsRedisServer {
                        child: Some(child),
                        port,
                        certs,
                    }
                }
                Ok(None) => continue,
                Err(problem) => panic!("{problem}"),
            }
        }
        panic!("could not start a TLS redis-server on a free loopback port after 5 attempts");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// The URL, trusting the private CA; no client certificate.
    pub fn config(&self) -> RedisConfig {
        RedisConfig::new(self.url()).tls_ca_file(self.certs.ca())
    }

    /// [`config`](Self::config) with the client certificate, for mutual TLS.
    pub fn mutual_config(&self) -> RedisConfig {
        self.config()
            .tls_client_cert(self.certs.client_cert(), self.certs.client_key())
    }

    /// A synchronous redis-rs connection over TLS (the private CA and the client certificate),
    /// for inspecting the data.
    pub fn connection(&self) -> redis::Connection {
        connect(self.port, &self.certs).expect("connect to the private TLS redis-server")
    }
}

impl Inspect for TlsRedisServer {
    fn inspect(&self) -> redis::Connection {
        self.connection()
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `redis-server` with TLS only on `port`: the child once it answers PING over TLS,
/// `None` if it exited at once because the port was taken, the reason (with the server's
/// log) if it cannot run or never answered.
fn start_on(port: u16, certs: &Certs, mutual: bool) -> Result<Option<Child>, String> {
    let log = certs.dir().join(format!("redis-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("create the server log");
    let path = |p: PathBuf| p.to_str().expect("UTF-8 temporary path").to_owned();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--loglevel", "warning"])
        .args(["--tls-cert-file", &path(certs.server_cert())])
        .args(["--tls-key-file", &path(certs.server_key())])
        .args(["--tls-ca-cert-file", &path(certs.ca())])
        .args(["--tls-auth-clients", if mutual { "yes" } else { "no" }])
        .stdout(log_file)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run redis-server ({e}). Install it with `apt-get install -y \
                 redis-server` or run ./scripts/test.sh, which does."
            )
        })?;
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let log = read_log();
            if log.contains("ddress already in use") {
                return Ok(None);
            }
            return Err(format!(
                "redis-server with TLS on port {port} exited at once; its log:\n{log}"
            ));
        }
        match connect(port, certs).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)) {
            Ok(_) => return Ok(Some(child)),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "the TLS redis-server on port {port} did not answer PING within 10 s ({last}); its \
         log:\n{}",
        read_log()
    ))
}

/// A synchronous redis-rs connection over TLS, trusting the private CA and presenting the
/// client certificate.
fn connect(port: u16, certs: &Certs) -> redis::RedisResult<redis::Connection> {
    let read = |p: PathBuf| std::fs::read(&p).expect("read a certificate file");
    redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}"),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(certs.client_cert()),
                client_key: read(certs.client_key()),
            }),
            root_cert: Some(read(certs.ca())),
        },
    )?
    .get_connection_with_timeout(Duration::from_secs(1))
}
