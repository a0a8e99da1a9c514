//! Plain, serde-deserialisable configuration.
//!
//! `config/default.toml` deserialises into [`Config`]; the builders
//! ([`SessionMiddleware::builder`](crate::SessionMiddleware::builder),
//! [`SessionEngine::with_config`](crate::SessionEngine::with_config),
//! [`RedisConfig`]) fill exactly these structs, so a file and code never disagree on a default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Default Redis URL: a local server.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default key prefix: a session lives in the hash `session:<id>`.
pub const DEFAULT_KEY_PREFIX: &str = "session";
/// Default time to idle: 30 minutes, the upper end of what OWASP suggests for idle timeouts.
pub const DEFAULT_TTI: Duration = Duration::from_secs(30 * 60);
/// Default pool size (bb8 connections). Each is a multiplexed connection, so few are needed.
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// Default time to wait for a pooled connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time Redis may take to answer before its connection is replaced.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "session";
/// Default time to idle of a session that never logged in (was never renewed): 10 minutes.
/// Anonymous sessions are what a client can mint in bulk, so they get the shorter life.
pub const DEFAULT_ANONYMOUS_TTI: Duration = Duration::from_secs(10 * 60);
/// Default largest serialised value accepted by `set` (64 KiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
/// Default most user keys in one session.
pub const DEFAULT_MAX_KEYS: usize = 256;
/// Default most bytes in one session, user keys plus values (256 KiB: four values of the
/// largest size). It bounds what any one Redis call about a session costs.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 256 * 1024;
/// Default largest number of commands in one pipeline.
pub const DEFAULT_MAX_BATCH: usize = 1024;
/// Default number of pipelines one actor keeps in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1;
/// Default number of queued commands (per engine) past which new ones fail with `Overloaded`.
pub const DEFAULT_QUEUE_DEPTH: usize = 16 * 1024;
/// Default deadline of one session operation, queueing included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);

/// The whole configuration, as in `config/default.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where sessions are stored.
    pub redis: RedisConfig,
    /// Session lifetime and value limits.
    pub session: SessionConfig,
    /// The session cookie.
    pub cookie: CookieConfig,
    /// The batching actor.
    pub actor: ActorConfig,
}

impl Config {
    /// Parses a TOML document (the format of `config/default.toml`) and validates it.
    ///
    /// ```
    /// let config = circumflex_session::Config::from_toml("[session]\ntti_secs = 60\n").unwrap();
    /// assert_eq!(config.session.tti(), std::time::Duration::from_secs(60));
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let config: Config =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file, then applies the `REDIS_URL` environment variable if set.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config = Self::from_toml(&text)?;
        if let Ok(url) = std::env::var("REDIS_URL") {
            if !url.is_empty() {
                config.redis.url = Some(url);
            }
        }
        Ok(config)
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), Error> {
        self.redis.validate()?;
        self.session.validate()?;
        self.cookie.validate()?;
        self.actor.validate()
    }
}

/// Redis connection settings (the Node original's host/port/password/db/prefix).
///
/// `Debug` hides the password and any password in the URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379`. `None` means "none configured": the demo then
    /// starts a private server; [`RedisConfig::url_or_default`] falls back to
    /// [`DEFAULT_REDIS_URL`].
    pub url: Option<String>,
    /// Database index; overrides the one in the URL when set.
    pub db: Option<i64>,
    /// ACL user name; overrides the one in the URL when set.
    pub username: Option<String>,
    /// Password; overrides the one in the URL when set.
    pub password: Option<String>,
    /// Key prefix. A session is the hash `<prefix>:<id>`. Default `session`.
    pub key_prefix: String,
    /// bb8 pool size. Default [`DEFAULT_POOL_SIZE`].
    pub pool_size: u32,
    /// How long to wait for a pooled connection, in milliseconds. Default 2000.
    pub connect_timeout_ms: u64,
    /// How long to wait for Redis to answer a pipeline before the connection is considered
    /// broken and replaced, in milliseconds. Default 2000.
    pub response_timeout_ms: u64,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
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

/// A URL with its userinfo password (`redis://user:secret@host`) replaced, for logs.
pub fn redact_url(url: &str) -> String {
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

    /// The configured URL, or [`DEFAULT_REDIS_URL`].
    pub fn url_or_default(&self) -> &str {
        self.url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
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

    /// Checks the prefix and pool size.
    pub fn validate(&self) -> Result<(), Error> {
        if self.key_prefix.is_empty() {
            return Err(Error::Config("redis.key_prefix must not be empty".into()));
        }
        if self.pool_size == 0 {
            return Err(Error::Config("redis.pool_size must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(Error::Config(
                "redis.connect_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// When the idle timer of a session is pushed back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlRefresh {
    /// On every request that uses the session, read or write (at most once per request).
    #[default]
    OnUse,
    /// Only on requests that write.
    OnWrite,
}

/// Session lifetime and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Time to idle in seconds: a session unused this long expires. Default 1800 (30 min).
    /// Applies to sessions that logged in, that is, were [renewed](crate::AsyncSession::renew).
    pub tti_secs: u64,
    /// Time to idle in seconds of a session that never logged in (was never renewed). Default
    /// 600 (10 min); capped at `tti_secs`. Set it equal to `tti_secs` to treat every session
    /// alike.
    pub anonymous_tti_secs: u64,
    /// When the idle timer is refreshed. Default `on_use`.
    pub refresh: TtlRefresh,
    /// Skip a refresh when this worker refreshed the session less than this percentage of its
    /// time to idle (`tti_secs`, or `anonymous_tti_secs` for a session that never logged in)
    /// ago (0 to 99). Default 0: refresh on every eligible request.
    pub refresh_after_percent: u8,
    /// Optional absolute lifetime cap in seconds, counted from creation; `None` (default) means
    /// a session lives as long as it keeps being used.
    pub max_lifetime_secs: Option<u64>,
    /// Largest serialised value `set` accepts, in bytes. Default 65536.
    pub max_value_bytes: usize,
    /// Most user keys in one session. Default 256.
    pub max_keys: usize,
    /// Most bytes in one session: user keys plus serialised values. Default 262144 (256 KiB).
    /// At least `max_value_bytes`.
    pub max_session_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            tti_secs: DEFAULT_TTI.as_secs(),
            refresh: TtlRefresh::OnUse,
            refresh_after_percent: 0,
            max_lifetime_secs: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            anonymous_tti_secs: DEFAULT_ANONYMOUS_TTI.as_secs(),
            max_keys: DEFAULT_MAX_KEYS,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
        }
    }
}

impl SessionConfig {
    /// The time to idle of a session that logged in (was renewed).
    pub fn tti(&self) -> Duration {
        Duration::from_secs(self.tti_secs)
    }

    /// The time to idle of a session that never logged in: `anonymous_tti_secs`, capped at
    /// `tti_secs`.
    pub fn anonymous_tti(&self) -> Duration {
        Duration::from_secs(self.anonymous_tti_secs.min(self.tti_secs))
    }

    /// The size limits every write is checked against.
    pub(crate) fn limits(&self) -> crate::actor::message::Limits {
        crate::actor::message::Limits {
            max_keys: self.max_keys as u64,
            max_bytes: self.max_session_bytes as u64,
        }
    }

    /// Checks that the lifetimes are positive.
    pub fn validate(&self) -> Result<(), Error> {
        if self.tti_secs == 0 {
            return Err(Error::Config("session.tti_secs must be positive".into()));
        }
        if self.max_lifetime_secs == Some(0) {
            return Err(Error::Config(
                "session.max_lifetime_secs must be positive when set".into(),
            ));
        }
        if self.refresh_after_percent > 99 {
            return Err(Error::Config(
                "session.refresh_after_percent must be between 0 and 99".into(),
            ));
        }
        if self.max_value_bytes == 0 {
            return Err(Error::Config(
                "session.max_value_bytes must be positive".into(),
            ));
        }
        if self.anonymous_tti_secs == 0 {
            return Err(Error::Config(
                "session.anonymous_tti_secs must be positive".into(),
            ));
        }
        if self.max_keys == 0 {
            return Err(Error::Config("session.max_keys must be positive".into()));
        }
        if self.max_session_bytes < self.max_value_bytes {
            return Err(Error::Config(
                "session.max_session_bytes must be at least session.max_value_bytes".into(),
            ));
        }
        Ok(())
    }
}

/// How the cookie value is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieSecurity {
    /// Signed (HMAC-SHA256): tamper-proof, readable. The default.
    #[default]
    Signed,
    /// Private (AES-256-GCM): tamper-proof and unreadable.
    Private,
}

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`, the default.
    #[default]
    Lax,
    /// `SameSite=None` (requires `Secure` in browsers).
    None,
}

/// Whether the cookie outlives the browser session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieLifecycle {
    /// No `Max-Age`: the browser forgets the cookie when it closes. The default.
    #[default]
    BrowserSession,
    /// `Max-Age` equal to the time to idle, re-sent whenever the idle timer is refreshed.
    Persistent,
}

/// Session cookie attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name. Default `session`.
    pub name: String,
    /// `Secure` attribute. Default `true`.
    pub secure: bool,
    /// `HttpOnly` attribute. Default `true`.
    pub http_only: bool,
    /// `SameSite` attribute. Default `lax`.
    pub same_site: SameSite,
    /// `Path` attribute. Default `/`.
    pub path: String,
    /// `Domain` attribute. Default none (host-only cookie).
    pub domain: Option<String>,
    /// Signed or private. Default `signed`.
    pub security: CookieSecurity,
    /// Browser-session or persistent cookie. Default `browser_session`.
    pub lifecycle: CookieLifecycle,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_COOKIE_NAME.to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            security: CookieSecurity::Signed,
            lifecycle: CookieLifecycle::BrowserSession,
        }
    }
}

impl CookieConfig {
    /// Checks the name and path.
    pub fn validate(&self) -> Result<(), Error> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(Error::Config(format!(
                "cookie.name {:?} is not a valid cookie name",
                self.name
            )));
        }
        if !self.path.starts_with('/') {
            return Err(Error::Config("cookie.path must start with '/'".into()));
        }
        // A `;` or control character would let a setting inject cookie attributes.
        let attribute_ok = |v: &str| !v.bytes().any(|b| b == b';' || b.is_ascii_control());
        if !attribute_ok(&self.path) {
            return Err(Error::Config(
                "cookie.path must not contain ';' or control characters".into(),
            ));
        }
        if let Some(domain) = &self.domain {
            if domain.is_empty() || !attribute_ok(domain) || domain.contains(' ') {
                return Err(Error::Config(format!(
                    "cookie.domain {domain:?} is not a valid domain"
                )));
            }
        }
        Ok(())
    }
}

/// Where the batching actors run.
///
/// The default is [`Placement::PerWorker`], chosen by measurement (`scripts/bench.sh`, see
/// BENCHMARKS.md): with one actor per actix-web worker a handler reaches its actor without a
/// cross-thread hop or a wake-up of another thread, and with the actor's in-flight bound the
/// batches still grow with load. A shared actor on its own arbiter makes fewer, larger
/// pipelines when there are many workers, but every command crosses threads twice; on the
/// benchmark machine it was slower in every workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// One actor on each actix-web worker: no cross-thread hop between handler and actor.
    #[default]
    PerWorker,
    /// One actor on an arbiter (thread) of its own, shared by all workers: larger batches.
    Shared,
}

/// Batching actor settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorConfig {
    /// Where actors run. Default `per_worker`.
    pub placement: Placement,
    /// Largest number of commands in one pipeline. Default 1024.
    pub max_batch: usize,
    /// Pipelines one actor keeps in flight. Default 1.
    pub max_in_flight: usize,
    /// Queued commands past which new ones fail with `Overloaded`. Default 16384.
    pub queue_depth: usize,
    /// Deadline of one operation in milliseconds, queueing included. Default 2000.
    pub deadline_ms: u64,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            placement: Placement::PerWorker,
            max_batch: DEFAULT_MAX_BATCH,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            deadline_ms: DEFAULT_DEADLINE.as_millis() as u64,
        }
    }
}

impl ActorConfig {
    /// The per-operation deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Checks that every bound is positive.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, value) in [
            ("actor.max_batch", self.max_batch as u64),
            ("actor.max_in_flight", self.max_in_flight as u64),
            ("actor.queue_depth", self.queue_depth as u64),
            ("actor.deadline_ms", self.deadline_ms),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_the_secure_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert!(config.cookie.secure);
        assert!(config.cookie.http_only);
        assert_eq!(config.cookie.security, CookieSecurity::Signed);
        assert_eq!(config.session.tti(), DEFAULT_TTI);
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = Config::from_toml("[cookie]\nsecur = false\n").unwrap_err();
        assert!(err.to_string().contains("secur"), "{err}");
    }

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
    fn zero_tti_is_rejected() {
        let err = Config::from_toml("[session]\ntti_secs = 0\n").unwrap_err();
        assert!(err.to_string().contains("tti_secs"), "{err}");
    }

    #[test]
    fn cookie_attributes_cannot_be_injected_through_path_or_domain() {
        let err = Config::from_toml("[cookie]\npath = \"/; Domain=evil\"\n").unwrap_err();
        assert!(err.to_string().contains("cookie.path"), "{err}");
        let err = Config::from_toml("[cookie]\ndomain = \"a.com; Secure\"\n").unwrap_err();
        assert!(err.to_string().contains("cookie.domain"), "{err}");
    }

    #[test]
    fn invalid_cookie_name_is_rejected() {
        let err = Config::from_toml("[cookie]\nname = \"a b\"\n").unwrap_err();
        assert!(err.to_string().contains("cookie.name"), "{err}");
    }
}
