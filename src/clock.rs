//! The one clock every lifetime decision reads: Tokio's.
//!
//! Idle timers of the memory backend, the refresh limiter's windows, command deadlines and the
//! creation stamps of sessions all read it, so a test that pauses Tokio's clock
//! (`tokio::time::pause()`, then `advance`) moves every one of them together, without sleeping.
//! Outside such a test Tokio's clock is the system's monotonic clock, and [`unix_secs`] is the
//! wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use tokio::time::Instant;

/// Now, on Tokio's clock.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Current Unix time in seconds: the wall clock, plus however far a paused Tokio clock has been
/// advanced past the real time.
pub(crate) fn unix_secs() -> u64 {
    unix_millis() / 1000
}

/// [`unix_secs`] in milliseconds.
pub(crate) fn unix_millis() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Unpaused, Tokio's clock is read first and so is never ahead: no offset.
    let ahead = Instant::now()
        .checked_duration_since(Instant::from_std(std::time::Instant::now()))
        .map_or(0, |d| d.as_millis() as u64);
    wall + ahead
}
