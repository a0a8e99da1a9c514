//! The arguments of the script calls of a plan: the write script's (its mode, limits and
//! operation) and those of the per-user index scripts (bind, listing, revoke).

use super::{millis, Scripts};
use crate::actor::message::{index_key, Command, Op, WriteMode};

/// Appends the script call of a bind or a per-user index op (a plan's call step).
pub(super) fn call_args(pipe: &mut redis::Pipeline, command: &Command, scripts: &Scripts) {
    let key = &*command.key;
    match &command.op {
        Op::Bind(b) => {
            let index = index_key(key, &b.user);
            pipe.cmd("EVALSHA")
                .arg(scripts.bind.get_hash())
                .arg(2)
                .arg(key)
                .arg(index)
                .arg(b.created)
                .arg(millis(b.ttl))
                .arg(b.tti.as_secs())
                .arg(&*b.user)
                .arg(b.label.as_str())
                .arg(b.max_sessions);
            for (field, value) in &b.entries {
                pipe.arg(field.as_str()).arg(value.as_slice());
            }
        }
        Op::SessionsOf { user, limit } => {
            pipe.cmd("EVALSHA")
                .arg(scripts.sessions.get_hash())
                .arg(1)
                .arg(key)
                .arg(&**user)
                .arg(*limit);
        }
        Op::Revoke { user, member } => {
            pipe.cmd("EVALSHA")
                .arg(scripts.revoke.get_hash())
                .arg(1)
                .arg(key)
                .arg(&**user)
                .arg("one")
                .arg(member.as_str());
        }
        Op::RevokeAll { user, keep, limit } => {
            pipe.cmd("EVALSHA")
                .arg(scripts.revoke.get_hash())
                .arg(1)
                .arg(key)
                .arg(&**user)
                .arg("all")
                .arg(keep.as_deref().unwrap_or(""))
                .arg(*limit);
        }
        // Every other op is a step of its own kind (see `Plan::build`).
        _ => {}
    }
}

/// Appends the write script's arguments to the pipeline's last command.
pub(super) fn write_args(cmd: &mut redis::Pipeline, command: &Command, refresh_ms: u64) {
    let (mode, created, mut ttl_ms) = match command.op.write_mode() {
        Some(WriteMode::Create { created, ttl }) => ("c", created, millis(ttl)),
        _ if command.reindex && refresh_ms > 0 => ("i", 0, refresh_ms),
        _ => ("e", 0, refresh_ms),
    };
    if let Op::SetTti { ttl, .. } = &command.op {
        // Setting the time to idle always sets the TTL, whatever the batch refreshed before.
        ttl_ms = millis(*ttl);
    }
    cmd.arg(mode)
        .arg(created)
        .arg(ttl_ms)
        .arg(command.limits.max_keys)
        .arg(command.limits.max_bytes);
    match &command.op {
        Op::Set(_, entries) => {
            cmd.arg("s");
            for (field, value) in entries {
                cmd.arg(field.as_str()).arg(value.as_slice());
            }
        }
        Op::Remove(fields) => {
            cmd.arg("d").arg(fields.as_slice());
        }
        Op::Incr(_, field, by) => {
            cmd.arg("i").arg(field.as_str()).arg(*by);
        }
        Op::SetIfAbsent(_, field, value) => {
            cmd.arg("n").arg(field.as_str()).arg(value.as_slice());
        }
        Op::CompareAndSet(_, field, expected, value) => {
            cmd.arg("x").arg(field.as_str()).arg(value.as_slice());
            match expected {
                Some(expected) => cmd.arg("1").arg(expected.as_slice()),
                None => cmd.arg("0"),
            };
        }
        Op::SetTti { tti, .. } => {
            cmd.arg("t").arg(tti.as_secs());
        }
        _ => {}
    }
}
