//! Plain, serde-deserialisable configuration.
//!
//! `config/default.toml` deserialises into [`Config`]; the builders
//! ([`SessionMiddleware::builder`](crate::SessionMiddleware::builder),
//! [`SessionEngine::with_config`](crate::SessionEngine::with_config),
//! [`RedisConfig`]) fill exactly these structs and check them with the same `validate`, so a
//! file and code never disagree on a default or on what is valid.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

mod cookie;
mod redis;
mod session;

pub(crate) use self::cookie::id_header;
pub use self::cookie::{CookieConfig, CookieLifecycle, CookieSecurity, SameSite};
pub(crate) use self::redis::{redact_url, Topology};
pub use self::redis::{RedisConfig, SentinelConfig, TlsConfig};
pub use self::session::{SessionConfig, TtlRefresh};

/// Default Redis URL: a local server.
pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default key prefix: a session lives in the hash `session:{<tag>}:<id>`.
pub(crate) const DEFAULT_KEY_PREFIX: &str = "session";
/// Default time to idle: 30 minutes, the upper end of what OWASP suggests for idle timeouts.
pub(crate) const DEFAULT_TTI: Duration = Duration::from_secs(30 * 60);
/// Default pool size (bb8 connections). Each is a multiplexed connection, so few are needed.
pub(crate) const DEFAULT_POOL_SIZE: u32 = 4;
/// Default time to wait for a pooled connection.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time Redis may take to answer before its connection is replaced.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default cookie name.
pub(crate) const DEFAULT_COOKIE_NAME: &str = "session";
/// Default time to idle of a session that never logged in (was never renewed): 10 minutes.
/// Anonymous sessions are what a client can mint in bulk, so they get the shorter life.
pub(crate) const DEFAULT_ANONYMOUS_TTI: Duration = Duration::from_secs(10 * 60);
/// The share of the time to idle within which a refresh is skipped (see
/// `SessionConfig::refresh_after_percent`): the same 10 % by which a bound session's index entry
/// lags (`INDEX_SLACK_PERCENT`), and where the Redis commands a busy session's refreshes cost
/// are already a small fraction of one per request.
pub(crate) const DEFAULT_REFRESH_AFTER_PERCENT: u8 = 10;
/// Default largest serialised value accepted by `set` (64 KiB).
pub(crate) const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
/// Default most user keys in one session.
pub(crate) const DEFAULT_MAX_KEYS: usize = 256;
/// Default most bytes in one session, user keys plus values (256 KiB: four values of the
/// largest size). It bounds what any one Redis call about a session costs.
pub(crate) const DEFAULT_MAX_SESSION_BYTES: usize = 256 * 1024;
/// Default largest number of commands in one pipeline.
pub(crate) const DEFAULT_MAX_BATCH: usize = 1024;
/// Default number of queued commands (per engine) past which new ones fail with `Overloaded`.
pub(crate) const DEFAULT_QUEUE_DEPTH: usize = 16 * 1024;
/// Default deadline of one session operation, queueing included.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);

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
    ///
    /// # Errors
    /// [`Error::Config`] for invalid TOML, an unknown field, or a value out of range.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let config: Config =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file, then applies the environment
    /// ([`RedisConfig::apply_env`]: `REDIS_URL`, `REDIS_CLUSTER_NODES`, `REDIS_SENTINEL`, the
    /// `REDIS_TLS_*` files) and validates the result.
    ///
    /// ```
    /// use circumflex_session::{Config, CookieConfig, SessionConfig};
    ///
    /// // The crate's own file, whose values are the defaults:
    /// let config = Config::load("config/default.toml")?;
    /// assert_eq!(config.session, SessionConfig::default());
    /// assert_eq!(config.cookie, CookieConfig::default());
    /// assert!(Config::load("no/such/file.toml").is_err());
    /// # Ok::<(), circumflex_session::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] if the file cannot be read, or as [`from_toml`](Self::from_toml).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config = Self::from_toml(&text)?;
        config.redis.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section. The fields are public, so a config changed in code should be
    /// checked again.
    ///
    /// ```
    /// use circumflex_session::{Config, Error};
    ///
    /// let mut config = Config::default();
    /// assert!(config.validate().is_ok());
    /// config.session.max_value_bytes = 1024 * 1024; // more than a session may hold
    /// let error = config.validate().unwrap_err();
    /// assert!(error.to_string().contains("session.max_session_bytes"));
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), Error> {
        self.redis.validate()?;
        self.session.validate()?;
        self.cookie.validate()?;
        self.actor.validate()
    }
}

/// Batching actor settings.
///
/// One actor runs on each actix-web worker and keeps one batch in flight; both were chosen by
/// measurement and are not settings (see the `actor` module docs).
///
/// ```
/// use std::time::Duration;
/// use circumflex_session::ActorConfig;
///
/// let config = ActorConfig { deadline_ms: 500, ..ActorConfig::default() };
/// assert_eq!(config.deadline(), Duration::from_millis(500));
/// assert_eq!(config.max_batch, 1024);
/// assert!(ActorConfig { max_batch: 0, ..config }.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorConfig {
    /// Largest number of commands in one pipeline. Default 1024. Larger batches are cheaper
    /// per command; lower it only to bound how long Redis spends on one pipeline of ours
    /// while other clients of the same Redis wait (a cap of 16 measured slower on a Redis of
    /// our own: BENCHMARKS.md).
    pub max_batch: usize,
    /// Queued commands past which new ones fail with `Overloaded`. Default 16384.
    pub queue_depth: usize,
    /// Deadline of one operation in milliseconds, queueing included. Default 2000.
    pub deadline_ms: u64,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
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
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, value) in [
            ("actor.max_batch", self.max_batch as u64),
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
    fn the_id_header_is_off_by_default_and_takes_any_case() {
        assert_eq!(Config::default().cookie.header, None);
        let config = Config::from_toml("[cookie]\nheader = \"X-Session-Id\"\n").unwrap();
        assert_eq!(config.cookie.header.as_deref(), Some("X-Session-Id"));
    }

    #[test]
    fn an_invalid_or_reserved_id_header_is_a_config_error_naming_the_setting() {
        for name in [
            "",
            "x session",
            "x:id",
            "é",
            "cookie",
            "Set-Cookie",
            "AUTHORIZATION",
            "host",
            "origin",
            "sec-session",
            "Proxy-Session",
        ] {
            let toml = format!("[cookie]\nheader = {name:?}\n");
            let err = Config::from_toml(&toml).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{name:?}: {err:?}");
            assert!(err.to_string().contains("cookie.header"), "{name:?}: {err}");
        }
    }

    #[test]
    fn invalid_cookie_name_is_rejected() {
        let err = Config::from_toml("[cookie]\nname = \"a b\"\n").unwrap_err();
        assert!(err.to_string().contains("cookie.name"), "{err}");
    }
}
