//! Helpers of the cluster tests: an engine on a cluster, session keys placed on chosen
//! primaries or slots, and a load of increments and reads that records every failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use circumflex_session::testing::{self, Handle, Op, Reply};
use circumflex_session::{Error, RedisBackend, RedisConfig, SessionEngine};
use futures::future::join_all;

use crate::support::engine::*;
use crate::support::{owner_in, RedisCluster};

pub async fn cluster_engine(cluster: &RedisCluster) -> SessionEngine {
    SessionEngine::new(
        RedisBackend::connect(RedisConfig::cluster(cluster.urls()))
            .await
            .expect("a valid cluster config"),
    )
}

/// The 65536 slot tags a session id can start with, with their slots, in tag order.
pub fn tags() -> impl Iterator<Item = (String, u16)> {
    (0..=0xffffu32).map(|t| {
        let tag = format!("{t:04x}");
        let slot = testing::cluster_slot(&tag);
        (tag, slot)
    })
}

/// `per_primary` session keys on each primary (spread over its slots), with the port of the
/// primary.
pub fn sessions_on_every_primary(
    cluster: &RedisCluster,
    per_primary: usize,
    name: &str,
) -> Vec<(Arc<str>, u16)> {
    let view = cluster.view(cluster.primaries()[0]);
    let mut picked: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    // Every 97th tag: spread over the slots of each primary.
    for (tag, slot) in tags().step_by(97) {
        let owner = owner_in(&view, slot).expect("every slot is served");
        let mine = picked.entry(owner).or_default();
        if mine.len() < per_primary {
            mine.push(tag);
        }
    }
    assert_eq!(picked.len(), 3, "tags on all three primaries: {picked:?}");
    picked
        .into_iter()
        .flat_map(|(port, tags)| tags.into_iter().map(move |tag| (tagged(&tag, name), port)))
        .collect()
}

/// A session key whose slot is in `slots`, the `n`th such.
pub fn session_in_slots(slots: std::ops::Range<u16>, n: usize, name: &str) -> Arc<str> {
    let (tag, _) = tags()
        .filter(|(_, slot)| slots.contains(slot))
        .nth(n)
        .expect("enough tags in the slot range");
    tagged(&tag, name)
}

/// Creates every session with a counter `n` at 0.
pub async fn create_sessions(c: &Handle, sessions: &[Arc<str>]) {
    let created = c
        .batch(
            sessions
                .iter()
                .map(|s| cmd(s, Op::Incr(create(TTL), "n".into(), 0), Some(TTL)))
                .collect(),
        )
        .await;
    for (s, result) in sessions.iter().zip(created) {
        assert_eq!(result.ok(), Some(Reply::Int(0)), "creating {s}");
    }
}

/// What the load saw of one session.
#[derive(Debug, Default)]
pub struct SessionLog {
    /// Increments answered with the new value.
    pub acked: u64,
    /// Increments answered with an error (which may have run).
    pub failed_incrs: u64,
    /// Every error, with when it came (since the load started).
    pub errors: Vec<(Duration, Error)>,
}

/// Increments each session's counter `n` and reads it back, every session in its own loop and
/// all at once, until `stop` is set. After an error a loop waits 5 ms, so that a dead node
/// does not turn it into a busy loop.
pub async fn hammer(
    c: &Handle,
    sessions: &[Arc<str>],
    stop: &AtomicBool,
    start: Instant,
) -> Vec<SessionLog> {
    join_all(sessions.iter().map(|s| async move {
        let mut log = SessionLog::default();
        while !stop.load(Ordering::Relaxed) {
            let mut failed = false;
            match c.run(s, incr("n", 1), Some(TTL)).await {
                Ok(Reply::Int(_)) => log.acked += 1,
                Ok(other) => panic!("incr of {s} answered {other:?}"),
                Err(e) => {
                    log.failed_incrs += 1;
                    log.errors.push((start.elapsed(), e));
                    failed = true;
                }
            }
            match c.run(s, get(&["n"]), Some(TTL)).await {
                Ok(Reply::Values(_)) => {}
                Ok(other) => panic!("read of {s} answered {other:?}"),
                Err(e) => {
                    log.errors.push((start.elapsed(), e));
                    failed = true;
                }
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        log
    }))
    .await
}

/// The counter `n` of a session, read on the primary that serves it.
pub fn counter(cluster: &RedisCluster, key: &str) -> u64 {
    cluster
        .hget(key, "n")
        .unwrap_or_else(|| panic!("{key} has no counter"))
        .parse()
        .expect("a number")
}

/// Whether an error is one the HTTP edge answers with 503.
pub fn is_503(error: &Error) -> bool {
    matches!(error, Error::Unavailable(_) | Error::Timeout(_))
}
