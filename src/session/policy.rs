//! How long a session lives, and when its idle timer is pushed back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{self, Instant};
use crate::config::SessionConfig;
use crate::ticket::Ticket;

/// The share of the TTL by which the user index's own TTL is padded (`SLACK_PERCENT` in
/// `lua/index.lua`, which must say the same), and so how often a worker moves a bound session's
/// index entry: once per that share of the time to idle.
pub(crate) const INDEX_SLACK_PERCENT: u32 = 10;

/// The lifetime rules of one middleware's sessions.
pub(crate) struct Policy {
    pub(crate) session: SessionConfig,
}

impl Policy {
    /// The TTL to give a session now: its time to idle (logged in, or anonymous), capped by
    /// what remains of the absolute lifetime. `None` when the lifetime is over.
    pub(crate) fn ttl(&self, ticket: &Ticket) -> Option<Duration> {
        self.capped(ticket.created, self.tti(ticket))
    }

    /// A session's time to idle: its own (remember-me), else the logged-in or anonymous one.
    pub(crate) fn tti(&self, ticket: &Ticket) -> Duration {
        match ticket.tti {
            Some(secs) => Duration::from_secs(secs),
            None if ticket.renewed => self.session.tti(),
            None => self.session.anonymous_tti(),
        }
    }

    /// `tti`, capped by what remains of the absolute lifetime of a session created at
    /// `created`; `None` when that lifetime is over.
    pub(crate) fn capped(&self, created: u64, tti: Duration) -> Option<Duration> {
        match self.session.max_lifetime_secs {
            None => Some(tti),
            Some(max) => {
                let age = clock::unix_secs().saturating_sub(created);
                let left = max.checked_sub(age).filter(|&s| s > 0)?;
                Some(tti.min(Duration::from_secs(left)))
            }
        }
    }
}

/// Remembers when this worker last refreshed each session, so that with
/// `refresh_after_percent > 0` a busy session is refreshed about once per window instead of
/// on every request, without asking Redis. Bounded: past `MAX_TRACKED` sessions, entries older
/// than the window are dropped, and if that is not enough the map starts over (which only
/// costs some early refreshes).
pub(crate) struct RefreshLimiter {
    percent: u32,
    last: Mutex<HashMap<Arc<str>, Instant>>,
}

impl RefreshLimiter {
    const MAX_TRACKED: usize = 100_000;

    pub(crate) fn new(session: &SessionConfig) -> Self {
        Self::with_percent(u32::from(session.refresh_after_percent))
    }

    pub(crate) fn with_percent(percent: u32) -> Self {
        Self {
            percent,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets `key`, so that its next refresh is due (after a command that may not have run).
    pub(crate) fn forget(&self, key: &Arc<str>) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Whether a refresh to `ttl` is due for `key` now; records it if so.
    pub(crate) fn due(&self, key: &Arc<str>, ttl: Duration) -> bool {
        let window = ttl * self.percent / 100;
        if window.is_zero() {
            return true;
        }
        let now = clock::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = last.get(key) {
            if now.duration_since(*at) < window {
                return false;
            }
        }
        if last.len() >= Self::MAX_TRACKED {
            last.retain(|_, at| now.duration_since(*at) < window);
            if last.len() >= Self::MAX_TRACKED {
                last.clear();
            }
        }
        last.insert(key.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(100);

    fn limiter(percent: u8) -> RefreshLimiter {
        RefreshLimiter::new(&SessionConfig {
            tti_secs: 100,
            refresh_after_percent: percent,
            ..SessionConfig::default()
        })
    }

    #[test]
    fn the_index_slack_is_the_one_the_scripts_pad_the_index_with() {
        let lua = include_str!("../backend/lua/index.lua");
        assert!(lua.contains(&format!("local SLACK_PERCENT = {INDEX_SLACK_PERCENT}\n")));
    }

    #[test]
    fn without_a_threshold_every_refresh_is_due() {
        let limiter = limiter(0);
        let key: Arc<str> = Arc::from("session:a");
        assert!(limiter.due(&key, TTL));
        assert!(limiter.due(&key, TTL));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_refreshed_within_the_window_is_skipped_until_the_window_passes() {
        let limiter = limiter(10);
        let a: Arc<str> = Arc::from("session:a");
        let b: Arc<str> = Arc::from("session:b");
        assert!(limiter.due(&a, TTL));
        assert!(!limiter.due(&a, TTL), "refreshed less than 10 s ago");
        assert!(limiter.due(&b, TTL), "another session is not affected");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!limiter.due(&a, TTL), "9 s: still inside the window");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.due(&a, TTL), "10 s: the window has passed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_absolute_lifetime_caps_the_ttl_and_ends_the_session() {
        let policy = Policy {
            session: SessionConfig {
                tti_secs: 100,
                anonymous_tti_secs: 100,
                max_lifetime_secs: Some(150),
                ..SessionConfig::default()
            },
        };
        let ticket = Ticket::generate(false);
        assert_eq!(policy.ttl(&ticket), Some(TTL));
        tokio::time::advance(Duration::from_secs(100)).await;
        let left = policy.ttl(&ticket).expect("50 s left");
        assert!(
            left <= Duration::from_secs(50) && left >= Duration::from_secs(49),
            "{left:?}"
        );
        tokio::time::advance(Duration::from_secs(51)).await;
        assert_eq!(policy.ttl(&ticket), None, "past the lifetime");
    }
}
