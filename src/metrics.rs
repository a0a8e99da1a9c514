//! Engine metrics through the [`metrics`](https://docs.rs/metrics) facade: crate feature
//! `metrics`, on by default. The crate installs no recorder: the application installs one (for
//! example `metrics-exporter-prometheus`), and without one every metric is a no-op. To leave
//! the `metrics` crate out altogether, depend on circumflex-session with
//! `default-features = false`; the calls below then compile to nothing.
//!
//! | name | type | labels | unit | what it counts |
//! |---|---|---|---|---|
//! | `circumflex_session_batch_size` | histogram | `backend` | commands | commands per flush: one sample per batch sent to the backend |
//! | `circumflex_session_flush_duration_seconds` | histogram | `backend` | seconds | from a batch leaving the actor until the backend answered it (or its deadline passed) |
//! | `circumflex_session_queue_depth` | gauge | `backend` | commands | commands queued or in flight, sampled after each flush |
//! | `circumflex_session_commands_total` | counter | `backend`, `op` | commands | commands sent in batches, by operation (`get`, `set`, `incr`, ... see below) |
//! | `circumflex_session_errors_total` | counter | `backend`, `kind` | commands | commands that failed: `overloaded`, `timeout`, `unavailable`, `server`, `store_full` |
//! | `circumflex_session_round_trips_total` | counter | `backend` | pipelines | pipelines sent to Redis (resends included; 0 for memory) |
//! | `circumflex_session_redis_commands_total` | counter | `backend` | commands | Redis commands in those pipelines, after fusion |
//! | `circumflex_session_redirects_total` | counter | `backend` | commands | commands a cluster node redirected (`MOVED`, `ASK`) |
//! | `circumflex_session_sessions_created_total` | counter | `backend` | sessions | sessions stored by their first write |
//! | `circumflex_session_sessions_renewed_total` | counter | `backend` | sessions | sessions moved to a new id by `renew` |
//! | `circumflex_session_sessions_bound_total` | counter | `backend` | sessions | sessions logged in as a user (`bind_user`) |
//! | `circumflex_session_sessions_invalidated_total` | counter | `backend` | sessions | sessions logged out (`invalidate`) |
//! | `circumflex_session_sessions_revoked_total` | counter | `backend` | sessions | sessions revoked (`revoke`, `logout_everywhere`, the per-user cap) |
//! | `circumflex_session_sessions_gone_total` | counter | `backend` | sessions | verified cookies whose session the store no longer had |
//!
//! `backend` is `redis`, `redis-cluster` or `memory`. `op` is one of `get` (also `mget`),
//! `entries`, `set`, `remove`, `incr`, `set_if_absent`, `invalidate`, `touch`, `renew`,
//! `compare_and_set`, `set_tti`, `bind`, `sessions_of`, `revoke`, `revoke_all`. The counters
//! are the engine's [`StatsSnapshot`](crate::StatsSnapshot), as a recorder sees them:
//! `batch_size` counts the `pipelines` and sums the `commands`, `commands_total` sums to
//! `commands`, and the `errors_total` kinds are the `errors_*` fields. Admin calls on
//! [`SessionEngine`](crate::SessionEngine) (`sessions_of`, `revoke`, `revoke_all`) are not
//! batched: they count in round trips and Redis commands only, as in the stats. The session
//! counters count whether or not an [`on_event`](crate::SessionEngine::on_event) listener is
//! set.
//!
//! # Install the recorder before building the engine
//! The engine registers its metrics once, when it is built (`SessionEngine::new` and friends,
//! or `SessionMiddleware::new` with a backend), and keeps the handles: a flush then costs an
//! atomic add per metric it touches instead of a lookup in the recorder's registry, and the
//! `metrics` crate is not called per command at all (the commands of a batch are counted in a
//! local array and reported once per operation). The price: a recorder installed after the
//! engine was built sees none of its metrics.
//!
//! ```
//! use circumflex_session::{MemoryBackend, SessionEngine};
//! use metrics_exporter_prometheus::PrometheusBuilder;
//!
//! // First the recorder (here one local to this thread, as a test would: an application
//! // calls `install_recorder()` and serves `handle.render()`), then the engine.
//! let recorder = PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! let engine = metrics::with_local_recorder(&recorder, || SessionEngine::new(MemoryBackend::new()));
//! assert!(handle
//!     .render()
//!     .contains(r#"circumflex_session_commands_total{backend="memory",op="get"} 0"#));
//! # let _ = engine;
//! ```

use crate::actor::message::Command;

pub(crate) use imp::{register, EngineMetrics, SessionMetrics};

/// Commands that failed, by kind: what a batch, or a caller refused or answered late, adds
/// to `circumflex_session_errors_total` and to the engine's `errors_*` stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Failures {
    pub(crate) overloaded: u64,
    pub(crate) timeout: u64,
    pub(crate) unavailable: u64,
    pub(crate) server: u64,
    pub(crate) store_full: u64,
}

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Instant;

    use ::metrics::{
        counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
        Gauge, Histogram, Unit,
    };

    use super::{Command, Failures};
    use crate::actor::message::Op;

    const PREFIX: &str = "circumflex_session_";
    const BATCH_SIZE: &str = "circumflex_session_batch_size";
    const FLUSH_DURATION: &str = "circumflex_session_flush_duration_seconds";
    const QUEUE_DEPTH: &str = "circumflex_session_queue_depth";
    const COMMANDS: &str = "circumflex_session_commands_total";
    const ERRORS: &str = "circumflex_session_errors_total";
    const ROUND_TRIPS: &str = "circumflex_session_round_trips_total";
    const REDIS_COMMANDS: &str = "circumflex_session_redis_commands_total";
    const REDIRECTS: &str = "circumflex_session_redirects_total";

    /// The `op` label of each operation, in the order of [`op_index`].
    const OPS: [&str; 15] = [
        "get",
        "entries",
        "set",
        "remove",
        "incr",
        "set_if_absent",
        "invalidate",
        "touch",
        "renew",
        "compare_and_set",
        "set_tti",
        "bind",
        "sessions_of",
        "revoke",
        "revoke_all",
    ];

    /// Where an operation's counter is in [`OPS`].
    fn op_index(op: &Op) -> usize {
        match op {
            Op::Get(_) => 0,
            Op::Entries => 1,
            Op::Set(..) => 2,
            Op::Remove(_) => 3,
            Op::Incr(..) => 4,
            Op::SetIfAbsent(..) => 5,
            Op::Invalidate => 6,
            Op::Touch => 7,
            Op::Renew { .. } => 8,
            Op::CompareAndSet(..) => 9,
            Op::SetTti { .. } => 10,
            Op::Bind(_) => 11,
            Op::SessionsOf { .. } => 12,
            Op::Revoke { .. } => 13,
            Op::RevokeAll { .. } => 14,
        }
    }

    /// The engine's handles: registered once, with the recorder installed then.
    #[derive(Debug)]
    pub(crate) struct EngineMetrics {
        batch_size: Histogram,
        flush_duration: Histogram,
        queue_depth: Gauge,
        commands: [Counter; OPS.len()],
        overloaded: Counter,
        timeout: Counter,
        unavailable: Counter,
        server: Counter,
        store_full: Counter,
        round_trips: Counter,
        redis_commands: Counter,
        redirects: Counter,
    }

    /// The session lifecycle counters, `circumflex_session_sessions_<event>_total`, kept with
    /// the engine's event hooks.
    #[derive(Debug, Clone)]
    pub(crate) struct SessionMetrics {
        created: Counter,
        renewed: Counter,
        bound: Counter,
        invalidated: Counter,
        revoked: Counter,
        gone: Counter,
    }

    /// When a batch left: for its flush duration.
    pub(crate) struct Flush(Instant);

    /// Describes the metrics to the current recorder and registers the engine's handles, all
    /// labelled with `backend`.
    pub(crate) fn register(backend: &'static str) -> (EngineMetrics, SessionMetrics) {
        describe_histogram!(
            BATCH_SIZE,
            Unit::Count,
            "Commands per batch sent to the backend"
        );
        describe_histogram!(
            FLUSH_DURATION,
            Unit::Seconds,
            "Time from a batch leaving the actor to its answer (or its deadline)"
        );
        describe_gauge!(
            QUEUE_DEPTH,
            Unit::Count,
            "Commands queued or in flight, sampled after each flush"
        );
        describe_counter!(
            COMMANDS,
            Unit::Count,
            "Session commands sent in batches, by operation"
        );
        describe_counter!(ERRORS, Unit::Count, "Session commands that failed, by kind");
        describe_counter!(ROUND_TRIPS, Unit::Count, "Pipelines sent to Redis");
        describe_counter!(
            REDIS_COMMANDS,
            Unit::Count,
            "Redis commands sent, after fusion"
        );
        describe_counter!(REDIRECTS, Unit::Count, "Commands a cluster node redirected");
        let error = |kind: &'static str| counter!(ERRORS, "backend" => backend, "kind" => kind);
        let engine = EngineMetrics {
            batch_size: histogram!(BATCH_SIZE, "backend" => backend),
            flush_duration: histogram!(FLUSH_DURATION, "backend" => backend),
            queue_depth: gauge!(QUEUE_DEPTH, "backend" => backend),
            commands: OPS.map(|op| counter!(COMMANDS, "backend" => backend, "op" => op)),
            overloaded: error("overloaded"),
            timeout: error("timeout"),
            unavailable: error("unavailable"),
            server: error("server"),
            store_full: error("store_full"),
            round_trips: counter!(ROUND_TRIPS, "backend" => backend),
            redis_commands: counter!(REDIS_COMMANDS, "backend" => backend),
            redirects: counter!(REDIRECTS, "backend" => backend),
        };
        let session = |event: &str, description: &'static str| {
            // Registered once per engine: the name's allocation is not on any request's path.
            let name = format!("{PREFIX}sessions_{event}_total");
            describe_counter!(name.clone(), Unit::Count, description);
            counter!(name, "backend" => backend)
        };
        let sessions = SessionMetrics {
            created: session("created", "Sessions stored by their first write"),
            renewed: session("renewed", "Sessions moved to a new id by renew"),
            bound: session("bound", "Sessions logged in as a user"),
            invalidated: session("invalidated", "Sessions logged out"),
            revoked: session(
                "revoked",
                "Sessions revoked, by an admin call, logout_everywhere or the per-user cap",
            ),
            gone: session(
                "gone",
                "Verified cookies whose session the store no longer had",
            ),
        };
        (engine, sessions)
    }

    impl Default for EngineMetrics {
        /// Handles that record nothing: the engine's stats outside an engine (unit tests).
        fn default() -> Self {
            Self {
                batch_size: Histogram::noop(),
                flush_duration: Histogram::noop(),
                queue_depth: Gauge::noop(),
                commands: std::array::from_fn(|_| Counter::noop()),
                overloaded: Counter::noop(),
                timeout: Counter::noop(),
                unavailable: Counter::noop(),
                server: Counter::noop(),
                store_full: Counter::noop(),
                round_trips: Counter::noop(),
                redis_commands: Counter::noop(),
                redirects: Counter::noop(),
            }
        }
    }

    impl Default for SessionMetrics {
        fn default() -> Self {
            Self {
                created: Counter::noop(),
                renewed: Counter::noop(),
                bound: Counter::noop(),
                invalidated: Counter::noop(),
                revoked: Counter::noop(),
                gone: Counter::noop(),
            }
        }
    }

    impl EngineMetrics {
        /// A batch leaves: its size, and its commands by operation, one add per operation.
        pub(crate) fn batch(&self, commands: &[Command]) -> Flush {
            self.batch_size.record(commands.len() as f64);
            let mut counts = [0u64; OPS.len()];
            for command in commands {
                counts[op_index(&command.op)] += 1;
            }
            for (counter, n) in self.commands.iter().zip(counts) {
                if n > 0 {
                    counter.increment(n);
                }
            }
            Flush(Instant::now())
        }

        /// The batch that left at `flush` was answered, or timed out.
        pub(crate) fn flushed(&self, flush: Flush) {
            self.flush_duration.record(flush.0.elapsed());
        }

        /// What a backend call cost.
        pub(crate) fn backend(&self, round_trips: u64, redis_commands: u64, redirects: u64) {
            for (counter, n) in [
                (&self.round_trips, round_trips),
                (&self.redis_commands, redis_commands),
                (&self.redirects, redirects),
            ] {
                if n > 0 {
                    counter.increment(n);
                }
            }
        }

        pub(crate) fn failed(&self, failures: Failures) {
            for (counter, n) in [
                (&self.overloaded, failures.overloaded),
                (&self.timeout, failures.timeout),
                (&self.unavailable, failures.unavailable),
                (&self.server, failures.server),
                (&self.store_full, failures.store_full),
            ] {
                if n > 0 {
                    counter.increment(n);
                }
            }
        }

        pub(crate) fn queue_depth(&self, depth: usize) {
            self.queue_depth.set(depth as f64);
        }
    }

    impl SessionMetrics {
        pub(crate) fn created(&self, n: u64) {
            self.created.increment(n);
        }
        pub(crate) fn renewed(&self, n: u64) {
            self.renewed.increment(n);
        }
        pub(crate) fn bound(&self, n: u64) {
            self.bound.increment(n);
        }
        pub(crate) fn invalidated(&self, n: u64) {
            self.invalidated.increment(n);
        }
        pub(crate) fn revoked(&self, n: u64) {
            self.revoked.increment(n);
        }
        pub(crate) fn gone(&self, n: u64) {
            self.gone.increment(n);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_operation_has_a_label_of_its_own() {
            let mut seen = OPS.to_vec();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), OPS.len(), "no label twice");
            assert_eq!(
                op_index(&Op::RevokeAll {
                    user: "u".into(),
                    keep: None,
                    limit: 1
                }),
                OPS.len() - 1
            );
        }
    }
}

/// Without the feature: the same calls, empty, so that call sites need no `#[cfg]`.
#[cfg(not(feature = "metrics"))]
mod imp {
    use super::{Command, Failures};

    #[derive(Debug, Default)]
    pub(crate) struct EngineMetrics;

    #[derive(Debug, Default, Clone)]
    pub(crate) struct SessionMetrics;

    pub(crate) struct Flush;

    #[inline]
    pub(crate) fn register(_backend: &'static str) -> (EngineMetrics, SessionMetrics) {
        (EngineMetrics, SessionMetrics)
    }

    impl EngineMetrics {
        #[inline]
        pub(crate) fn batch(&self, _commands: &[Command]) -> Flush {
            Flush
        }
        #[inline]
        pub(crate) fn flushed(&self, _flush: Flush) {}
        #[inline]
        pub(crate) fn backend(&self, _round_trips: u64, _redis_commands: u64, _redirects: u64) {}
        #[inline]
        pub(crate) fn failed(&self, _failures: Failures) {}
        #[inline]
        pub(crate) fn queue_depth(&self, _depth: usize) {}
    }

    impl SessionMetrics {
        #[inline]
        pub(crate) fn created(&self, _n: u64) {}
        #[inline]
        pub(crate) fn renewed(&self, _n: u64) {}
        #[inline]
        pub(crate) fn bound(&self, _n: u64) {}
        #[inline]
        pub(crate) fn invalidated(&self, _n: u64) {}
        #[inline]
        pub(crate) fn revoked(&self, _n: u64) {}
        #[inline]
        pub(crate) fn gone(&self, _n: u64) {}
    }
}
