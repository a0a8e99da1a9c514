//! Who a request's session is, and what its response must do with the cookie (or the id
//! header, for a request that came with it): the identity state machine behind
//! [`AsyncSession`](crate::AsyncSession).
//!
//! ```text
//! Unverified(cookie) --first use--> Stored (signature good, lifetime left)
//! Known(verified before)           \-> Anonymous (anything else)
//! Anonymous --first write--> Issued (new id; cookie sent once the store confirms)
//! Stored --renew--> Issued (new id, data moved)      Stored/Issued --store says gone--> Anonymous
//! any --invalidate--> Anonymous (removal cookie if the request carried one)
//! ```
//!
//! Every transition is a method here that runs under the session's lock and never awaits;
//! `AsyncSession` sends the commands in between.

use std::sync::Arc;
use std::time::Duration;

use super::worker::Binding;
use crate::actor::message::WriteMode;
use crate::config::{CookieLifecycle, TtlRefresh};
use crate::cookie::{CookieUpdate, Transport};
use crate::ticket::Ticket;

/// Who the session is, as far as this request knows.
enum Identity {
    /// A cookie came in; its signature has not been checked yet (checked on first use).
    Unverified(String),
    /// A cookie came in that this worker verified before (found in its cache when the session
    /// was extracted, so the raw value was not copied); its lifetime is checked on first use.
    Known(Ticket, Arc<str>),
    /// No session (no cookie, a bad one, or one whose session is gone).
    Anonymous,
    /// From a verified cookie; the store may have expired it since.
    Stored(Ticket, Arc<str>),
    /// Issued in this request (first write or renew); its cookie goes out with the response.
    Issued(Ticket, Arc<str>),
}

/// Why a command may refresh the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Read,
    Write,
    Touch,
}

/// The session value a request came with: its raw text, or what it verified to before.
pub(super) enum Presented {
    Raw(String),
    Known(Ticket, Arc<str>),
}

/// A request's session state.
pub(super) struct State {
    identity: Identity,
    /// Whether the request carried a session value (cookie or id header) at all.
    had_cookie: bool,
    /// How it carried it: the response answers the same way.
    transport: Transport,
    /// The TTL was already refreshed in this request.
    refreshed: bool,
    /// `renew` was called without a session: the session this request creates is a logged-in
    /// one.
    renew_pending: bool,
    cookie: CookieUpdate,
}

/// Where a command goes: the session's key, the refresh it carries, and whether that refresh
/// moves the session's entry in its user's index too (bound, and due: see `take_refresh`).
pub(super) struct Target {
    pub(super) key: Arc<str>,
    pub(super) refresh: Option<Duration>,
    pub(super) reindex: bool,
}

/// A write about to be sent: where, in which mode, with which refresh; and, for a session
/// created by this write, its id and the cookie update to restore if the store never
/// confirms it.
pub(super) struct PendingWrite {
    pub(super) target: Target,
    pub(super) mode: WriteMode,
    pub(super) created: Option<Arc<str>>,
    rollback: Option<CookieUpdate>,
}

/// What `renew` has to do.
pub(super) enum Renewal {
    /// Nothing to move: no session, or its lifetime is over.
    Nothing,
    /// Move the hash from `from` to `to`, giving it `ttl`.
    Move {
        from: Arc<str>,
        to: Arc<str>,
        ticket: Ticket,
        ttl: Duration,
    },
}

/// Whether a refresh of a bound session moves its index entry too: once per
/// [`INDEX_SLACK_PERCENT`] of the TTL per worker, the window by which `lua/index.lua` pads the
/// index's TTL; the refreshes in between are a plain `PEXPIRE`, which keeps a bound session's
/// read as cheap as an unbound one's in Redis.
fn reindex(b: &Binding, ticket: &Ticket, key: &Arc<str>, refresh: Option<Duration>) -> bool {
    match refresh {
        Some(ttl) if ticket.bound => b.index_touches.due(key, ttl),
        _ => false,
    }
}

impl State {
    pub(super) fn new(cookie: Option<Presented>, transport: Transport) -> Self {
        Self {
            had_cookie: cookie.is_some(),
            transport,
            identity: match cookie {
                None => Identity::Anonymous,
                Some(Presented::Raw(raw)) => Identity::Unverified(raw),
                Some(Presented::Known(ticket, key)) => Identity::Known(ticket, key),
            },
            refreshed: false,
            renew_pending: false,
            cookie: CookieUpdate::Keep,
        }
    }

    /// A name for the identity, for `Debug`.
    pub(super) fn kind(&self) -> &'static str {
        match self.identity {
            Identity::Unverified(_) | Identity::Known(..) => "unverified",
            Identity::Anonymous => "anonymous",
            Identity::Stored(..) => "stored",
            Identity::Issued(..) => "issued",
        }
    }

    /// What the response must do with the cookie, and whether it is the cookie or the id
    /// header.
    pub(super) fn cookie(&self) -> (Transport, &CookieUpdate) {
        (self.transport, &self.cookie)
    }

    /// Checks the cookie (once) and returns the current ticket and key, if any.
    pub(super) fn resolve(&mut self, b: &Binding) -> Option<(Ticket, Arc<str>)> {
        if matches!(self.identity, Identity::Unverified(_) | Identity::Known(..)) {
            let verified = match std::mem::replace(&mut self.identity, Identity::Anonymous) {
                Identity::Unverified(raw) => b.verified.verify(&b.codec, &raw, |t| b.key_for(t)),
                Identity::Known(ticket, key) => Some((ticket, key, false)),
                _ => None,
            };
            self.identity = match verified {
                Some((ticket, key, old_key)) => match b.policy.ttl(&ticket) {
                    Some(ttl) => {
                        if old_key {
                            // Verified by a retiring key: re-sign with the current one so the
                            // session survives the old key's removal.
                            self.cookie = CookieUpdate::Set(ticket.clone(), ttl);
                        }
                        Identity::Stored(ticket, key)
                    }
                    // Past its absolute lifetime.
                    None => Identity::Anonymous,
                },
                // Tampered or garbage.
                None => Identity::Anonymous,
            };
        }
        match &self.identity {
            Identity::Stored(t, k) | Identity::Issued(t, k) => Some((t.clone(), k.clone())),
            _ => None,
        }
    }

    /// The refresh a command carries: the first eligible command of the request refreshes,
    /// unless this worker refreshed the session less than `refresh_after_percent` of the time
    /// to idle ago (then the command carries none; an explicit `touch` always refreshes).
    fn take_refresh(
        &mut self,
        b: &Binding,
        ticket: &Ticket,
        key: &Arc<str>,
        purpose: Purpose,
    ) -> Option<Duration> {
        let wanted = purpose != Purpose::Read || b.policy.session.refresh == TtlRefresh::OnUse;
        if self.refreshed || !wanted {
            return None;
        }
        let ttl = b.policy.ttl(ticket)?;
        self.refreshed = true;
        if purpose != Purpose::Touch && !b.refreshes.due(key, ttl) {
            return None;
        }
        if let Identity::Stored(..) = self.identity {
            // A persistent cookie's Max-Age follows the server-side TTL (a session with its own
            // time to idle has a persistent cookie whatever the lifecycle: remember-me). The id
            // header has no Max-Age: its client keeps the value until told otherwise.
            let persistent =
                b.codec.config().lifecycle == CookieLifecycle::Persistent || ticket.tti.is_some();
            let persistent = persistent && self.transport == Transport::Cookie;
            if self.cookie == CookieUpdate::Keep && persistent {
                self.cookie = CookieUpdate::Set(ticket.clone(), ttl);
            }
        }
        Some(ttl)
    }

    /// The current session's key and the refresh a command for `purpose` carries; `None`
    /// without a session.
    pub(super) fn target(&mut self, b: &Binding, purpose: Purpose) -> Option<Target> {
        let (ticket, key) = self.resolve(b)?;
        let refresh = self.take_refresh(b, &ticket, &key, purpose);
        let reindex = reindex(b, &ticket, &key, refresh);
        Some(Target {
            key,
            refresh,
            reindex,
        })
    }

    /// The session behind `key` turned out to be gone: from now on this request has none.
    /// Answers the session's id if a cookie had pointed at it (a "gone" event).
    pub(super) fn forget(&mut self, key: &Arc<str>) -> Option<Arc<str>> {
        let (Identity::Stored(t, k) | Identity::Issued(t, k)) = &self.identity else {
            return None;
        };
        if k != key {
            return None;
        }
        let from_cookie = matches!(self.identity, Identity::Stored(..)).then(|| t.id.clone());
        self.identity = Identity::Anonymous;
        self.refreshed = false;
        if matches!(self.cookie, CookieUpdate::Set(..)) {
            self.cookie = CookieUpdate::Keep;
        }
        from_cookie
    }

    /// Prepares a write, issuing a new session when there is none. `None` when the session's
    /// lifetime ran out during the request: it is then forgotten, and the next attempt issues
    /// a new one.
    pub(super) fn begin_write(&mut self, b: &Binding) -> Option<PendingWrite> {
        let (ticket, key, issued, fresh) = match self.resolve(b) {
            Some((ticket, key)) => {
                let issued = matches!(self.identity, Identity::Issued(..));
                (ticket, key, issued, false)
            }
            None => {
                let ticket = Ticket::generate(self.renew_pending);
                let key = b.key_for(&ticket);
                self.identity = Identity::Issued(ticket.clone(), key.clone());
                self.refreshed = false;
                (ticket, key, true, true)
            }
        };
        let Some(ttl) = b.policy.ttl(&ticket) else {
            self.identity = Identity::Anonymous;
            return None;
        };
        let rollback = fresh.then(|| self.cookie.clone());
        let created = fresh.then(|| ticket.id.clone());
        let mode = if issued {
            self.cookie = CookieUpdate::Set(ticket.clone(), ttl);
            WriteMode::Create {
                created: ticket.created,
                ttl,
            }
        } else {
            WriteMode::Existing
        };
        let refresh = self.take_refresh(b, &ticket, &key, Purpose::Write);
        let reindex = reindex(b, &ticket, &key, refresh);
        Some(PendingWrite {
            target: Target {
                key,
                refresh,
                reindex,
            },
            mode,
            created,
            rollback,
        })
    }

    /// A write failed. If it was to create the session, the store never confirmed the id:
    /// send no cookie naming a session that may not exist.
    pub(super) fn write_failed(&mut self, write: PendingWrite) {
        let Some(previous) = write.rollback else {
            return;
        };
        if matches!(&self.identity, Identity::Issued(_, k) if *k == write.target.key) {
            self.identity = Identity::Anonymous;
            self.refreshed = false;
            self.cookie = previous;
        }
    }

    /// Ends the session for this request; returns the ticket and key to delete, if there was
    /// one.
    pub(super) fn invalidate(&mut self, b: &Binding) -> Option<(Ticket, Arc<str>)> {
        let current = self.resolve(b);
        self.identity = Identity::Anonymous;
        self.refreshed = false;
        self.cookie = if self.had_cookie {
            CookieUpdate::Remove
        } else {
            CookieUpdate::Keep
        };
        current
    }

    /// Prepares a renew: a new id with the old slot tag and creation time, logged in.
    pub(super) fn begin_renew(&mut self, b: &Binding) -> Renewal {
        let Some((old_ticket, from)) = self.resolve(b) else {
            self.renew_pending = true;
            return Renewal::Nothing;
        };
        let ticket = old_ticket.successor();
        let Some(ttl) = b.policy.ttl(&ticket) else {
            self.identity = Identity::Anonymous;
            return Renewal::Nothing;
        };
        let to = b.key_for(&ticket);
        Renewal::Move {
            from,
            to,
            ticket,
            ttl,
        }
    }

    /// The store moved the session: the new id is this request's, and its cookie goes out.
    pub(super) fn renewed(&mut self, ticket: Ticket, key: Arc<str>, ttl: Duration) {
        self.identity = Identity::Issued(ticket.clone(), key);
        self.refreshed = true;
        self.cookie = CookieUpdate::Set(ticket, ttl);
    }

    /// The session to renew was gone: the session this request creates next is a logged-in one.
    pub(super) fn renew_found_nothing(&mut self, from: &Arc<str>) -> Option<Arc<str>> {
        self.renew_pending = true;
        self.forget(from)
    }

    /// The store took the session's own time to idle: later refreshes (and the cookie's
    /// Max-Age) use it.
    pub(super) fn tti_set(&mut self, key: &Arc<str>, tti: u64, ttl: Duration) {
        if let Identity::Stored(t, k) | Identity::Issued(t, k) = &mut self.identity {
            if k == key {
                t.tti = Some(tti);
                self.refreshed = true;
                self.cookie = CookieUpdate::Set(t.clone(), ttl);
            }
        }
    }
}
