//! Redis replies read back into the commands' [`Reply`]s: the write script's answers, the
//! per-user scripts' lists, `HGETALL` without metadata, and errors in words.

use redis::Value;

use crate::actor::message::{Command, Listed, Op, Reply, META_CREATED, META_PREFIX};
use crate::error::Error;

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `{left, ids...}` (revoke) or `{0, ids...}` (bind, where nothing is left to revoke).
pub(super) fn revoked_reply(value: &Value) -> Result<Reply, Error> {
    let unexpected = || Error::Server(format!("unexpected revoke reply {value:?}"));
    let Value::Array(items) = value else {
        return Err(unexpected());
    };
    let (first, members) = items.split_first().ok_or_else(unexpected)?;
    let members = members.iter().map(text).collect::<Option<Vec<_>>>();
    match (number(first), members) {
        (Some(left), Some(members)) => Ok(Reply::Revoked { members, left }),
        _ => Err(unexpected()),
    }
}

/// Five values per session: id, expiry (ms), created (s), time to idle (s), label.
pub(super) fn sessions_reply(value: &Value) -> Result<Reply, Error> {
    let unexpected = || Error::Server(format!("unexpected sessions reply {value:?}"));
    let Value::Array(items) = value else {
        return Err(unexpected());
    };
    items
        .chunks(5)
        .map(|s| match s {
            [member, expires, created, tti, label] => Some(Listed {
                member: text(member)?,
                // Scores are whole milliseconds; RESP2 sends them as text.
                expires_ms: text(expires)?.parse::<f64>().ok()? as u64,
                created: number(created)?,
                tti_secs: number(tti)?,
                label: text(label)?,
            }),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Reply::Sessions)
        .ok_or_else(unexpected)
}

pub(super) fn write_reply(command: &Command, value: &Value) -> Result<Reply, Error> {
    let unexpected = || Error::Server(format!("unexpected write reply {value:?}"));
    let Value::Array(items) = value else {
        return Err(unexpected());
    };
    match (items.first(), items.get(1), items.get(2)) {
        (Some(Value::Int(0)), _, _) => Ok(Reply::Gone),
        // A compare-and-set that found another value: the value it found.
        (Some(Value::Int(1)), Some(Value::Int(0)), found)
            if matches!(command.op, Op::CompareAndSet(..)) =>
        {
            Ok(Reply::Values(smallvec::smallvec![found
                .cloned()
                .and_then(bytes)]))
        }
        (Some(Value::Int(1)), Some(Value::Int(n)), _) => Ok(match command.op {
            Op::Set(..) | Op::SetTti { .. } => Reply::Done,
            Op::SetIfAbsent(..) | Op::CompareAndSet(..) => Reply::Bool(*n == 1),
            _ => Reply::Int(*n),
        }),
        // An increment answers the counter as a string: exact beyond Lua's 2^53.
        (Some(Value::Int(1)), Some(Value::BulkString(n)), _) => std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse().ok())
            .map(Reply::Int)
            .ok_or_else(unexpected),
        (Some(Value::Int(2)), Some(Value::Int(keys)), Some(Value::Int(bytes))) => {
            Err(command.limits.exceeded((*keys as u64, *bytes as u64)))
        }
        _ => Err(unexpected()),
    }
}

pub(super) fn server_error(command: &Command, e: &redis::ServerError) -> Error {
    let text = match e.details() {
        Some(details) => format!("{} {details}", e.code()),
        None => e.code().to_owned(),
    };
    if let Op::Incr(_, field, _) = &command.op {
        if text.contains("not an integer") || text.contains("overflow") {
            return Error::NotAnInteger(field.clone());
        }
    }
    // Redis 7 keeps the code of an error raised inside a script; Redis 6 wraps it in ERR.
    if e.code() == "OOM" || text.contains("OOM command not allowed") {
        return Error::StoreFull(text);
    }
    Error::Server(text)
}

pub(super) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// An `HGETALL`'s fields without metadata; `None` when the hash has no `\0created`: no
/// session, or an orphan that a fast write left for an instant (see `lua/settle.lua`).
pub(super) fn entries(value: Value) -> Option<Reply> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut iter = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => Vec::new(),
    };
    let mut exists = false;
    let entries = pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let field = String::from_utf8(bytes(k)?).ok()?;
            if field.as_bytes().first() == Some(&META_PREFIX) {
                exists |= field == META_CREATED;
                return None;
            }
            Some((field, bytes(v)?))
        })
        .collect();
    exists.then_some(Reply::Entries(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_hide_metadata() {
        let reply = entries(Value::Array(vec![
            Value::BulkString(META_CREATED.as_bytes().to_vec()),
            Value::BulkString(b"17".to_vec()),
            Value::BulkString(b"user".to_vec()),
            Value::BulkString(b"\"ann\"".to_vec()),
        ]));
        assert_eq!(
            reply,
            Some(Reply::Entries(vec![("user".into(), b"\"ann\"".to_vec())]))
        );
    }

    #[test]
    fn a_hash_without_its_creation_stamp_is_no_session() {
        let orphan = Value::Array(vec![
            Value::BulkString(b"user".to_vec()),
            Value::BulkString(b"\"ann\"".to_vec()),
        ]);
        assert_eq!(entries(orphan), None);
    }
}
