//! The actor itself: its queue, when it flushes, and how a batch's replies reach the callers
//! (the why is in the module docs of `actor`).
//!
//! Why this file is long: about 125 of its lines are the actor's unit tests (timeouts,
//! batching, callers that left, the kept batch timer), which need its private parts; the rest
//! is one job, the batch loop and its deadline.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::backend::{Backend, BatchReplies};
use crate::clock::{self, Instant};
use crate::error::Error;
use crate::metrics::Failures;
use crate::stats::{DepthGuard, Stats, Tally};

use super::message::{self, Command};
use super::reply::{Envelope, Responder};

/// Where a command's reply goes, and the queue depth it holds until then.
type Waiter = (Responder, DepthGuard);

/// Collects session commands from many requests and runs them as batches on a backend. One
/// runs on each actix-web worker, started by [`SessionMiddleware`](crate::SessionMiddleware)
/// as a task on the worker's thread; requests reach it through a [`Handle`](super::Handle).
pub(crate) struct SessionActor {
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    max_batch: usize,
    deadline: Duration,
    queue: mpsc::UnboundedReceiver<Envelope>,
    /// The next batch, as its commands arrive. This and the two below are kept between
    /// batches (cleared, with their capacity), so that a batch allocates nothing of its own.
    batch: Vec<Envelope>,
    /// The batch's commands, in order, as the backend takes them.
    commands: Vec<Command>,
    /// Where each command of the batch is answered, in the same order.
    waiters: Vec<Waiter>,
    /// The backend's reply to each command of the batch, in the same order.
    replies: BatchReplies,
    /// The batches' deadline timer, kept armed from one batch to the next (see
    /// [`BatchTimer`]).
    timer: BatchTimer,
}

/// One timer for every batch, re-armed only when it must be.
///
/// A fresh timer per batch (`tokio::time::timeout_at`) registers with Tokio's timer wheel each
/// time, and a timer earlier than any other wakes the runtime's driver: two `eventfd` writes
/// and one more `epoll_wait` per batch, which a shared multiplexed connection does not pay
/// (`strace -c` of `ENGINE_PROFILE=actor PROFILE_LEVEL=1 cargo bench --bench engine`;
/// BENCHMARKS.md §10). Deadlines only move forward from batch to batch (every command gets the
/// same allowance when it is queued), so the timer armed for an earlier batch still fires no
/// later than this one's deadline: it is kept, and when it fires early the batch's own
/// deadline is checked and the timer re-armed to it. A batch whose deadline is earlier than
/// the armed one, or a timer that fired while the actor was idle, re-arms it at once.
struct BatchTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Instant,
}

impl BatchTimer {
    fn new() -> Self {
        let now = clock::now();
        BatchTimer {
            sleep: Box::pin(tokio::time::sleep_until(now)),
            armed: now,
        }
    }

    /// Runs `work` until `until`: `None` if the deadline passed first.
    async fn run<F: std::future::Future>(&mut self, until: Instant, work: F) -> Option<F::Output> {
        if self.armed > until || self.armed <= clock::now() {
            self.sleep.as_mut().reset(until);
            self.armed = until;
        }
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                output = &mut work => return Some(output),
                () = &mut self.sleep => {
                    if clock::now() >= until {
                        return None;
                    }
                    // Armed for an earlier batch: wait out this one's own deadline.
                    self.sleep.as_mut().reset(until);
                    self.armed = until;
                }
            }
        }
    }
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("backend", &self.backend.name())
            .field("batch", &self.batch.len())
            .finish()
    }
}

impl SessionActor {
    /// Starts an actor on the current thread's local task set (an actix-web worker's, or the
    /// `actix_web::rt::System`'s) and answers the queue's sending end. A local task, like the
    /// requests it answers: it wakes them within the same pass over the set. (A runtime task
    /// saved one `epoll_wait` per batch in the engine bench, whose callers are not local
    /// tasks, and moved nothing that `scripts/bench.sh` could resolve: BENCHMARKS.md §10.)
    /// The actor stops once every sender is gone; whatever is still queued then is dropped, so
    /// its callers get `ActorClosed`.
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        stats: Arc<Stats>,
        max_batch: usize,
        deadline: Duration,
    ) -> mpsc::UnboundedSender<Envelope> {
        // Unbounded here: the engine's depth counter bounds what may wait (see `Handle::call`).
        let (sender, queue) = mpsc::unbounded_channel();
        let actor = SessionActor {
            backend,
            stats,
            max_batch,
            deadline,
            queue,
            batch: Vec::new(),
            commands: Vec::new(),
            waiters: Vec::new(),
            replies: Vec::new(),
            timer: BatchTimer::new(),
        };
        actix_web::rt::spawn(actor.run());
        sender
    }

    async fn run(mut self) {
        // One batch in flight: while it runs, new commands wait in the queue, and the next
        // batch takes them as soon as it is answered.
        while self.collect().await {
            if !self.batch.is_empty() {
                self.run_batch().await;
            }
        }
    }

    /// Fills the next batch: waits for a command if none is queued, then takes every command
    /// already waiting, up to `max_batch`. Commands whose caller left are dropped, and those
    /// whose deadline passed while they waited are answered now; neither is sent. `false`
    /// once every handle is gone.
    async fn collect(&mut self) -> bool {
        let first = match self.queue.try_recv() {
            Ok(envelope) => envelope,
            Err(mpsc::error::TryRecvError::Empty) => match self.queue.recv().await {
                Some(envelope) => envelope,
                None => return false,
            },
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        };
        let now = clock::now();
        let mut next = Some(first);
        while let Some(envelope) = next {
            if envelope.reply.is_closed() {
                // Nobody to answer.
            } else if envelope.deadline <= now {
                envelope.reply.send(Err(Error::Timeout(self.deadline)));
            } else {
                self.batch.push(envelope);
            }
            if self.batch.len() >= self.max_batch {
                break;
            }
            next = self.queue.try_recv().ok();
        }
        true
    }

    /// Runs the collected batch and answers every caller in it.
    async fn run_batch(&mut self) {
        let Self {
            backend,
            stats,
            deadline,
            batch,
            commands,
            waiters,
            replies,
            timer,
            ..
        } = self;
        let deadline = *deadline;
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
        for envelope in batch.drain(..) {
            span.follows_from(&envelope.span);
            commands.push(envelope.command);
            waiters.push((envelope.reply, envelope.depth));
        }
        stats.record_batch(commands.len());
        let flush = stats.metrics.batch(commands);
        // Counted for this batch alone: other actors add to `stats` at the same time.
        let tally = Tally::default();
        let run = backend.execute(commands, replies, &tally);
        let outcome = timer.run(until, run).instrument(span.clone()).await;
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
        let outcome = outcome.unwrap_or(Err(Error::Timeout(deadline)));
        match outcome {
            Ok(()) => {
                // Counted before any caller is answered, so that a caller that reads the stats
                // after its reply finds its own command counted.
                let mut failures = Failures::default();
                let (mut failed, mut gone) = (0, 0);
                let mut unavailable = None;
                let mut refused_for_memory = None;
                let mut wrote = false;
                for (result, command) in replies.iter().zip(commands.iter()) {
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
                for ((reply, _depth), result) in waiters.drain(..).zip(replies.drain(..)) {
                    reply.send(result);
                }
            }
            Err(error) => {
                if traced {
                    span.record("outcome", error.kind());
                    span.record("failed", waiters.len());
                }
                // Timeouts are counted where callers see them (`Handle::call`).
                if !matches!(error, Error::Timeout(_)) {
                    stats.failed(Failures {
                        unavailable: waiters.len() as u64,
                        ..Failures::default()
                    });
                }
                if stats.outage.start() {
                    tracing::error!(
                        %error,
                        "session store unavailable: session requests get 503 until it recovers"
                    );
                } else {
                    tracing::debug!(%error, commands = waiters.len(), "session batch failed");
                }
                for (reply, _depth) in waiters.drain(..) {
                    reply.send(Err(error.clone()));
                }
            }
        }
        // Kept for the next batch, empty. A backend answers one result per command; should one
        // answer fewer, the callers left over are dropped here and get `ActorClosed`. A batch
        // that failed or timed out may have left some replies behind.
        waiters.clear();
        commands.clear();
        replies.clear();
        // Every depth guard of the batch is released: the depth is what waits for the next one.
        stats.sample_queue_depth();
    }
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
            op: Op::Get(["a"].into_iter().collect()),
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
    async fn a_timer_kept_from_an_earlier_batch_neither_cuts_a_later_one_short_nor_outlives_it() {
        // Tokio's timers tick in milliseconds: a batch is cut within one of its deadline.
        let assert_cut_at = |deadline: Instant| {
            let late = clock::now() - deadline;
            assert!(
                late < Duration::from_millis(2),
                "cut {late:?} after its deadline"
            );
        };
        tokio::time::pause();
        let start = clock::now();
        let mut timer = BatchTimer::new();
        // A first batch arms the timer for its deadline and finishes at once.
        let first = start + Duration::from_millis(100);
        assert_eq!(timer.run(first, async { 1 }).await, Some(1));
        // A later batch with a later deadline outlives the first deadline: the timer fires
        // early, and the batch still gets its own allowance.
        let second = start + Duration::from_millis(300);
        let slow = tokio::time::sleep(Duration::from_millis(200));
        assert_eq!(
            timer
                .run(second, async {
                    slow.await;
                    2
                })
                .await,
            Some(2)
        );
        let took = clock::now() - start;
        assert!(
            took < Duration::from_millis(202),
            "finished when its work did: {took:?}"
        );
        // One that never finishes is cut off at its own deadline, past the armed one.
        let third = start + Duration::from_millis(500);
        let never = futures::future::pending::<()>();
        assert_eq!(timer.run(third, never).await, None);
        assert_cut_at(third);
        // A batch whose deadline is earlier than the one armed (for a batch with a longer
        // allowance, once the timer fired while idle) re-arms it: it is cut at its own.
        let long = clock::now() + Duration::from_millis(1000);
        assert_eq!(timer.run(long, async { 4 }).await, Some(4));
        let short = clock::now() + Duration::from_millis(10);
        let never = futures::future::pending::<()>();
        assert_eq!(timer.run(short, never).await, None);
        assert_cut_at(short);
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
