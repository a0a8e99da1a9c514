//! The `SessionActor`: one queue, batches, pipelines.
//!
//! # Why an actor
//! An on-demand session sends several small commands per request (a read, a write, a TTL
//! refresh). Sent one by one they cost a round trip and a syscall pair each, on both sides.
//! The actor collects the commands of every concurrent request and sends them as one batch
//! (one Redis pipeline), so the cost per command falls as load rises.
//!
//! # When a batch flushes
//! - **Queue drained.** The actor is a task on its worker's thread, asleep on its queue (a
//!   tokio channel). The first command wakes it; by the time it runs, every request the worker
//!   polled meanwhile has queued its commands too, and the actor takes every command already
//!   waiting into the batch before it sends it: no timer, no added latency when idle, and
//!   large batches under load.
//! - **Size cap.** A batch that reaches `max_batch` commands flushes at once.
//! - **One batch in flight.** While a batch runs, new commands accumulate, and the next batch
//!   leaves as soon as it is answered. This is what makes batches grow with load instead of
//!   staying at one command each, and what keeps the order of commands across batches.
//!
//! The actor is a plain task rather than an actix actor: an actix message costs two heap
//! allocations (its envelope and its mailbox node) and every spawned flush one more, where a
//! tokio channel allocates a block per 32 commands and reuses it, and the task keeps its
//! batch vectors from one batch to the next (`examples/alloc_count.rs`). For the same reason a
//! session's commands are answered in a reply slot the session keeps for its request, not in a
//! oneshot channel each (see `reply`).
//!
//! These choices (one batch in flight, `max_batch` 1024, one actor per worker) were made by
//! measurement: four batches in flight, a cap of 16 and one actor shared by all workers were
//! each slower in `scripts/bench.sh` (figures in BENCHMARKS.md), so the first and the last are
//! no longer settings at all.
//!
//! # Callers that left
//! A command whose caller has gone (the request was cancelled, its reply receiver dropped) is
//! not sent: there is nobody to answer, and a write nobody waits for is one the client never
//! learns about anyway.
//!
//! # Tracing and metrics
//! Each command carries its caller's span. A batch runs in a `session_batch` span (at DEBUG:
//! nothing is recorded per request or per batch at INFO) that `follows_from` the span of every
//! command in it, so a slow or failed flush can be traced back to the requests it served. The
//! span carries the backend, the batch's `commands`, and once the backend answered, its
//! `round_trips` (counted for this batch alone: the engine's stats are shared by every actor),
//! its `outcome` (`ok`, or the kind of error that failed the whole batch) and how many commands
//! `failed`. The same flush reports its size, duration and commands by operation to the
//! engine's metrics once per batch, never once per command (see `metrics`).
//!
//! # Failures
//! A per-command server error fails only that command. A batch-wide failure (connection lost,
//! pool timeout) or a batch that exceeds the deadline fails every command in it with that error.
//! Every queued command holds a depth guard, so the queue depth is exact even when an actor
//! stops with work queued; its callers then get `ActorClosed`.
//!
//! # Deadlines without a timer per command
//! Each command carries its deadline. A command still queued when its deadline passes is
//! answered `Timeout` at the next flush, and a batch runs under one timer set to the earliest
//! deadline in it, so every caller is answered by its deadline. Callers themselves arm no
//! timer: one per command cost the actor about a quarter of its throughput in
//! `cargo bench --bench engine` at 512 concurrent commands. The actor keeps its one timer from
//! batch to batch and re-arms it only when it must: registering a fresh one for every batch
//! cost two `eventfd` writes and one `epoll_wait` per batch (see `worker::BatchTimer`).
//!
//! # Order
//! The mailbox is FIFO and a batch keeps arrival order, so commands one request issues one after
//! another run in that order; fusion (see the Redis backend) never moves a read across a write
//! to the same session. With one batch in flight, this holds across batches too.

mod handle;
pub(crate) mod message;
pub(crate) mod reply;
mod worker;

pub use handle::Handle;
pub(crate) use worker::SessionActor;
