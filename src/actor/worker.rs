//! The actor itself: its queue, when it flushes, and how a batch's replies reach the callers
//! (the why is in the module docs of `actor`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tracing::Instrument as _;

use crate::backend::Backend;
use crate::clock::{self, Instant};
use crate::error::Error;
use crate::metrics::Failures;
use crate::stats::{Stats, Tally};

use super::message::{self, Envelope};

/// Collects session commands from many requests and runs them as batches on a backend. One
/// runs on each actix-web worker, started by [`SessionMiddleware`](crate::SessionMiddleware);
/// requests reach it through a [`Handle`].
pub(crate) struct SessionActor {
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    max_batch: usize,
    deadline: Duration,
    pending: Vec<Envelope>,
    flush_scheduled: bool,
    in_flight: bool,
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("backend", &self.backend.name())
            .field("pending", &self.pending.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl SessionActor {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        stats: Arc<Stats>,
        max_batch: usize,
        deadline: Duration,
    ) -> Self {
        Self {
            backend,
            stats,
            max_batch,
            deadline,
            pending: Vec::new(),
            flush_scheduled: false,
            in_flight: false,
        }
    }

    /// Starts the next batch, unless one is in flight or there is no work.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        // Commands whose caller left are dropped, and those whose deadline passed while they
        // waited are answered now; neither is sent.
        let now = clock::now();
        if self
            .pending
            .iter()
            .any(|e| e.deadline <= now || e.reply.is_closed())
        {
            for envelope in std::mem::take(&mut self.pending) {
                if envelope.reply.is_closed() {
                    continue;
                }
                if envelope.deadline <= now {
                    let _ = envelope.reply.send(Err(Error::Timeout(self.deadline)));
                    continue;
                }
                self.pending.push(envelope);
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let batch = if self.pending.len() <= self.max_batch {
            std::mem::take(&mut self.pending)
        } else {
            self.pending.drain(..self.max_batch).collect()
        };
        self.in_flight = true;
        let run = run_batch(
            self.backend.clone(),
            self.stats.clone(),
            batch,
            self.deadline,
        );
        ctx.spawn(run.into_actor(self).map(|(), actor, ctx| {
            actor.in_flight = false;
            actor.flush(ctx);
        }));
    }
}

impl Actor for SessionActor {
    // The queue is bounded by the engine's depth counter, not by actix's mailbox capacity,
    // which `do_send` ignores.
    type Context = Context<Self>;
}

impl Handler<Envelope> for SessionActor {
    type Result = ();

    fn handle(&mut self, envelope: Envelope, ctx: &mut Self::Context) {
        self.pending.push(envelope);
        if self.pending.len() >= self.max_batch {
            self.flush(ctx);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.spawn(actix::fut::ready(()).map(|(), actor: &mut Self, ctx| {
                actor.flush_scheduled = false;
                actor.flush(ctx);
            }));
        }
    }
}

/// Runs one batch and answers every caller in it.
async fn run_batch(
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    batch: Vec<Envelope>,
    deadline: Duration,
) {
    // The batch may run until the earliest deadline among its commands: every caller is
    // answered by its own deadline without a timer per command.
    let until: Instant = batch
        .iter()
        .map(|e| e.deadline)
        .min()
        .unwrap_or_else(|| clock::now() + deadline);
    // At debug, so that nothing is recorded per batch at info. What the flush cost and how it
    // ended are known only once the backend answered.
    let span = tracing::debug_span!(
        "session_batch",
        backend = backend.name(),
        commands = batch.len(),
        round_trips = tracing::field::Empty,
        outcome = tracing::field::Empty,
        failed = tracing::field::Empty,
    );
    for envelope in &batch {
        span.follows_from(&envelope.span);
    }
    let (commands, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|e| (e.command, (e.reply, e.depth)))
        .unzip();
    stats.record_batch(commands.len());
    let flush = stats.metrics.batch(&commands);
    // Counted for this batch alone: other actors add to `stats` at the same time.
    let tally = Tally::default();
    let run = backend.execute(&commands, &tally);
    let outcome = tokio::time::timeout_at(until, run)
        .instrument(span.clone())
        .await;
    stats.metrics.flushed(flush);
    let round_trips = stats.add(&tally);
    // Recording into a span no subscriber wants still costs (about 250 instructions a batch,
    // measured with callgrind through `examples/alloc_count.rs`): skip it.
    let traced = !span.is_disabled();
    if traced {
        span.record("round_trips", round_trips);
    }
    // No await below: what is logged from here on is logged in the batch's span.
    let _in_span = span.enter();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Timeout(deadline)),
    };
    match outcome {
        Ok(results) => {
            // Counted before any caller is answered, so that a caller that reads the stats
            // after its reply finds its own command counted.
            let mut failures = Failures::default();
            let (mut failed, mut gone) = (0, 0);
            let mut unavailable = None;
            let mut refused_for_memory = None;
            let mut wrote = false;
            for (result, command) in results.iter().zip(&commands) {
                match result {
                    Err(Error::Server(_)) | Err(Error::NotAnInteger(_)) => failures.server += 1,
                    Err(error @ Error::Unavailable(_)) => {
                        failures.unavailable += 1;
                        unavailable = Some(error);
                    }
                    Err(error @ Error::StoreFull(_)) => {
                        failures.store_full += 1;
                        refused_for_memory = Some(error);
                    }
                    Ok(message::Reply::Gone) => gone += 1,
                    Ok(_) if command.op.is_write() => wrote = true,
                    _ => {}
                }
                failed += u64::from(result.is_err());
            }
            if traced {
                span.record("outcome", "ok");
                span.record("failed", failed);
            }
            stats.failed(failures);
            if gone > 0 {
                stats.gone.fetch_add(gone, Relaxed);
            }
            // Some commands may find the store unavailable while the rest succeed: a cluster
            // node that is down, or writes that were in flight on a lost connection.
            match unavailable {
                None if stats.partial_outage_quiet() && stats.outage.end() => {
                    tracing::info!("session store reachable again");
                }
                Some(error) => {
                    stats.partial_outage();
                    if stats.outage.start() {
                        tracing::error!(
                            %error,
                            "session store unavailable for some sessions: they get 503 until it \
                             recovers"
                        );
                    }
                }
                _ => {}
            }
            match refused_for_memory {
                Some(error) if stats.out_of_memory.start() => tracing::error!(
                    %error,
                    "Redis is out of memory: session writes are refused (503) until it frees \
                     memory; reads and logouts still work"
                ),
                None if wrote && stats.out_of_memory.end() => {
                    tracing::info!("Redis accepts session writes again");
                }
                _ => {}
            }
            for ((reply, _depth), result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            if traced {
                span.record("outcome", error.kind());
                span.record("failed", replies.len());
            }
            // Timeouts are counted where callers see them (`Handle::call`).
            if !matches!(error, Error::Timeout(_)) {
                stats.failed(Failures {
                    unavailable: replies.len() as u64,
                    ..Failures::default()
                });
            }
            if stats.outage.start() {
                tracing::error!(
                    %error,
                    "session store unavailable: session requests get 503 until it recovers"
                );
            } else {
                tracing::debug!(%error, commands = replies.len(), "session batch failed");
            }
            for (reply, _depth) in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
    // Every depth guard of the batch is released: the depth is what waits for the next one.
    stats.sample_queue_depth();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::message::{Command, Op, Reply};
    use crate::backend::fake::{Hung, Immediate};
    use crate::config::ActorConfig;
    use crate::engine::SessionEngine;
    use futures::future::join_all;

    fn get(key: &str) -> Command {
        Command {
            key: Arc::from(key),
            op: Op::Get(vec!["a".into()]),
            refresh: None,
            limits: Default::default(),
            reindex: false,
        }
    }

    #[actix_web::test]
    async fn callers_in_flight_and_queued_behind_a_hung_batch_all_time_out() {
        tokio::time::pause();
        let config = ActorConfig {
            deadline_ms: 200,
            ..ActorConfig::default()
        };
        let engine = SessionEngine::with_config(Hung, config).unwrap();
        let handle = engine.start();
        // The first call's batch hangs in flight; the second wave queues behind it.
        let first = handle.call(get("session:1"));
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            join_all((0..3).map(|_| handle.call(get("session:2")))).await
        };
        let (first, second) = futures::join!(first, second);
        assert!(matches!(first, Err(Error::Timeout(_))), "{first:?}");
        for result in second {
            assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
        }
        let stats = engine.stats();
        assert_eq!(stats.errors_timeout, 4);
        assert_eq!(stats.queue_depth, 0);
    }

    #[actix_web::test]
    async fn commands_sent_together_leave_as_one_batch_and_a_full_batch_leaves_at_once() {
        let config = ActorConfig {
            max_batch: 4,
            ..ActorConfig::default()
        };
        let engine = SessionEngine::with_config(Immediate, config).unwrap();
        let handle = engine.start();
        let results = join_all((0..10).map(|i| handle.call(get(&format!("session:{i}"))))).await;
        assert!(results.iter().all(|r| matches!(r, Ok(Reply::Done))));
        let stats = engine.stats();
        assert_eq!(stats.commands, 10);
        assert_eq!(stats.max_batch, 4, "the cap holds");
        assert_eq!(stats.pipelines, 3, "4 + 4 + 2");
    }

    #[actix_web::test]
    async fn a_command_whose_caller_left_is_not_sent() {
        let engine = SessionEngine::new(Immediate);
        let handle = engine.start();
        // Polled once, so the command is queued, then dropped before the actor runs.
        let mut left = Box::pin(handle.call(get("session:left")));
        assert!(futures::poll!(left.as_mut()).is_pending());
        drop(left);
        let stayed = handle.call(get("session:stayed")).await;
        assert!(matches!(stayed, Ok(Reply::Done)), "{stayed:?}");
        let stats = engine.stats();
        assert_eq!(stats.commands, 1, "only the command with a caller was sent");
        assert_eq!(stats.queue_depth, 0);
    }
}
