//! The handle requests use to reach their worker's actor: tower's `Buffer`, on actix-web's
//! runtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::message::{Command, Reply};
use super::reply::{self, Envelope, Responder, SlotHolder};
use crate::clock;
use crate::error::Error;
use crate::metrics::Failures;
use crate::stats::{DepthGuard, Stats, StatsSnapshot};

/// A cloneable way into one `SessionActor`: everything a command needs on its way in (the
/// queue bound, the deadline, the counters) and the actor's queue.
#[derive(Clone)]
pub struct Handle {
    actor: mpsc::UnboundedSender<Envelope>,
    stats: Arc<Stats>,
    queue_depth: usize,
    deadline: Duration,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    pub(crate) fn new(
        actor: mpsc::UnboundedSender<Envelope>,
        stats: Arc<Stats>,
        queue_depth: usize,
        deadline: Duration,
    ) -> Self {
        Self {
            actor,
            stats,
            queue_depth,
            deadline,
        }
    }

    /// A copy of the counters of the engine this handle's actor belongs to.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Sends one command and waits for its reply, within the deadline.
    ///
    /// Fails at once with [`Error::Overloaded`] when the engine's queue is full, with
    /// [`Error::Timeout`] past the deadline, and with [`Error::ActorClosed`] if the actor
    /// stopped. It does not check keys or value sizes: [`AsyncSession`](crate::AsyncSession)
    /// does that before it calls.
    pub async fn call(&self, command: Command) -> Result<Reply, Error> {
        let depth =
            DepthGuard::acquire(&self.stats, self.queue_depth).map_err(Error::Overloaded)?;
        self.by_channel(command, depth).await
    }

    /// [`call`](Self::call), answered in `holder`'s reply slot when it is free (see `reply`),
    /// which spares the command its oneshot channel.
    pub(crate) async fn call_in(
        &self,
        command: Command,
        holder: &Arc<dyn SlotHolder>,
    ) -> Result<Reply, Error> {
        let depth =
            DepthGuard::acquire(&self.stats, self.queue_depth).map_err(Error::Overloaded)?;
        let Some((reply, answer)) = reply::borrow(holder) else {
            return self.by_channel(command, depth).await;
        };
        self.send(command, reply, depth);
        self.counted(answer.await)
    }

    async fn by_channel(&self, command: Command, depth: DepthGuard) -> Result<Reply, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(command, Responder::Channel(reply), depth);
        self.counted(answer.await.unwrap_or(Err(Error::ActorClosed)))
    }

    fn send(&self, command: Command, reply: Responder, depth: DepthGuard) {
        // A stopped actor drops the envelope, and with it the reply's sender: `ActorClosed`.
        let _ = self.actor.send(Envelope {
            command,
            reply,
            deadline: clock::now() + self.deadline,
            span: tracing::Span::current(),
            depth,
        });
        // No timer here: the actor answers every command by its deadline (see `actor`).
    }

    fn counted(&self, result: Result<Reply, Error>) -> Result<Reply, Error> {
        if let Err(Error::Timeout(_)) = result {
            self.stats.failed(Failures {
                timeout: 1,
                ..Failures::default()
            });
        }
        result
    }
}
