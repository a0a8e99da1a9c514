//! The handle's user methods: log in as a user, list and revoke the user's sessions, and
//! remember-me.

use std::sync::Arc;
use std::time::Duration;

use super::{unexpected, AsyncSession};
use crate::actor::message::{Binding, Op, Reply, META_USER};
use crate::error::Error;
use crate::events::SessionEventKind;
use crate::ticket::Ticket;
use crate::users::{check_label, UserIndex};
use crate::{clock, SessionInfo};

impl AsyncSession {
    /// Logs the session in as `user_id`: moves it to a new id (as [`renew`](Self::renew)
    /// does, against session fixation) and lists it under the user, so that
    /// [`sessions`](Self::sessions), [`SessionEngine::sessions_of`](crate::SessionEngine::sessions_of)
    /// and the revoke calls find it. What the session held before login is kept. If the user
    /// already has `max_sessions_per_user` sessions, the oldest are revoked in the same step.
    ///
    /// Redis: an `HGETALL` of the session before login (if there is one), one `EVALSHA` of the
    /// bind script (`HSET`, `PEXPIRE`, `ZADD` to the user's index, pruning, and the cap), then
    /// the invalidate script on the old id. Three round trips, once per login. On a cluster
    /// the new id has the user's slot tag, so the copy crosses slots: a write to the old id
    /// racing the login is not carried over (as with `renew`, whose racing writes start a new
    /// session).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty user id or one over 256 bytes, and the store's
    /// errors (see [`AsyncSession`]). If the old id could not be deleted, the new session is
    /// in place (its cookie goes out) and the error is returned.
    pub async fn bind_user(&self, user_id: &str) -> Result<(), Error> {
        self.bind_user_labelled(user_id, "").await
    }

    /// [`bind_user`](Self::bind_user), with a label listed with the session (for example the
    /// client's `User-Agent`, at most 256 bytes; empty for none).
    ///
    /// # Errors
    /// As [`bind_user`](Self::bind_user); [`Error::InvalidArgument`] for a label over 256
    /// bytes.
    pub async fn bind_user_labelled(&self, user_id: &str, label: &str) -> Result<(), Error> {
        check_label(label)?;
        let b = &self.inner.binding;
        let index = UserIndex::new(&b.key_prefix, user_id)?;
        let old = self.lock().resolve(b);
        let mut entries = Vec::new();
        if let Some((_, key)) = &old {
            if let Reply::Entries(e) = self.call_other(key.clone(), Op::Entries).await? {
                entries = e;
            }
        }
        let (mut created, tti) = match &old {
            Some((t, _)) => (t.created, t.tti),
            None => (clock::unix_secs(), None),
        };
        let mut ticket = Ticket::for_user(user_id, created, tti);
        let ttl = match b.policy.ttl(&ticket) {
            Some(ttl) => ttl,
            None => {
                // The old session's absolute lifetime ran out during this request: log in
                // afresh, carrying nothing over (a fresh session always has a lifetime left).
                created = clock::unix_secs();
                entries.clear();
                ticket = Ticket::for_user(user_id, created, tti);
                b.policy
                    .capped(created, b.policy.tti(&ticket))
                    .unwrap_or(Duration::from_secs(1))
            }
        };
        let key = b.key_for(&ticket);
        let binding = Binding {
            user: Arc::from(user_id),
            label: label.to_owned(),
            created,
            tti: b.policy.tti(&ticket),
            ttl,
            max_sessions: b.policy.session.max_sessions_per_user.unwrap_or(0),
            entries,
        };
        let reply = self
            .call_other(key.clone(), Op::Bind(Box::new(binding)))
            .await?;
        let id = ticket.id.clone();
        self.lock().renewed(ticket, key, ttl);
        b.events.emit(SessionEventKind::Bound, &id, Some(user_id));
        index.revoked(reply, &b.events)?;
        if let Some((_, old_key)) = old {
            self.call_other(old_key, Op::Invalidate).await?;
        }
        Ok(())
    }

    /// The user this session is bound to, if any.
    ///
    /// Redis: one `HMGET` (fused with other reads of the session), plus the request's TTL
    /// refresh if it is the first use; none for a session that was never bound.
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn user_id(&self) -> Result<Option<String>, Error> {
        let bound = self
            .lock()
            .resolve(&self.inner.binding)
            .is_some_and(|(t, _)| t.bound);
        if !bound {
            return Ok(None);
        }
        match self.read(Op::Get(vec![META_USER.to_owned()])).await? {
            Some(Reply::Values(mut values)) => Ok(values
                .pop()
                .flatten()
                .and_then(|raw| String::from_utf8(raw).ok())),
            Some(other) => Err(unexpected(other)),
            None => Ok(None),
        }
    }

    /// The live sessions of this session's user, most recently used first (at most 1000);
    /// empty when the session is not bound.
    ///
    /// Redis: [`user_id`](Self::user_id), then one `EVALSHA` of the listing script on the
    /// user's index (`ZREVRANGEBYSCORE` and an `HMGET` per session, pruning what expired).
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(Vec::new());
        };
        let index = UserIndex::new(&self.inner.binding.key_prefix, &user)?;
        let list = index.list();
        index.infos(self.call_other(list.key, list.op).await?)
    }

    /// Logs this session's user out everywhere: revokes every other session of the user, and
    /// this one too when `this_one` is true (its cookie is then removed). Answers how many
    /// sessions were revoked, this one included. Nothing happens without a bound session.
    ///
    /// Redis: [`user_id`](Self::user_id), then the revoke script on the user's index (`UNLINK`
    /// and `ZREM` per session, at most 256 per call, called again while some are left).
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn logout_everywhere(&self, this_one: bool) -> Result<u64, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(0);
        };
        let b = &self.inner.binding;
        let index = UserIndex::new(&b.key_prefix, &user)?;
        let own = self.id();
        let keep = if this_one { None } else { own.as_deref() };
        let run = |command: crate::actor::message::Command| b.handle.call(command);
        let revoked = index.revoke_all(keep, run, &b.events).await?;
        if this_one {
            // Revoked with the others: the cookie goes; no second delete is needed.
            self.lock().invalidate(b);
        }
        Ok(revoked)
    }

    /// Gives this session its own time to idle (remember-me), stored with it so that every
    /// later refresh uses it, and pushes its TTL to `tti` now. The session's cookie becomes
    /// persistent, its `Max-Age` following the TTL. Creates the session if there is none.
    ///
    /// Redis: one `EVALSHA` of the write script (`HSET` of the time to idle, `PEXPIRE`, and for
    /// a bound session the index's `ZADD`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a time to idle outside `session.min_tti_secs` to
    /// `session.max_tti_secs` (whole seconds), and the store's errors (see [`AsyncSession`]).
    pub async fn set_tti(&self, tti: Duration) -> Result<(), Error> {
        let config = &self.inner.binding.policy.session;
        let secs = tti.as_secs();
        if secs < config.min_tti_secs || secs > config.max_tti_secs {
            return Err(Error::InvalidArgument(format!(
                "time to idle {secs} s is outside {}..={} s",
                config.min_tti_secs, config.max_tti_secs
            )));
        }
        let tti = Duration::from_secs(secs);
        let policy = &self.inner.binding.policy;
        let created = self
            .lock()
            .resolve(&self.inner.binding)
            .map_or_else(clock::unix_secs, |(t, _)| t.created);
        let ttl = policy.capped(created, tti).unwrap_or(tti);
        self.write(|mode| Op::SetTti { mode, tti, ttl }).await?;
        let current = self.lock().resolve(&self.inner.binding);
        if let Some((_, key)) = current {
            self.lock().tti_set(&key, secs, ttl);
        }
        Ok(())
    }
}
