//! Session lifetime and limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_ANONYMOUS_TTI, DEFAULT_MAX_KEYS, DEFAULT_MAX_SESSION_BYTES, DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_REFRESH_AFTER_PERCENT, DEFAULT_TTI,
};
use crate::error::Error;

/// When the idle timer of a session is pushed back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TtlRefresh {
    /// On every request that uses the session, read or write (at most once per request).
    #[default]
    OnUse,
    /// Only on requests that write.
    OnWrite,
}

/// Session lifetime and limits: the `[session]` section of [`Config`](crate::Config), also set
/// through [`SessionMiddleware::builder`](crate::SessionMiddleware::builder).
///
/// ```
/// use std::time::Duration;
/// use circumflex_session::SessionConfig;
///
/// let config = SessionConfig { tti_secs: 300, ..SessionConfig::default() };
/// assert_eq!(config.tti(), Duration::from_secs(300));
/// // Anonymous sessions never live longer than logged-in ones:
/// assert_eq!(config.anonymous_tti(), Duration::from_secs(300));
/// assert_eq!(SessionConfig::default().anonymous_tti(), Duration::from_secs(600));
/// assert!(SessionConfig { tti_secs: 0, ..config }.validate().is_err());
/// ```
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
    /// ago (0 to 99). Default 10: a busy session costs one `PEXPIRE` per 10 % of its time to
    /// idle instead of one per request, which halves a read's Redis commands, and a session
    /// may expire up to 10 % of its time to idle before the idle timeout (3 of 30 minutes).
    /// 0 refreshes on every eligible request.
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
    /// Most sessions one user may have at once (see
    /// [`bind_user`](crate::AsyncSession::bind_user)): binding one more revokes the user's
    /// oldest (first bound), atomically with the bind. `None` (default): no cap.
    pub max_sessions_per_user: Option<u32>,
    /// Shortest time to idle [`set_tti`](crate::AsyncSession::set_tti) accepts, in seconds.
    /// Default 60.
    pub min_tti_secs: u64,
    /// Longest time to idle [`set_tti`](crate::AsyncSession::set_tti) accepts (remember-me),
    /// in seconds. Default 2592000 (30 days).
    pub max_tti_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            tti_secs: DEFAULT_TTI.as_secs(),
            refresh: TtlRefresh::OnUse,
            refresh_after_percent: DEFAULT_REFRESH_AFTER_PERCENT,
            max_lifetime_secs: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            anonymous_tti_secs: DEFAULT_ANONYMOUS_TTI.as_secs(),
            max_keys: DEFAULT_MAX_KEYS,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
            max_sessions_per_user: None,
            min_tti_secs: 60,
            max_tti_secs: 30 * 24 * 3600,
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

    /// Checks that the lifetimes and limits are in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
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
        if self.max_sessions_per_user == Some(0) {
            return Err(Error::Config(
                "session.max_sessions_per_user must be positive when set".into(),
            ));
        }
        if self.min_tti_secs == 0 || self.min_tti_secs > self.max_tti_secs {
            return Err(Error::Config(
                "session.min_tti_secs must be positive and at most session.max_tti_secs".into(),
            ));
        }
        if self.max_session_bytes < self.max_value_bytes {
            return Err(Error::Config(
                "session.max_session_bytes must be at least session.max_value_bytes".into(),
            ));
        }
        Ok(())
    }
}
