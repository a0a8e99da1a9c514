//! The fast write: a `set` to a session that must exist, as one `MULTI` of plain commands
//! instead of the write script, and its settling when it may have crossed a limit.
//!
//! Why: the write script is the largest Redis cost of a session write. Redis runs Lua slowly
//! (a script that only calls `HMGET` and `HSET` costs several times those two commands), and
//! `scripts/guard_cost.sh` measures the fast write at about half the script's Redis CPU.
//!
//! How it keeps the script's guarantees (`lua/settle.lua` has the protocol):
//! - **No session comes back.** The `MULTI` reads `\0created` with the fields' values before.
//!   If the session was gone, the hash the write made has no `\0created`: every reader treats
//!   such a hash as no session (reads fetch `\0created` with their fields), the write answers
//!   `Gone`, and the writer deletes the orphan at once. Should the delete never arrive (the
//!   process died in between), the orphan expires on its own: the `PEXPIRE ... NX` of a write
//!   that carries no refresh gives it [`ORPHAN_TTL_MS`] and leaves a session's TTL alone.
//! - **Limits.** `\0size` grows by what the write wrote (an upper bound: what it replaced is
//!   not subtracted), and `HLEN` counts the fields. A write that left `\0size` past the byte
//!   limit, or added a key to a session whose fields (less the two metadata fields every
//!   session has) are past the key limit, is settled: the settle script counts exactly and
//!   undoes the write if it took the session past a limit, as the script would have refused
//!   it. Below the limits, the reply is final in one round trip.
//! - **Out of memory.** Redis refuses the `HSET` while queueing it, so `EXEC` runs nothing.
//!
//! Only plain `set`s of an existing session of up to [`MAX_FAST_FIELDS`] distinct fields go
//! this way, and not a refresh that must move a bound session's index entry, nor on a cluster
//! (a redirection inside a `MULTI` would need an `ASKING` per command). Everything else keeps
//! the write script.

use redis::Value;

use super::{keyed, Scripts, INT};
use crate::actor::message::{Command, Op, WriteMode, META_CREATED};

/// The field that holds a session's size in bytes (an upper bound, see the module doc).
const META_SIZE: &str = "\0size";

/// Most fields a fast write takes; a larger one uses the write script.
const MAX_FAST_FIELDS: usize = 16;

/// The TTL an orphan gets (see the module doc): long enough that no live session is affected,
/// since `NX` never changes a TTL that exists.
pub(super) const ORPHAN_TTL_MS: u64 = 60_000;

/// The Redis commands a fast write sends: `MULTI`, `HMGET`, `HSET`, `HINCRBY`, `HLEN`,
/// `PEXPIRE`, `EXEC`.
pub(super) const COMMANDS: usize = 7;

/// The metadata fields every session has (`\0created`, `\0size`); a bound or labelled one has
/// more, so `HLEN` less these is an upper bound of its keys.
const BASE_METAS: i64 = 2;

/// Whether `command` may be written fast (see the module doc).
pub(super) fn eligible(command: &Command, refresh_ms: u64) -> bool {
    let Op::Set(WriteMode::Existing, entries) = &command.op else {
        return false;
    };
    let distinct = entries
        .iter()
        .enumerate()
        .all(|(i, (field, _))| entries[..i].iter().all(|(f, _)| f != field));
    !entries.is_empty()
        && entries.len() <= MAX_FAST_FIELDS
        && distinct
        && !(command.reindex && refresh_ms > 0)
}

fn entries(command: &Command) -> &[(String, Vec<u8>)] {
    match &command.op {
        Op::Set(_, entries) => entries,
        _ => &[],
    }
}

/// Appends the fast write's `MULTI` ... `EXEC` to the pipeline, each command sized up front.
pub(super) fn encode(pipe: &mut redis::Pipeline, command: &Command, refresh_ms: u64) {
    let key = &*command.key;
    let entries = entries(command);
    let names: usize = entries.iter().map(|(field, _)| field.len()).sum();
    let written = names + entries.iter().map(|(_, value)| value.len()).sum::<usize>();
    pipe.cmd("MULTI");
    let (n, created) = (entries.len(), META_CREATED.len());
    pipe.add_command(keyed("HMGET", key, 1 + n, created + names))
        .arg(META_CREATED);
    for (field, _) in entries {
        pipe.arg(field.as_str());
    }
    pipe.add_command(keyed("HSET", key, 2 * n, written));
    for (field, value) in entries {
        pipe.arg(field.as_str()).arg(value.as_slice());
    }
    pipe.add_command(keyed("HINCRBY", key, 2, META_SIZE.len() + INT))
        .arg(META_SIZE)
        .arg(written);
    pipe.add_command(keyed("HLEN", key, 0, 0));
    pipe.add_command(keyed("PEXPIRE", key, 2, INT + "NX".len()));
    if refresh_ms > 0 {
        pipe.arg(refresh_ms);
    } else {
        pipe.arg(ORPHAN_TTL_MS).arg("NX");
    }
    pipe.cmd("EXEC");
}

/// The reply of a step of several commands: the first error among them (a command refused
/// while queueing, out of memory for one, makes `EXEC` fail; its own error says why), else
/// the last (`EXEC`'s).
pub(super) fn reply_of(replies: impl Iterator<Item = Value>) -> Value {
    let mut last = Value::Nil;
    for reply in replies {
        if matches!(reply, Value::ServerError(_)) {
            return reply;
        }
        last = reply;
    }
    last
}

/// What a fast write still needs once its `MULTI` has run.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// Done: the reply is final.
    Done,
    /// The session was gone: delete the orphan.
    Orphan,
    /// It added a key or may be past the byte limit: run the settle script with these values
    /// before (one per field, `None` for an absent one).
    Settle(Vec<Option<Vec<u8>>>),
}

/// Reads `EXEC`'s reply, and rewrites it as the write script would have answered (`{0}` for
/// gone, `{1, 0}` for done) where that is final. A reply that is not `EXEC`'s (an error) is
/// left as it is, and is `Done`: the write fails with it.
pub(super) fn outcome(command: &Command, reply: &mut Value) -> Outcome {
    let Value::Array(items) = reply else {
        return Outcome::Done;
    };
    let (
        Some(Value::Array(before)),
        Some(Value::Int(added)),
        Some(Value::Int(size)),
        Some(Value::Int(fields)),
    ) = (items.first(), items.get(1), items.get(2), items.get(3))
    else {
        return Outcome::Done;
    };
    let (added, size, fields) = (*added, *size, *fields);
    let Some((created, before)) = before.split_first() else {
        return Outcome::Done;
    };
    if matches!(created, Value::Nil) {
        *reply = Value::Array(vec![Value::Int(0)]);
        return Outcome::Orphan;
    }
    let past = |n: i64, limit: u64| u64::try_from(n).unwrap_or(u64::MAX) > limit;
    if past(size, command.limits.max_bytes)
        || (added > 0 && past(fields - BASE_METAS, command.limits.max_keys))
    {
        let before = before
            .iter()
            .map(|v| match v {
                Value::BulkString(b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        return Outcome::Settle(before);
    }
    *reply = Value::Array(vec![Value::Int(1), Value::Int(0)]);
    Outcome::Done
}

/// Appends the settle script's call for a fast write whose fields held `before`.
pub(super) fn settle(
    pipe: &mut redis::Pipeline,
    command: &Command,
    before: &[Option<Vec<u8>>],
    scripts: &Scripts,
) {
    pipe.cmd("EVALSHA")
        .arg(scripts.settle.get_hash())
        .arg(1)
        .arg(&*command.key)
        .arg(command.limits.max_keys)
        .arg(command.limits.max_bytes);
    for ((field, value), old) in entries(command).iter().zip(before) {
        pipe.arg(field.as_str()).arg(value.as_slice());
        match old {
            Some(old) => pipe.arg("1").arg(old.as_slice()),
            None => pipe.arg("0").arg(""),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::message::Limits;
    use std::sync::Arc;
    use std::time::Duration;

    fn set(fields: &[&str]) -> Command {
        Command {
            key: Arc::from("s:1"),
            op: Op::Set(
                WriteMode::Existing,
                fields
                    .iter()
                    .map(|f| (f.to_string(), b"1".to_vec()))
                    .collect(),
            ),
            refresh: None,
            limits: Limits::default(),
            reindex: false,
        }
    }

    fn exec(created: bool, before: Value, added: i64, size: i64, fields: i64) -> Value {
        let created = if created {
            Value::BulkString(b"1".to_vec())
        } else {
            Value::Nil
        };
        Value::Array(vec![
            Value::Array(vec![created, before]),
            Value::Int(added),
            Value::Int(size),
            Value::Int(fields),
            Value::Int(1),
        ])
    }

    #[test]
    fn only_plain_sets_of_distinct_fields_to_an_existing_session_are_fast() {
        assert!(eligible(&set(&["a", "b"]), 0));
        assert!(!eligible(&set(&["a", "a"]), 0), "a field named twice");
        assert!(!eligible(&set(&[]), 0));
        let many: Vec<String> = (0..=MAX_FAST_FIELDS).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(!eligible(&set(&many), 0));
        let reindexing = Command {
            reindex: true,
            ..set(&["a"])
        };
        assert!(
            !eligible(&reindexing, 60_000),
            "moves a bound session's index"
        );
        assert!(eligible(&reindexing, 0));
        let create = Command {
            op: Op::Set(
                WriteMode::Create {
                    created: 1,
                    ttl: Duration::from_secs(60),
                },
                vec![("a".into(), b"1".to_vec())].into(),
            ),
            ..set(&["a"])
        };
        assert!(!eligible(&create, 0), "a creating write keeps the script");
    }

    #[test]
    fn an_overwrite_within_the_limits_is_done_at_once() {
        let mut reply = exec(true, Value::BulkString(b"0".to_vec()), 0, 20, 3);
        assert_eq!(outcome(&set(&["a"]), &mut reply), Outcome::Done);
        assert_eq!(reply, Value::Array(vec![Value::Int(1), Value::Int(0)]));
        let mut reply = exec(true, Value::Nil, 1, 20, 4);
        assert_eq!(
            outcome(&set(&["a"]), &mut reply),
            Outcome::Done,
            "a key added, far from the limit"
        );
    }

    #[test]
    fn a_write_to_a_gone_session_answers_gone_and_deletes_its_orphan() {
        let mut reply = exec(false, Value::Nil, 1, 2, 2);
        assert_eq!(outcome(&set(&["a"]), &mut reply), Outcome::Orphan);
        assert_eq!(reply, Value::Array(vec![Value::Int(0)]));
    }

    #[test]
    fn a_write_that_may_pass_a_limit_is_settled() {
        let keys = Limits::default().max_keys as i64;
        let mut reply = exec(true, Value::Nil, 1, 20, keys + BASE_METAS + 1);
        assert_eq!(
            outcome(&set(&["a"]), &mut reply),
            Outcome::Settle(vec![None])
        );
        let mut reply = exec(
            true,
            Value::BulkString(b"7".to_vec()),
            0,
            20,
            keys + BASE_METAS + 1,
        );
        assert_eq!(
            outcome(&set(&["a"]), &mut reply),
            Outcome::Done,
            "no key added"
        );
        let big = Limits::default().max_bytes as i64 + 1;
        let mut reply = exec(true, Value::BulkString(b"7".to_vec()), 0, big, 3);
        assert_eq!(
            outcome(&set(&["a"]), &mut reply),
            Outcome::Settle(vec![Some(b"7".to_vec())])
        );
    }

    #[test]
    fn a_command_refused_while_queueing_answers_for_the_whole_step() {
        let oom = redis::parse_redis_value(b"-OOM command not allowed\r\n").unwrap();
        let abort = redis::parse_redis_value(b"-EXECABORT Transaction discarded\r\n").unwrap();
        let ok = |s: &str| Value::SimpleString(s.to_owned());
        let replies = vec![ok("OK"), ok("QUEUED"), oom.clone(), ok("QUEUED"), abort];
        assert_eq!(reply_of(replies.into_iter()), oom);
        let fine = vec![ok("OK"), ok("QUEUED"), Value::Array(vec![])];
        assert_eq!(reply_of(fine.into_iter()), Value::Array(vec![]));
    }
}
