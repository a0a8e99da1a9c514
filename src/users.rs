//! Sessions by user: what a user's session looks like from outside, and the commands that list
//! and revoke them, shared by [`SessionEngine`](crate::SessionEngine) (admin jobs, CLIs) and
//! [`AsyncSession`](crate::AsyncSession) (self-service).
//!
//! # The index
//! [`bind_user`](crate::AsyncSession::bind_user) gives the session an id with the user's slot
//! tag and lists it in the sorted set `<prefix>:{<tag>}:u:<user id>`, scored by its expiry.
//! The scripts that change a bound session keep the index in step in the same call: a write
//! or touch that refreshes the TTL moves the score, renew moves the member, invalidate and
//! revoke remove it. A session that expires on its own is pruned from the index the next time
//! the index is touched, and the index's own TTL, never earlier than its latest member's
//! expiry, removes it once every session has gone. On a cluster the index and the user's
//! sessions share a slot, so every script stays on one node.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::actor::message::{Command, Limits, Listed, Op, Reply, MEMBER_LEN};
use crate::error::Error;
use crate::events::{Events, SessionEventKind};
use crate::ticket::{is_id, user_tag, ID_LEN, TAG_LEN};

/// Longest user id, in bytes.
pub(crate) const MAX_USER_ID_BYTES: usize = 256;
/// Longest session label, in bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 256;
/// Most sessions [`sessions_of`](crate::SessionEngine::sessions_of) lists: the most recently
/// used. It bounds the listing script, however many sessions a user has.
const LIST_LIMIT: u32 = 1000;
/// Most sessions one revoke script deletes; `revoke_all` calls it again while some are left,
/// so that Redis serves other clients in between.
const REVOKE_CHUNK: u32 = 256;

/// One of a user's live sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session id: what [`AsyncSession::id`](crate::AsyncSession::id) says in that
    /// session, and what [`revoke`](crate::SessionEngine::revoke) takes. It is inside the
    /// session's signed cookie, but is no credential without the cookie key.
    pub id: String,
    /// When the session was created (before login, if it was created then).
    pub created: SystemTime,
    /// When the session was last refreshed: its expiry minus its time to idle (exact unless an
    /// absolute lifetime shortened its last TTL).
    pub last_refresh: SystemTime,
    /// When it expires unless used.
    pub expires: SystemTime,
    /// The label passed to [`bind_user_labelled`](crate::AsyncSession::bind_user_labelled).
    pub label: Option<String>,
}

/// Checks a user id: 1 to 256 bytes.
pub(crate) fn check_user(user: &str) -> Result<(), Error> {
    if user.is_empty() || user.len() > MAX_USER_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a user id is 1 to {MAX_USER_ID_BYTES} bytes, not {}",
            user.len()
        )));
    }
    Ok(())
}

/// Checks a label: at most 256 bytes.
pub(crate) fn check_label(label: &str) -> Result<(), Error> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a session label is at most {MAX_LABEL_BYTES} bytes, not {}",
            label.len()
        )));
    }
    Ok(())
}

/// One user's index: its key and the commands about it.
pub(crate) struct UserIndex {
    key: Arc<str>,
    tag: String,
    user: Arc<str>,
}

impl UserIndex {
    /// The index of `user` under a key prefix.
    pub(crate) fn new(prefix: &str, user: &str) -> Result<Self, Error> {
        check_user(user)?;
        let tag = user_tag(user);
        Ok(Self {
            key: Arc::from(format!("{prefix}:{{{tag}}}:u:{user}")),
            tag,
            user: Arc::from(user),
        })
    }

    fn command(&self, op: Op) -> Command {
        Command {
            key: self.key.clone(),
            op,
            refresh: None,
            limits: Limits::default(),
            reindex: false,
        }
    }

    /// The command that lists the user's sessions.
    pub(crate) fn list(&self) -> Command {
        self.command(Op::SessionsOf {
            user: self.user.clone(),
            limit: LIST_LIMIT,
        })
    }

    /// The sessions a [`list`](Self::list) command answered, most recently used first.
    pub(crate) fn infos(&self, reply: Reply) -> Result<Vec<SessionInfo>, Error> {
        let Reply::Sessions(mut listed) = reply else {
            return Err(Error::Server(format!("unexpected reply {reply:?}")));
        };
        listed.sort_by_key(|l| std::cmp::Reverse(l.expires_ms));
        Ok(listed.into_iter().map(|l| self.info(l)).collect())
    }

    fn info(&self, l: Listed) -> SessionInfo {
        let expires = UNIX_EPOCH + Duration::from_millis(l.expires_ms);
        SessionInfo {
            id: self.id_of(&l.member),
            created: UNIX_EPOCH + Duration::from_secs(l.created),
            last_refresh: expires
                .checked_sub(Duration::from_secs(l.tti_secs))
                .unwrap_or(expires),
            expires,
            label: (!l.label.is_empty()).then_some(l.label),
        }
    }

    fn id_of(&self, member: &str) -> String {
        format!("{}{member}", self.tag)
    }

    /// The part of `session_id` the index lists, if the id is one of this user's (ids of
    /// other users' sessions have another tag). A string that is no session id at all is an
    /// error.
    pub(crate) fn member<'a>(&self, session_id: &'a str) -> Result<Option<&'a str>, Error> {
        if !is_id(session_id) {
            return Err(Error::InvalidArgument(format!(
                "a session id is {ID_LEN} lowercase hex characters"
            )));
        }
        let (tag, member) = session_id.split_at(TAG_LEN);
        debug_assert_eq!(member.len(), MEMBER_LEN);
        Ok((tag == self.tag).then_some(member))
    }

    /// Revokes one session of the user; answers whether it was there.
    pub(crate) async fn revoke<F, Fut>(
        &self,
        session_id: &str,
        run: F,
        events: &Events,
    ) -> Result<bool, Error>
    where
        F: FnOnce(Command) -> Fut,
        Fut: Future<Output = Result<Reply, Error>>,
    {
        let Some(member) = self.member(session_id)? else {
            return Ok(false);
        };
        let op = Op::Revoke {
            user: self.user.clone(),
            member: member.to_owned(),
        };
        let revoked = self.revoked(run(self.command(op)).await?, events)?;
        Ok(revoked.0 > 0)
    }

    /// Revokes every session of the user but `keep` (a session id), in chunks; answers how
    /// many it revoked.
    pub(crate) async fn revoke_all<F, Fut>(
        &self,
        keep: Option<&str>,
        run: F,
        events: &Events,
    ) -> Result<u64, Error>
    where
        F: Fn(Command) -> Fut,
        Fut: Future<Output = Result<Reply, Error>>,
    {
        let keep = match keep {
            Some(id) => self.member(id)?.map(str::to_owned),
            None => None,
        };
        let (mut total, mut before) = (0, u64::MAX);
        loop {
            let op = Op::RevokeAll {
                user: self.user.clone(),
                keep: keep.clone(),
                limit: REVOKE_CHUNK,
            };
            let (revoked, left) = self.revoked(run(self.command(op)).await?, events)?;
            total += revoked;
            // Each call drops what it looked at, dead or alive, so `left` falls; if it does
            // not, sessions are being bound as fast as they are revoked: those are the
            // caller's to revoke.
            if left == 0 || left >= before {
                return Ok(total);
            }
            before = left;
        }
    }

    /// Reads a `Revoked` reply, telling the hooks; answers how many were revoked and left.
    pub(crate) fn revoked(&self, reply: Reply, events: &Events) -> Result<(u64, u64), Error> {
        let Reply::Revoked { members, left } = reply else {
            return Err(Error::Server(format!("unexpected reply {reply:?}")));
        };
        if events.is_on() {
            for member in &members {
                events.emit(
                    SessionEventKind::Revoked,
                    &self.id_of(member),
                    Some(&self.user),
                );
            }
        } else {
            // The ids are made only for a listener; the metrics need the count alone.
            events.count(SessionEventKind::Revoked, members.len() as u64);
        }
        Ok((members.len() as u64, left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_shares_the_slot_tag_of_its_users_sessions() {
        let index = UserIndex::new("session", "ann").unwrap();
        let ticket = crate::ticket::Ticket::for_user("ann", 1, None);
        assert_eq!(
            &*index.key,
            format!("session:{{{}}}:u:ann", ticket.tag()).as_str()
        );
        assert_eq!(index.member(&ticket.id).unwrap(), Some(ticket.rest()));
    }

    #[test]
    fn ids_of_other_users_are_not_theirs_and_garbage_is_an_error() {
        let index = UserIndex::new("session", "ann").unwrap();
        let other = crate::ticket::Ticket::for_user("bob", 1, None);
        if other.tag() != index.tag {
            assert_eq!(index.member(&other.id).unwrap(), None);
        }
        assert!(index.member("not an id").is_err());
        assert!(index.member(&other.id.to_uppercase()).is_err());
    }

    #[test]
    fn user_ids_and_labels_are_bounded() {
        assert!(UserIndex::new("session", "").is_err());
        assert!(UserIndex::new("session", &"u".repeat(257)).is_err());
        assert!(UserIndex::new("session", &"u".repeat(256)).is_ok());
        assert!(check_label(&"l".repeat(257)).is_err());
        assert!(check_label("").is_ok());
    }
}
