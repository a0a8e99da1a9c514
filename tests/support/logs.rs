//! What the code under test logs, captured per thread for tests that check what is logged
//! (and what never is), and the spans it opens, for tests of its tracing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Installs, once per test binary, the one global subscriber: formatted events into the
/// thread's [`LogCapture`], spans into the thread's [`SpanCapture`]. (Per-thread subscribers,
/// `tracing::subscriber::set_default`, lose events when tests run in parallel: the global
/// interest and level caches are shared.)
fn install() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(ThreadWriter),
            )
            .with(SpanLayer);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global tracing subscriber in the test binary");
    });
}

/// Captures the `tracing` events of the current thread, formatted, for tests that check what
/// is logged (and what never is). One global subscriber writes each event into the buffer of
/// the thread that emitted it: an actix test runs its app, its actor and its Redis connections
/// on its own thread.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Removes the thread's capture when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

impl LogCapture {
    /// Starts capturing this thread's events, at every level, until the guard is dropped.
    pub fn start() -> (Self, CaptureGuard) {
        install();
        let capture = LogCapture::default();
        CAPTURE.with(|c| *c.borrow_mut() = Some(capture.clone()));
        (capture, CaptureGuard)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines logged so far at `level` ("ERROR", "INFO", ...).
    pub fn lines_at(&self, level: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.split_whitespace().nth(1) == Some(level))
            .map(str::to_owned)
            .collect()
    }
}

/// Writes to the capture of the thread it was made on, if any.
struct ThreadWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadWriter {
    type Writer = ThreadBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        ThreadBuffer(CAPTURE.with(|c| c.borrow().clone()))
    }
}

struct ThreadBuffer(Option<LogCapture>);

impl std::io::Write for ThreadBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(capture) = &self.0 {
            capture.0.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One span as the capture saw it: its name, its fields (given at creation or recorded later)
/// and the spans it follows from, as indexes into [`SpanCapture::spans`].
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    pub name: &'static str,
    pub fields: BTreeMap<&'static str, String>,
    pub follows_from: Vec<usize>,
    /// The subscriber's id: reused once the span is closed, so only links made while both
    /// spans were open are resolved through it.
    id: u64,
}

/// Captures the spans opened on the current thread (an actix test's app, actor and Redis
/// connections all run there), until the guard is dropped.
#[derive(Clone, Default)]
pub struct SpanCapture(Arc<Mutex<Vec<CapturedSpan>>>);

thread_local! {
    static SPANS: std::cell::RefCell<Option<SpanCapture>> = const { std::cell::RefCell::new(None) };
}

/// Removes the thread's span capture when dropped.
pub struct SpanGuard;

impl Drop for SpanGuard {
    fn drop(&mut self) {
        SPANS.with(|c| c.borrow_mut().take());
    }
}

impl SpanCapture {
    pub fn start() -> (Self, SpanGuard) {
        install();
        let capture = SpanCapture::default();
        SPANS.with(|c| *c.borrow_mut() = Some(capture.clone()));
        (capture, SpanGuard)
    }

    /// Every span captured so far, in the order they were opened.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.0.lock().unwrap().clone()
    }

    /// Runs `f` on the latest span with this id, if this thread captures spans.
    fn with_span(id: &Id, f: impl FnOnce(&mut Vec<CapturedSpan>, usize)) {
        SPANS.with(|c| {
            if let Some(capture) = &*c.borrow() {
                let mut spans = capture.0.lock().unwrap();
                if let Some(at) = spans.iter().rposition(|s| s.id == id.into_u64()) {
                    f(&mut spans, at);
                }
            }
        });
    }
}

/// Field values as text: strings without their quotes, the rest as `Debug` shows them.
struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// The layer behind [`SpanCapture`].
struct SpanLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        SPANS.with(|c| {
            if let Some(capture) = &*c.borrow() {
                let mut fields = BTreeMap::new();
                attrs.record(&mut Fields(&mut fields));
                capture.0.lock().unwrap().push(CapturedSpan {
                    name: attrs.metadata().name(),
                    fields,
                    follows_from: Vec::new(),
                    id: id.into_u64(),
                });
            }
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        SpanCapture::with_span(id, |spans, at| {
            values.record(&mut Fields(&mut spans[at].fields))
        });
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _ctx: Context<'_, S>) {
        let mut cause = None;
        SpanCapture::with_span(follows, |_, at| cause = Some(at));
        if let Some(cause) = cause {
            SpanCapture::with_span(id, |spans, at| spans[at].follows_from.push(cause));
        }
    }
}
