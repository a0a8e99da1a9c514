//! Storage backends behind one small trait.
//!
//! A backend runs one batch of [`Command`]s and answers each in order. The actor owns queueing,
//! batching and deadlines; a backend owns how a batch becomes round trips (a Redis pipeline,
//! a map under a lock, later a pipeline per cluster slot).

use futures::future::BoxFuture;

use crate::actor::message::{Command, Reply};
use crate::error::Error;
use crate::stats::Stats;

pub mod memory;
pub mod redis;

/// Per-command outcomes of one batch, in the batch's order.
pub type BatchReplies = Vec<Result<Reply, Error>>;

/// A session store.
///
/// `execute` answers `Err` only when the whole batch failed (connection lost, pool timeout):
/// every caller of the batch then gets that error. An error that concerns one command (for
/// example `WRONGTYPE`) goes in that command's slot, and the others succeed.
pub trait Backend: Send + Sync + 'static {
    /// Runs a batch. The reply vector has exactly one entry per command.
    fn execute<'a>(
        &'a self,
        batch: &'a [Command],
        stats: &'a Stats,
    ) -> BoxFuture<'a, Result<BatchReplies, Error>>;

    /// The prefix of session keys: a session is stored under `<prefix>:<id>`.
    fn key_prefix(&self) -> &str;

    /// A short name for logs ("redis", "memory").
    fn name(&self) -> &'static str;
}
