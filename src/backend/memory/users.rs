//! The memory backend's per-user indexes: binding, listing and revoking a user's sessions,
//! with the semantics of the Redis scripts (`lua/bind.lua`, `sessions.lua`, `revoke.lua`).

use std::sync::Arc;

use super::{Bound, Entry, State};
use crate::actor::message::{index_key, Binding, Listed, Reply, MEMBER_LEN};
use crate::clock::{self, Instant};

impl State {
    /// Deletes a session and its index entry.
    pub(super) fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.sessions.remove(key)?;
        if let Some(bound) = &entry.user {
            let index = index_key(key, &bound.user);
            if let Some(members) = self.users.get_mut(&index) {
                members.remove(key);
                if members.is_empty() {
                    self.users.remove(&index);
                }
            }
        }
        Some(entry)
    }

    /// The user's live sessions, oldest bind first, dropping dead keys from the index.
    pub(super) fn bound(&mut self, index: &str, user: &str, now: Instant) -> Vec<(Arc<str>, u64)> {
        let Some(members) = self.users.get(index) else {
            return Vec::new();
        };
        let mut live = Vec::with_capacity(members.len());
        let mut dead = Vec::new();
        for key in members {
            match self.sessions.get(key) {
                Some(e)
                    if e.expires_at > now && e.user.as_ref().is_some_and(|b| *b.user == *user) =>
                {
                    live.push((key.clone(), e.user.as_ref().map_or(0, |b| b.seq)));
                }
                _ => dead.push(key.clone()),
            }
        }
        for key in dead {
            if self.sessions.get(&key).is_some_and(|e| e.expires_at <= now) {
                self.remove(&key);
            }
            if let Some(members) = self.users.get_mut(index) {
                members.remove(&key);
                if members.is_empty() {
                    self.users.remove(index);
                }
            }
        }
        live.sort_by_key(|(_, seq)| *seq);
        live
    }

    pub(super) fn bind(&mut self, key: &Arc<str>, b: &Binding, now: Instant) -> Reply {
        self.binds += 1;
        let mut entry = Entry::new(b.created, now + b.ttl);
        for (field, value) in &b.entries {
            entry.size += (field.len() + value.len()) as u64;
            entry.fields.insert(field.clone(), value.clone());
        }
        entry.tti = Some(b.tti.as_secs());
        entry.user = Some(Bound {
            user: b.user.clone(),
            label: b.label.clone(),
            seq: self.binds,
        });
        self.sessions.insert(key.clone(), entry);
        let index = index_key(key, &b.user);
        self.users
            .entry(index.clone())
            .or_default()
            .insert(key.clone());
        let mut members = Vec::new();
        if b.max_sessions > 0 {
            let live = self.bound(&index, &b.user, now);
            let excess = live.len().saturating_sub(b.max_sessions as usize);
            for (old, _) in live.into_iter().filter(|(k, _)| k != key).take(excess) {
                self.remove(&old);
                members.push(old[old.len() - MEMBER_LEN..].to_owned());
            }
        }
        Reply::Revoked { members, left: 0 }
    }

    pub(super) fn sessions_of(
        &mut self,
        index: &str,
        user: &str,
        limit: u32,
        now: Instant,
    ) -> Reply {
        let live = self.bound(index, user, now);
        let (now_ms, mut listed) = (clock::unix_millis(), Vec::with_capacity(live.len()));
        for (key, _) in live {
            let Some(e) = self.sessions.get(&key) else {
                continue;
            };
            listed.push(Listed {
                member: key[key.len() - MEMBER_LEN..].to_owned(),
                expires_ms: now_ms + e.expires_at.duration_since(now).as_millis() as u64,
                created: e.created,
                tti_secs: e.tti.unwrap_or(0),
                label: e.user.as_ref().map(|b| b.label.clone()).unwrap_or_default(),
            });
        }
        listed.sort_by_key(|l| std::cmp::Reverse(l.expires_ms));
        listed.truncate(limit as usize);
        Reply::Sessions(listed)
    }

    /// Revokes one session if it is bound to `user`; answers its id if it was.
    pub(super) fn revoke(&mut self, index: &str, user: &str, member: &str) -> Option<String> {
        let base = &index[..index.len() - user.len() - 2];
        let key = format!("{base}{member}");
        let owned = self
            .sessions
            .get(key.as_str())
            .and_then(|e| e.user.as_ref())
            .is_some_and(|b| *b.user == *user);
        if let Some(members) = self.users.get_mut(index) {
            members.remove(key.as_str());
        }
        (owned && self.remove(&key).is_some()).then(|| member.to_owned())
    }

    pub(super) fn revoke_all(
        &mut self,
        index: &str,
        user: &str,
        keep: Option<&str>,
        limit: u32,
    ) -> Reply {
        let now = clock::now();
        let live = self.bound(index, user, now);
        let mut members = Vec::new();
        let mut left = 0;
        for (key, _) in live {
            let member = &key[key.len() - MEMBER_LEN..];
            if Some(member) == keep {
                continue;
            }
            if members.len() < limit as usize {
                members.extend(self.revoke(index, user, member));
            } else {
                left += 1;
            }
        }
        Reply::Revoked { members, left }
    }
}
