//! What every session of one worker shares, and how a request finds it.

use std::cell::OnceCell;
use std::sync::Arc;

use super::policy::{Policy, RefreshLimiter};
use super::AsyncSession;
use crate::actor::Handle;
use crate::cookie::{CookieCodec, VerifiedCookies};
use crate::events::Events;
use crate::ticket::Ticket;

/// What every session of one worker shares: built once per worker by the middleware, one
/// `Arc` clone per request.
pub(crate) struct Binding {
    pub(crate) handle: Handle,
    /// The store's key prefix: a session is the hash `<prefix>:{<tag>}:<rest of id>`.
    pub(crate) key_prefix: Arc<str>,
    pub(crate) codec: Arc<CookieCodec>,
    pub(crate) policy: Policy,
    pub(crate) refreshes: RefreshLimiter,
    /// When this worker last moved each bound session's index entry (see `state::reindex`).
    pub(crate) index_touches: RefreshLimiter,
    pub(crate) verified: VerifiedCookies,
    /// The engine's lifecycle hooks.
    pub(crate) events: Events,
}

impl Binding {
    /// The store key of a session: `<prefix>:{<tag>}:<rest of id>` (see the `ticket` module).
    pub(crate) fn key_for(&self, ticket: &Ticket) -> Arc<str> {
        ticket.store_key(&self.key_prefix)
    }
}

/// What the middleware leaves in a request's extensions: this worker's binding, and the
/// request's [`AsyncSession`](crate::AsyncSession) once a handler extracted it (one extension
/// for both, so that a request pays for one boxed extension, not two).
pub(crate) struct Bound {
    binding: Arc<Binding>,
    session: OnceCell<AsyncSession>,
}

impl Bound {
    pub(crate) fn new(binding: Arc<Binding>) -> Self {
        Self {
            binding,
            session: OnceCell::new(),
        }
    }

    pub(crate) fn binding(&self) -> &Arc<Binding> {
        &self.binding
    }

    /// The request's session, if a handler extracted it.
    pub(crate) fn session(&self) -> Option<&AsyncSession> {
        self.session.get()
    }

    /// The request's session, made by `make` on the first call.
    pub(crate) fn session_or_init(&self, make: impl FnOnce() -> AsyncSession) -> &AsyncSession {
        self.session.get_or_init(make)
    }
}
