//! Storage backends behind one small, sealed trait.
//!
//! A backend runs one batch of commands and answers each in order. The actor owns queueing,
//! batching and deadlines; a backend owns how a batch becomes round trips (a Redis pipeline,
//! a pipeline per cluster primary, a map under a lock).
//!
//! # Why the trait is sealed
//! [`Backend`] names the store a [`SessionEngine`](crate::SessionEngine) runs on, and only this
//! crate implements it. Its commands are the private protocol between the actor and the
//! stores: every feature adds to them (the per-user index did), and each backend must keep
//! subtle promises that our differential tests check against a real Redis (a write to an
//! expired session never resurrects it, size limits hold atomically, a batch keeps its order).
//! Opening the trait would freeze that protocol at 0.1 and make every new command a breaking
//! change. To put sessions somewhere else, open an issue; to use another session store with
//! actix-web, actix-session's `SessionStore` is the open interface.

use futures::future::BoxFuture;

use crate::actor::message::{Command, Reply};
use crate::error::Error;
use crate::stats::Tally;

pub mod memory;
pub mod redis;

/// Per-command outcomes of one batch, in the batch's order.
pub(crate) type BatchReplies = Vec<Result<Reply, Error>>;

mod sealed {
    /// Implemented only in this crate: see the module docs.
    pub trait Sealed {}
}

impl sealed::Sealed for memory::MemoryBackend {}
impl sealed::Sealed for redis::RedisBackend {}

/// A session store: [`RedisBackend`](redis::RedisBackend) or
/// [`MemoryBackend`](memory::MemoryBackend). Sealed: see the module docs for why.
pub trait Backend: sealed::Sealed + Send + Sync + 'static {
    /// Runs a batch, pushing exactly one reply per command, in order, onto `replies` (which the
    /// caller passes empty, and keeps from one batch to the next so that a batch allocates no
    /// reply vector of its own). `Err` only when the whole batch failed (connection lost, pool
    /// timeout): every caller of the batch then gets that error, and `replies` is to be
    /// ignored. An error that concerns one command (for example `WRONGTYPE`) goes in that
    /// command's slot, and the others succeed. What the batch cost (round trips, Redis
    /// commands) goes in `tally`.
    #[doc(hidden)]
    fn execute<'a>(
        &'a self,
        batch: &'a [Command],
        replies: &'a mut BatchReplies,
        tally: &'a Tally,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The prefix of session keys: a session is stored under `<prefix>:{<tag>}:<id>`.
    #[doc(hidden)]
    fn key_prefix(&self) -> &str;

    /// A short name for logs ("redis", "memory").
    #[doc(hidden)]
    fn name(&self) -> &'static str;
}

#[cfg(test)]
pub(crate) mod fake {
    //! Backends for the actor's unit tests.
    use super::*;

    /// A backend that never answers, like a Redis that hangs.
    pub(crate) struct Hung;

    /// A backend that answers every command with `Done`.
    pub(crate) struct Immediate;

    impl sealed::Sealed for Hung {}
    impl sealed::Sealed for Immediate {}

    impl Backend for Hung {
        fn execute<'a>(
            &'a self,
            _batch: &'a [Command],
            _replies: &'a mut BatchReplies,
            _tally: &'a Tally,
        ) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(futures::future::pending())
        }

        fn key_prefix(&self) -> &str {
            "session"
        }

        fn name(&self) -> &'static str {
            "hung"
        }
    }

    impl Backend for Immediate {
        fn execute<'a>(
            &'a self,
            batch: &'a [Command],
            replies: &'a mut BatchReplies,
            _tally: &'a Tally,
        ) -> BoxFuture<'a, Result<(), Error>> {
            replies.extend(batch.iter().map(|_| Ok(Reply::Done)));
            Box::pin(futures::future::ready(Ok(())))
        }

        fn key_prefix(&self) -> &str {
            "session"
        }

        fn name(&self) -> &'static str {
            "immediate"
        }
    }
}
