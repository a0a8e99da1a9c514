//! What travels to the actor with a command ([`Envelope`]), and where the actor answers it: a
//! oneshot channel, or a reply slot that a session keeps for its whole request and reuses for
//! each of its commands.
//!
//! A oneshot channel is one heap allocation per command. A request's session sends its
//! commands one after another (each awaited before the next), so one slot that lives in the
//! session, and is borrowed by one command at a time, answers them all without allocating. A
//! command sent while the slot is taken (two calls of one session joined) gets a channel, as
//! does every command that no session sends.
//!
//! The slot keeps the promises of the channel it replaces: the actor sees when the caller has
//! left (`is_closed`), a reply to a caller that left is dropped, and an actor that drops a
//! command without answering it answers `ActorClosed`. Each borrowing gets a sequence number,
//! so that a reply meant for a caller that left never reaches the next command that borrows
//! the slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use super::message::{Command, Reply};
use crate::error::Error;

type Outcome = Result<Reply, Error>;

/// A command and where its reply goes: the tower-buffer shape.
pub(crate) struct Envelope {
    pub(crate) command: Command,
    pub(crate) reply: Responder,
    /// When the caller's deadline passes.
    pub(crate) deadline: crate::clock::Instant,
    /// The caller's span, so that the batch that runs the command can be traced back to it.
    pub(crate) span: tracing::Span,
    /// Counts the command in the engine's queue depth until answered or dropped.
    pub(crate) depth: crate::stats::DepthGuard,
}

/// Something that holds a reply slot and can be shared with the actor (a session).
pub(crate) trait SlotHolder: Send + Sync + 'static {
    /// The holder's slot.
    fn slot(&self) -> &Slot;
}

/// A reply slot: at most one command's reply at a time.
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The number of the latest borrowing.
    seq: u64,
    phase: Phase,
}

#[derive(Default)]
enum Phase {
    /// Free to borrow.
    #[default]
    Idle,
    /// Borrowed by command `seq`, whose caller waits.
    Waiting(Option<Waker>),
    /// Command `seq` was answered; its caller has not taken the answer yet.
    Ready(Outcome),
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code below panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Borrows the slot for one command: its sequence number, or `None` if it is taken.
    fn borrow(&self) -> Option<u64> {
        let mut state = self.lock();
        if !matches!(state.phase, Phase::Idle) {
            return None;
        }
        state.seq = state.seq.wrapping_add(1);
        state.phase = Phase::Waiting(None);
        Some(state.seq)
    }
}

/// The actor's end: where it sends a command's reply.
pub(crate) enum Responder {
    Channel(oneshot::Sender<Outcome>),
    Slot(SlotSender),
}

impl Responder {
    /// Whether the caller has left, so the command need not run.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Responder::Channel(sender) => sender.is_closed(),
            Responder::Slot(sender) => sender.is_closed(),
        }
    }

    /// Answers the caller; a caller that left gets nothing.
    pub(crate) fn send(self, outcome: Outcome) {
        match self {
            Responder::Channel(sender) => {
                let _ = sender.send(outcome);
            }
            Responder::Slot(mut sender) => sender.answer(outcome),
        }
    }
}

/// The actor's end of a borrowed slot.
pub(crate) struct SlotSender {
    holder: Arc<dyn SlotHolder>,
    seq: u64,
    answered: bool,
}

impl SlotSender {
    fn is_closed(&self) -> bool {
        let state = self.holder.slot().lock();
        state.seq != self.seq || matches!(state.phase, Phase::Idle)
    }

    fn answer(&mut self, outcome: Outcome) {
        self.answered = true;
        let waker = {
            let mut state = self.holder.slot().lock();
            if state.seq != self.seq {
                return;
            }
            match std::mem::replace(&mut state.phase, Phase::Ready(outcome)) {
                Phase::Waiting(waker) => waker,
                // The caller left (`Idle`), or was answered already: put that back.
                other => {
                    state.phase = other;
                    return;
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for SlotSender {
    fn drop(&mut self) {
        if !self.answered {
            // Dropped unanswered (the actor stopped): what a dropped channel tells its caller.
            self.answer(Err(Error::ActorClosed));
        }
    }
}

/// The caller's end of a borrowed slot; leaving (dropping it) frees the slot.
pub(crate) struct SlotAnswer<'a> {
    slot: &'a Slot,
    seq: u64,
    done: bool,
}

/// Borrows `holder`'s slot for one command: the actor's end and the caller's, or `None` when
/// the slot is taken (the caller then uses a channel).
pub(crate) fn borrow(holder: &Arc<dyn SlotHolder>) -> Option<(Responder, SlotAnswer<'_>)> {
    let slot = holder.slot();
    let seq = slot.borrow()?;
    let sender = SlotSender {
        holder: holder.clone(),
        seq,
        answered: false,
    };
    let answer = SlotAnswer {
        slot,
        seq,
        done: false,
    };
    Some((Responder::Slot(sender), answer))
}

impl Future for SlotAnswer<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut state = self.slot.lock();
        if state.seq != self.seq {
            // Unreachable: the slot stays borrowed until this end is done with it.
            drop(state);
            self.done = true;
            return Poll::Ready(Err(Error::ActorClosed));
        }
        match &mut state.phase {
            Phase::Waiting(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            phase => {
                let outcome = match std::mem::take(phase) {
                    Phase::Ready(outcome) => outcome,
                    _ => Err(Error::ActorClosed),
                };
                drop(state);
                self.done = true;
                Poll::Ready(outcome)
            }
        }
    }
}

impl Drop for SlotAnswer<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.slot.lock();
        if state.seq == self.seq {
            // The caller left: the command is skipped if still queued, its reply dropped if not.
            state.phase = Phase::Idle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[derive(Default)]
    struct Holder(Slot);

    impl SlotHolder for Holder {
        fn slot(&self) -> &Slot {
            &self.0
        }
    }

    fn holder() -> Arc<dyn SlotHolder> {
        Arc::new(Holder::default())
    }

    #[test]
    fn a_slot_answers_one_command_after_another() {
        let holder = holder();
        for n in 0..3 {
            let (responder, mut answer) = borrow(&holder).expect("the slot is free");
            assert!(!responder.is_closed());
            assert!((&mut answer).now_or_never().is_none(), "not answered yet");
            responder.send(Ok(Reply::Int(n)));
            assert!(matches!(answer.now_or_never(), Some(Ok(Reply::Int(m))) if m == n));
        }
    }

    #[test]
    fn a_borrowed_slot_is_not_lent_twice() {
        let holder = holder();
        let (responder, answer) = borrow(&holder).expect("the slot is free");
        assert!(
            borrow(&holder).is_none(),
            "taken: the second caller uses a channel"
        );
        responder.send(Ok(Reply::Done));
        assert!(matches!(answer.now_or_never(), Some(Ok(Reply::Done))));
        assert!(borrow(&holder).is_some(), "free again once answered");
    }

    #[test]
    fn a_caller_that_left_frees_the_slot_and_its_late_reply_reaches_nobody() {
        let holder = holder();
        let (late, answer) = borrow(&holder).expect("the slot is free");
        drop(answer);
        assert!(late.is_closed(), "the actor sees the caller left");
        let (responder, next) = borrow(&holder).expect("freed by the caller that left");
        late.send(Ok(Reply::Int(1)));
        assert!(!responder.is_closed());
        responder.send(Ok(Reply::Int(2)));
        assert!(matches!(next.now_or_never(), Some(Ok(Reply::Int(2)))));
    }

    #[test]
    fn a_command_dropped_unanswered_answers_actor_closed() {
        let holder = holder();
        let (responder, answer) = borrow(&holder).expect("the slot is free");
        drop(responder);
        assert!(matches!(
            answer.now_or_never(),
            Some(Err(Error::ActorClosed))
        ));
        assert!(borrow(&holder).is_some());
    }
}
