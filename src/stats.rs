//! Counters that tests, benchmarks and metrics exporters can read.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;
use crate::metrics::{EngineMetrics, Failures};

/// Live counters of one [`SessionEngine`](crate::SessionEngine), shared by all its actors;
/// read through [`SessionEngine::stats`](crate::SessionEngine::stats). Each change is also
/// reported to the engine's metrics (see `metrics`), from the same call.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) commands: AtomicU64,
    pub(crate) pipelines: AtomicU64,
    pub(crate) redis_commands: AtomicU64,
    pub(crate) round_trips: AtomicU64,
    pub(crate) redirects: AtomicU64,
    pub(crate) max_batch: AtomicU64,
    pub(crate) fused_reads: AtomicU64,
    pub(crate) fused_refreshes: AtomicU64,
    pub(crate) queue_depth: AtomicUsize,
    pub(crate) errors_overloaded: AtomicU64,
    pub(crate) errors_timeout: AtomicU64,
    pub(crate) errors_unavailable: AtomicU64,
    pub(crate) errors_server: AtomicU64,
    pub(crate) errors_store_full: AtomicU64,
    pub(crate) gone: AtomicU64,
    /// Whether an outage, or a Redis out of memory, is in progress: each is logged once when
    /// it starts and once when it ends.
    pub(crate) outage: Episode,
    pub(crate) out_of_memory: Episode,
    /// When a batch last found the store unavailable for some of its commands only (a cluster
    /// primary down): such an outage ends only after [`PARTIAL_OUTAGE_QUIET`] without one.
    pub(crate) partial_outage_at: Mutex<Option<Instant>>,
    /// The engine's handles into the `metrics` recorder (nothing without the feature).
    pub(crate) metrics: EngineMetrics,
}

/// What one call of a backend cost, counted by the backend as it runs: the round trips it
/// reports on the batch's span, and what [`Stats::add`] then adds to the engine's counters and
/// metrics, once per batch. The engine's [`Stats`] are shared by every actor, so their change
/// over a batch would mix in the batches of other workers; a tally belongs to one batch.
/// Atomics only because the backend's future must be `Send`: nothing else touches them.
#[derive(Debug, Default)]
pub struct Tally {
    redis_commands: AtomicU64,
    round_trips: AtomicU64,
    redirects: AtomicU64,
    fused_reads: AtomicU64,
    fused_refreshes: AtomicU64,
}

impl Tally {
    /// Commands sent to Redis (after fusion), counting those sent again.
    pub(crate) fn redis_commands(&self, n: u64) {
        self.redis_commands.fetch_add(n, Relaxed);
    }

    /// Pipelines sent to Redis (see [`StatsSnapshot::round_trips`]).
    pub(crate) fn round_trips(&self, n: u64) {
        self.round_trips.fetch_add(n, Relaxed);
    }

    /// A command a cluster node redirected.
    pub(crate) fn redirect(&self) {
        self.redirects.fetch_add(1, Relaxed);
    }

    /// Reads merged into another read, and refreshes dropped as already done in the batch.
    pub(crate) fn fused(&self, reads: u64, refreshes: u64) {
        self.fused_reads.fetch_add(reads, Relaxed);
        self.fused_refreshes.fetch_add(refreshes, Relaxed);
    }
}

/// How long batches must go without an `Unavailable` command before a partial outage (some
/// sessions unavailable, others served: a cluster primary down) is logged as over. Batches
/// that do not touch the failed node say nothing about it, so ending the outage at the first
/// clean batch would log it ending and starting again many times a second.
pub(crate) const PARTIAL_OUTAGE_QUIET: Duration = Duration::from_secs(5);

/// A condition that is logged when it starts and when it ends, never in between: a log line
/// per failed request would flood the log for as long as an outage lasts.
#[derive(Debug, Default)]
pub(crate) struct Episode(AtomicBool);

impl Episode {
    /// Records that the condition holds; true if it just started.
    pub(crate) fn start(&self) -> bool {
        !self.0.swap(true, Relaxed)
    }

    /// Records that the condition is over; true if it just ended.
    pub(crate) fn end(&self) -> bool {
        self.0.load(Relaxed) && self.0.swap(false, Relaxed)
    }
}

/// A point-in-time copy of an engine's counters, from [`SessionEngine::stats`](crate::SessionEngine::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Session commands accepted into a batch.
    pub commands: u64,
    /// Batches sent to the backend (one pipeline each on Redis).
    pub pipelines: u64,
    /// Commands the backend sent to Redis after fusion, counting those sent again (0 for the
    /// memory backend).
    pub redis_commands: u64,
    /// Pipelines sent to Redis: one per batch on a standalone server (plus a script reload or
    /// a replay after a lost connection), one per node a batch touches on a cluster (sent
    /// concurrently), plus the resends after `MOVED`, `ASK`, `TRYAGAIN`, `NOSCRIPT` or a lost
    /// connection. `redis_commands / round_trips` is the average pipeline size.
    pub round_trips: u64,
    /// Commands a cluster node redirected (`MOVED` or `ASK`) and that were sent again to the
    /// node it named.
    pub redirects: u64,
    /// Largest batch seen.
    pub max_batch: u64,
    /// Reads merged into another read's `HMGET`.
    pub fused_reads: u64,
    /// TTL refreshes dropped because the session was already refreshed in the batch.
    pub fused_refreshes: u64,
    /// Commands queued or in flight right now.
    pub queue_depth: usize,
    /// Commands refused with `Overloaded`.
    pub errors_overloaded: u64,
    /// Commands that hit their deadline.
    pub errors_timeout: u64,
    /// Commands failed because the store was unreachable.
    pub errors_unavailable: u64,
    /// Commands Redis answered with an error.
    pub errors_server: u64,
    /// Writes Redis refused because it was over `maxmemory`.
    pub errors_store_full: u64,
    /// Commands that found their session gone.
    pub gone: u64,
    /// Lifecycle events dropped because the hook (see
    /// [`SessionEngine::on_event`](crate::SessionEngine::on_event)) was 4096 events behind.
    pub events_dropped: u64,
    /// Calls of the lifecycle hook that panicked (caught and logged).
    pub events_panicked: u64,
}

impl StatsSnapshot {
    /// Average commands per pipeline; 0 before the first (see the example on
    /// [`SessionEngine::stats`](crate::SessionEngine::stats)).
    pub fn average_batch(&self) -> f64 {
        if self.pipelines == 0 {
            0.0
        } else {
            self.commands as f64 / self.pipelines as f64
        }
    }
}

impl Stats {
    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            commands: self.commands.load(Relaxed),
            pipelines: self.pipelines.load(Relaxed),
            redis_commands: self.redis_commands.load(Relaxed),
            round_trips: self.round_trips.load(Relaxed),
            redirects: self.redirects.load(Relaxed),
            max_batch: self.max_batch.load(Relaxed),
            fused_reads: self.fused_reads.load(Relaxed),
            fused_refreshes: self.fused_refreshes.load(Relaxed),
            queue_depth: self.queue_depth.load(Relaxed),
            errors_overloaded: self.errors_overloaded.load(Relaxed),
            errors_timeout: self.errors_timeout.load(Relaxed),
            errors_unavailable: self.errors_unavailable.load(Relaxed),
            errors_server: self.errors_server.load(Relaxed),
            errors_store_full: self.errors_store_full.load(Relaxed),
            gone: self.gone.load(Relaxed),
            // Counted by the engine's hook thread; see `SessionEngine::stats`.
            events_dropped: 0,
            events_panicked: 0,
        }
    }

    /// Records that a batch found the store unavailable for some of its commands only.
    pub(crate) fn partial_outage(&self) {
        *self
            .partial_outage_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(clock::now());
    }

    /// Whether no batch found the store partly unavailable for [`PARTIAL_OUTAGE_QUIET`].
    pub(crate) fn partial_outage_quiet(&self) -> bool {
        self.partial_outage_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| clock::now().duration_since(at) >= PARTIAL_OUTAGE_QUIET)
    }

    pub(crate) fn record_batch(&self, size: usize) {
        self.pipelines.fetch_add(1, Relaxed);
        self.commands.fetch_add(size as u64, Relaxed);
        self.max_batch.fetch_max(size as u64, Relaxed);
    }

    /// Adds what one backend call cost; answers its round trips.
    pub(crate) fn add(&self, tally: &Tally) -> u64 {
        let add = |counter: &AtomicU64, from: &AtomicU64| {
            let n = from.load(Relaxed);
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
            n
        };
        let redis_commands = add(&self.redis_commands, &tally.redis_commands);
        let round_trips = add(&self.round_trips, &tally.round_trips);
        let redirects = add(&self.redirects, &tally.redirects);
        add(&self.fused_reads, &tally.fused_reads);
        add(&self.fused_refreshes, &tally.fused_refreshes);
        self.metrics.backend(round_trips, redis_commands, redirects);
        round_trips
    }

    /// Counts failed commands, by kind.
    pub(crate) fn failed(&self, failures: Failures) {
        let Failures {
            overloaded,
            timeout,
            unavailable,
            server,
            store_full,
        } = failures;
        for (counter, n) in [
            (&self.errors_overloaded, overloaded),
            (&self.errors_timeout, timeout),
            (&self.errors_unavailable, unavailable),
            (&self.errors_server, server),
            (&self.errors_store_full, store_full),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
        self.metrics.failed(failures);
    }

    /// Reports the queue depth to the metrics, which sample it (see `metrics`).
    pub(crate) fn sample_queue_depth(&self) {
        self.metrics.queue_depth(self.queue_depth.load(Relaxed));
    }
}

/// Holds one unit of queue depth; releases it when dropped, whether the command was answered or
/// dropped with a stopped actor.
pub(crate) struct DepthGuard(Arc<Stats>);

impl DepthGuard {
    /// Takes a unit of depth, or reports the depth found if `limit` is reached.
    pub(crate) fn acquire(stats: &Arc<Stats>, limit: usize) -> Result<Self, usize> {
        let before = stats.queue_depth.fetch_add(1, Relaxed);
        if before >= limit {
            stats.queue_depth.fetch_sub(1, Relaxed);
            stats.failed(Failures {
                overloaded: 1,
                ..Failures::default()
            });
            return Err(before);
        }
        Ok(DepthGuard(stats.clone()))
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.queue_depth.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_partial_outage_counts_as_over_only_after_a_quiet_period() {
        let stats = Stats::default();
        assert!(stats.partial_outage_quiet(), "no partial outage yet");
        stats.partial_outage();
        assert!(!stats.partial_outage_quiet());
        tokio::time::advance(PARTIAL_OUTAGE_QUIET - Duration::from_millis(1)).await;
        assert!(!stats.partial_outage_quiet());
        stats.partial_outage();
        tokio::time::advance(PARTIAL_OUTAGE_QUIET - Duration::from_millis(1)).await;
        assert!(
            !stats.partial_outage_quiet(),
            "the quiet period starts again"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(stats.partial_outage_quiet());
    }
}
