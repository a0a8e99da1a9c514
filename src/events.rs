//! Session lifecycle hooks: the application's listener is told when a session is created,
//! renewed, bound to a user, logged out, revoked or found gone.
//!
//! A hook must never break or slow a request, so it runs on a thread of its own,
//! `circumflex-session-events`, which takes the events off a bounded queue in order. `emit` only
//! queues: a slow listener delays the events after it, never a request, and falls at most
//! [`QUEUE_CAPACITY`] events behind. Past that, `emit` drops the event rather than wait; a
//! dropped event is counted ([`Events::dropped`]) and logged at most once a second, not retried.
//! A listener that panics is counted ([`Events::panicked`]) and logged, and the thread goes on
//! with the next event. For async work, the listener can hand the event to a Tokio channel.
//!
//! The events are in-process only: the instance that served the request emits them, and a
//! session that idles out in Redis has no event of its own (its cookie, when it comes back,
//! gives [`SessionEventKind::Gone`]). Redis keyspace notifications would report expiry, but
//! need `CONFIG SET`, which managed Redis services often forbid.
//!
//! [`SessionEvent::session_id`] is the id inside the signed cookie: of no use for forging a
//! cookie without the cookie key, but still the identifier of someone's session.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::SessionMetrics;

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionEventKind {
    /// The first write to a session stored it.
    Created,
    /// [`AsyncSession::renew`](crate::AsyncSession::renew) moved the session to a new id.
    Renewed,
    /// The session was logged in as a user, under a new id.
    Bound,
    /// The session was logged out and deleted.
    Invalidated,
    /// The session was deleted by a revocation, or to keep its user under the per-user cap.
    Revoked,
    /// A verified cookie named a session the store no longer has (expired or revoked).
    Gone,
}

/// One lifecycle event, as the listener receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionEvent {
    /// What happened.
    pub kind: SessionEventKind,
    /// The session's id: the one inside the signed cookie (for [`SessionEventKind::Renewed`]
    /// and [`SessionEventKind::Bound`], the new id).
    pub session_id: String,
    /// The user: set for [`SessionEventKind::Bound`] and [`SessionEventKind::Revoked`]
    /// events (the others would need a store read to learn it), `None` for the rest.
    pub user_id: Option<String>,
}

/// The application's hook.
pub(crate) type Listener = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// How many events may wait for the listener. Enough to ride out a listener that stalls for a
/// moment under a burst of logins (an event takes about a hundred bytes with its strings, so a
/// full queue holds about half a MiB); a listener that stays behind longer is broken or too
/// slow for the load, and a longer queue would only turn that into memory growth.
const QUEUE_CAPACITY: usize = 4096;

/// At most one warning about dropped events per this many milliseconds: a stuck listener would
/// otherwise log once per request.
const WARN_EVERY_MS: u64 = 1000;

/// Counts events in the engine's metrics and hands them to the listener's thread. Cloning is
/// cheap; the thread ends when the last clone is dropped. The default counts nowhere and has no
/// listener: `emit` on it does nothing.
#[derive(Clone, Default)]
pub(crate) struct Events {
    inner: Option<Arc<Inner>>,
    metrics: SessionMetrics,
}

struct Inner {
    queue: SyncSender<SessionEvent>,
    counts: Arc<Counts>,
    started: Instant,
    /// Milliseconds after `started` before which no warning about dropped events is logged.
    next_warn_ms: AtomicU64,
}

#[derive(Default)]
struct Counts {
    dropped: AtomicU64,
    panicked: AtomicU64,
}

impl Events {
    /// Events that are counted in `metrics`, with no listener.
    pub(crate) fn counted(metrics: SessionMetrics) -> Self {
        Self {
            inner: None,
            metrics,
        }
    }

    /// The same counters, with `listener` (instead of any before) on a thread of its own.
    pub(crate) fn with_listener(self, listener: Listener) -> Self {
        Self {
            metrics: self.metrics,
            ..Self::new(listener)
        }
    }

    /// Starts the listener's thread.
    fn new(listener: Listener) -> Self {
        let (queue, events) = mpsc::sync_channel(QUEUE_CAPACITY);
        let counts = Arc::new(Counts::default());
        let thread_counts = Arc::clone(&counts);
        let spawned = std::thread::Builder::new()
            .name("circumflex-session-events".to_owned())
            .spawn(move || deliver(&events, &*listener, &thread_counts));
        if let Err(error) = spawned {
            // The receiver is gone with the closure, so every `emit` counts a dropped event.
            tracing::error!(%error, "could not start the session event thread: events are dropped");
        }
        Self {
            inner: Some(Arc::new(Inner {
                queue,
                counts,
                started: Instant::now(),
                next_warn_ms: AtomicU64::new(0),
            })),
            ..Self::default()
        }
    }

    /// Whether a listener is registered.
    pub(crate) fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Counts an event and queues it for the listener, or drops and counts it if the queue is
    /// full. Never waits and never panics; without a listener it returns before allocating
    /// anything.
    pub(crate) fn emit(&self, kind: SessionEventKind, session_id: &str, user_id: Option<&str>) {
        self.count(kind, 1);
        let Some(inner) = &self.inner else { return };
        let event = SessionEvent {
            kind,
            session_id: session_id.to_owned(),
            user_id: user_id.map(str::to_owned),
        };
        let why = match inner.queue.try_send(event) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "the listener is behind",
            Err(TrySendError::Disconnected(_)) => "the event thread is gone",
        };
        let dropped = inner.counts.dropped.fetch_add(1, Relaxed) + 1;
        let now_ms = inner.started.elapsed().as_millis() as u64;
        if warn_is_due(&inner.next_warn_ms, now_ms) {
            tracing::warn!(dropped, "session events dropped: {why}");
        }
    }

    /// Counts `n` events of one kind in the metrics; [`emit`](Self::emit) counts its own.
    /// For events that need no listener's attention (see `UserIndex::revoked`).
    pub(crate) fn count(&self, kind: SessionEventKind, n: u64) {
        let metrics = &self.metrics;
        match kind {
            SessionEventKind::Created => metrics.created(n),
            SessionEventKind::Renewed => metrics.renewed(n),
            SessionEventKind::Bound => metrics.bound(n),
            SessionEventKind::Invalidated => metrics.invalidated(n),
            SessionEventKind::Revoked => metrics.revoked(n),
            SessionEventKind::Gone => metrics.gone(n),
        }
    }

    /// Events dropped so far: the listener was [`QUEUE_CAPACITY`] behind (or its thread gone).
    pub(crate) fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.counts.dropped.load(Relaxed))
    }

    /// Listener calls that panicked so far.
    pub(crate) fn panicked(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.counts.panicked.load(Relaxed))
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("on", &self.is_on())
            .field("dropped", &self.dropped())
            .field("panicked", &self.panicked())
            .finish()
    }
}

/// True if a warning may be logged at `now_ms`, and then none until `WARN_EVERY_MS` later.
/// Of emitters racing past the same deadline, only the one whose swap lands logs.
fn warn_is_due(next_warn_ms: &AtomicU64, now_ms: u64) -> bool {
    let next = next_warn_ms.load(Relaxed);
    now_ms >= next
        && next_warn_ms
            .compare_exchange(next, now_ms + WARN_EVERY_MS, Relaxed, Relaxed)
            .is_ok()
}

/// The thread's loop: one event at a time, in queue order, until every sender is gone.
fn deliver(events: &Receiver<SessionEvent>, listener: &dyn Fn(&SessionEvent), counts: &Counts) {
    for event in events {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| listener(&event))) {
            counts.panicked.fetch_add(1, Relaxed);
            tracing::error!(
                kind = ?event.kind,
                panic = panic_text(&*payload),
                "session event listener panicked; going on with the next event"
            );
        }
    }
}

/// A panic's message, when it has one (`panic!` gives a `&str` or a `String`).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, Once};
    use std::time::Duration;

    use super::*;

    /// "Never" on a loaded CI machine: only a failing test waits this long.
    const HANG: Duration = Duration::from_secs(30);

    #[test]
    fn events_reach_the_listener_in_order_with_their_fields() {
        use SessionEventKind::*;
        let (tx, rx) = mpsc::channel();
        let events = Events::new(Arc::new(move |e: &SessionEvent| {
            tx.send(e.clone()).unwrap()
        }));
        assert!(events.is_on());
        let sent = [
            (Created, "a", None),
            (Bound, "b", Some("al")),
            (Invalidated, "b", Some("al")),
        ];
        let clone = events.clone();
        for (kind, id, user) in sent {
            clone.emit(kind, id, user);
        }
        for (kind, id, user) in sent {
            let got = rx.recv_timeout(HANG).unwrap();
            assert_eq!(
                (got.kind, &*got.session_id, got.user_id.as_deref()),
                (kind, id, user)
            );
        }
        assert_eq!((events.dropped(), events.panicked()), (0, 0));
    }

    #[test]
    fn a_panicking_listener_is_counted_and_later_events_still_arrive() {
        let (tx, rx) = mpsc::channel();
        let events = Events::new(Arc::new(move |e: &SessionEvent| {
            assert_ne!(e.kind, SessionEventKind::Revoked, "listener bug");
            tx.send(e.session_id.clone()).unwrap();
        }));
        events.emit(SessionEventKind::Created, "a", None);
        events.emit(SessionEventKind::Revoked, "b", None);
        events.emit(SessionEventKind::Gone, "c", None);
        assert_eq!(rx.recv_timeout(HANG).unwrap(), "a");
        assert_eq!(rx.recv_timeout(HANG).unwrap(), "c");
        // The thread counted the panic before it took "c", which we have received.
        assert_eq!((events.panicked(), events.dropped()), (1, 0));
    }

    #[test]
    fn a_blocked_listener_makes_emit_drop_events_instead_of_waiting() {
        let barrier = Arc::new(Barrier::new(2));
        let first = Once::new();
        let (tx, rx) = mpsc::channel();
        let listener_barrier = Arc::clone(&barrier);
        let events = Events::new(Arc::new(move |_: &SessionEvent| {
            first.call_once(|| _ = listener_barrier.wait());
            tx.send(()).unwrap();
        }));
        // The listener holds the first event until we meet it at the barrier: these return
        // only because `emit` never waits for room.
        let emitted = 10_001;
        for _ in 0..emitted {
            events.emit(SessionEventKind::Created, "s", None);
        }
        // At most the blocked event left the queue, so at most QUEUE_CAPACITY + 1 were kept.
        let dropped = events.dropped();
        assert!(dropped >= emitted - QUEUE_CAPACITY as u64 - 1, "{dropped}");
        barrier.wait();
        // Dropping the last sender lets the thread drain the queue and end, which drops the
        // listener and with it `tx`, ending the count below.
        drop(events);
        assert_eq!(rx.iter().count() as u64 + dropped, emitted);
    }

    #[test]
    fn emit_without_a_listener_does_nothing() {
        let events = Events::default();
        assert!(!events.is_on());
        events.emit(SessionEventKind::Created, "a", Some("alice"));
        assert_eq!((events.dropped(), events.panicked()), (0, 0));
    }

    #[test]
    fn drop_warnings_are_logged_at_most_once_a_second() {
        let next = AtomicU64::new(0);
        assert!(warn_is_due(&next, 0));
        assert!(!warn_is_due(&next, WARN_EVERY_MS - 1));
        assert!(warn_is_due(&next, WARN_EVERY_MS));
        assert!(!warn_is_due(&next, WARN_EVERY_MS + 500));
        assert!(warn_is_due(&next, 5 * WARN_EVERY_MS));
    }
}
