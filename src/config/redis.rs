//! Where sessions are stored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_POOL_SIZE, DEFAULT_REDIS_URL,
    DEFAULT_RESPONSE_TIMEOUT,
};
use crate::error::Error;

/// Redis connection settings: where, as whom, under which key prefix, and how patiently.
///
/// `Debug` hides the password and any password in the URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379`. `None` means "none configured": the demo then
    /// starts a private server; [`RedisConfig::url_or_default`] falls back to
    /// `redis://127.0.0.1:6379`.
    pub url: Option<String>,
    /// Database index; overrides the one in the URL when set.
    pub db: Option<i64>,
    /// ACL user name; overrides the one in the URL when set.
    pub username: Option<String>,
    /// Password; overrides the one in the URL when set.
    pub password: Option<String>,
    /// Key prefix. A session is the hash `<prefix>:<id>`. Default `session`.
    pub key_prefix: String,
    /// bb8 pool size. Default 4: each connection is multiplexed, so few are needed.
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
fn redact_url(url: &str) -> String {
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

    /// The configured URL, or `redis://127.0.0.1:6379`.
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

    /// Checks the prefix, the pool size and the timeouts.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
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
        if self.response_timeout_ms == 0 {
            return Err(Error::Config(
                "redis.response_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }
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
}
