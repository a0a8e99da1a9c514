//! What every session of one worker shares.

use std::sync::Arc;

use super::policy::{Policy, RefreshLimiter};
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
