//! A batch of session commands as one Redis pipeline: which Redis command each becomes, how
//! reads of one session fuse into one `HMGET` and refreshes into one `PEXPIRE`, and how the
//! replies find their way back to each command.
//!
//! Why this file is long: a third of it is the unit tests of fusion and routing, which need the
//! plan's private steps; the rest is one job.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use redis::Value;

use super::scripts::Scripts;
use crate::actor::message::{Command, Listed, Op, Reply, WriteMode, META_PREFIX};
use crate::backend::BatchReplies;
use crate::error::Error;
use crate::stats::Stats;

/// Most fields in one `HMGET` that fuses the reads of one session: one Redis call stays short
/// however many requests read one session at once.
const MAX_FUSED_FIELDS: usize = 1024;

/// One Redis command of the pipeline.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Expire(&'a str, u64),
    /// The refresh of a bound session: `PEXPIRE` and its index entry (touch script).
    Touch(&'a str, u64),
    HMGet(&'a str, Vec<&'a str>),
    HGetAll(&'a str),
    /// The write script, with the TTL refresh it carries (0: none).
    Write(&'a Command, u64),
    Exists(&'a str),
    Del(&'a str),
    Renew(&'a str, &'a str, u64),
    /// A command that is one script call of its own: bind, and the per-user index ops.
    Call(&'a Command),
}

impl Step<'_> {
    /// The key the step reads or writes (for a renew, the old key: the new one shares its hash
    /// tag, so both hash to one cluster slot).
    fn key(&self) -> &str {
        match self {
            Step::Expire(key, _)
            | Step::Touch(key, _)
            | Step::HMGet(key, _)
            | Step::HGetAll(key)
            | Step::Exists(key)
            | Step::Del(key)
            | Step::Renew(key, _, _) => key,
            Step::Write(command, _) | Step::Call(command) => &command.key,
        }
    }
}

/// Where a command's answer is found.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Route {
    /// The step that answers it.
    step: usize,
    /// For a fused `HMGET`: the first of this command's fields within the step.
    offset: usize,
    /// A `PEXPIRE` of this session earlier in the batch: if it found nothing, a read is `Gone`.
    expire: Option<usize>,
}

/// A batch turned into pipeline steps, with fusion applied.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    steps: Vec<Step<'a>>,
    routes: Vec<Route>,
    fused_reads: u64,
    fused_refreshes: u64,
}

/// What the batch so far did to one session.
#[derive(Default)]
struct SessionState {
    /// The TTL was already refreshed in this batch.
    refreshed: bool,
    /// The `PEXPIRE` step that refreshed it, if a plain one did.
    expire: Option<usize>,
    /// An `HMGET` later reads may join: no write to the session since.
    open_read: Option<usize>,
}

fn millis(d: std::time::Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl<'a> Plan<'a> {
    pub(super) fn build(batch: &'a [Command]) -> Self {
        let mut plan = Plan {
            steps: Vec::with_capacity(batch.len() + 4),
            routes: Vec::with_capacity(batch.len()),
            fused_reads: 0,
            fused_refreshes: 0,
        };
        let mut sessions: HashMap<&str, SessionState> = HashMap::with_capacity(batch.len());
        for command in batch {
            let key: &str = &command.key;
            let state = sessions.entry(key).or_default();
            // Reads and touches refresh with a plain PEXPIRE placed before them; writes refresh
            // inside their script. Either way, once per session per batch.
            let wants_refresh = command.refresh.is_some();
            if wants_refresh && state.refreshed {
                plan.fused_refreshes += 1;
            }
            let mut refresh = command.refresh.filter(|_| !state.refreshed);
            if let (true, Some(ttl), true) = (command.reindex, command.refresh, state.refreshed) {
                // A refresh that moves the session's index entry is never fused away: its worker
                // counts on it (see `lua/index.lua`). It upgrades this batch's PEXPIRE (or
                // EXISTS) of the session to the touch script, or is sent with the command.
                match state.expire.map(|step| (step, &plan.steps[step])) {
                    Some((step, &(Step::Expire(k, _) | Step::Exists(k)))) => {
                        plan.steps[step] = Step::Touch(k, millis(ttl));
                    }
                    Some((_, Step::Touch(..))) => {}
                    _ => {
                        refresh = Some(ttl);
                        plan.fused_refreshes -= 1;
                    }
                }
            }
            let is_read = matches!(command.op, Op::Get(_) | Op::Entries);
            if is_read && command.refresh.is_some() && state.expire.is_none() {
                // A refreshing read must learn whether the session exists, and only a plain
                // PEXPIRE earlier in the batch (with no creating write, invalidate or renew since)
                // tells it. A refresh folded into a write script does not: check existence here.
                state.expire = Some(plan.steps.len());
                match refresh {
                    Some(ttl) => {
                        plan.steps.push(refresh_step(command, millis(ttl)));
                        state.refreshed = true;
                    }
                    None => plan.steps.push(Step::Exists(key)),
                }
            }
            let route = match &command.op {
                // A fused HMGET stays bounded: past MAX_FUSED_FIELDS a new one starts.
                Op::Get(fields) => match state.open_read.filter(|&step| {
                    matches!(&plan.steps[step], Step::HMGet(_, f) if f.len() + fields.len() <= MAX_FUSED_FIELDS)
                }) {
                    Some(step) => {
                        let Step::HMGet(_, existing) = &mut plan.steps[step] else {
                            unreachable!("open_read always points at an HMGET")
                        };
                        let offset = existing.len();
                        existing.extend(fields.iter().map(String::as_str));
                        plan.fused_reads += 1;
                        Route {
                            step,
                            offset,
                            expire: state.expire,
                        }
                    }
                    None => {
                        let step = plan.steps.len();
                        plan.steps.push(Step::HMGet(
                            key,
                            fields.iter().map(String::as_str).collect(),
                        ));
                        state.open_read = Some(step);
                        Route {
                            step,
                            offset: 0,
                            expire: state.expire,
                        }
                    }
                },
                Op::Entries => plan.push(Step::HGetAll(key), state.expire),
                Op::Touch => match (state.expire, command.refresh) {
                    // The session's PEXPIRE earlier in the batch already answers "exists?".
                    (Some(step), _) => Route {
                        step,
                        offset: 0,
                        expire: None,
                    },
                    (None, Some(ttl)) => {
                        let route = plan.push(refresh_step(command, millis(ttl)), None);
                        state.refreshed = true;
                        state.expire = Some(route.step);
                        route
                    }
                    (None, None) => plan.push(Step::Exists(key), None),
                },
                Op::Invalidate => {
                    state.open_read = None;
                    state.expire = None;
                    plan.push(Step::Del(key), None)
                }
                Op::Renew { to, ttl } => {
                    state.open_read = None;
                    state.expire = None;
                    plan.push(Step::Renew(key, to, millis(*ttl)), None)
                }
                Op::Bind(_) => {
                    state.open_read = None;
                    state.expire = None;
                    plan.push(Step::Call(command), None)
                }
                Op::SessionsOf { .. } | Op::Revoke { .. } | Op::RevokeAll { .. } => {
                    plan.push(Step::Call(command), None)
                }
                Op::Set(..)
                | Op::Remove(_)
                | Op::Incr(..)
                | Op::SetIfAbsent(..)
                | Op::CompareAndSet(..)
                | Op::SetTti { .. } => {
                    state.open_read = None;
                    if matches!(command.op.write_mode(), Some(WriteMode::Create { .. })) {
                        // It may create the session an earlier PEXPIRE found missing.
                        state.expire = None;
                    }
                    let refresh_ms = match refresh {
                        Some(ttl) => {
                            state.refreshed = true;
                            millis(ttl)
                        }
                        None => 0,
                    };
                    plan.push(Step::Write(command, refresh_ms), None)
                }
            };
            plan.routes.push(route);
        }
        plan
    }

    /// How many Redis commands the pipeline holds.
    pub(super) fn len(&self) -> usize {
        self.steps.len()
    }

    pub(super) fn count(&self, stats: &Stats) {
        stats
            .redis_commands
            .fetch_add(self.steps.len() as u64, Relaxed);
        stats.fused_reads.fetch_add(self.fused_reads, Relaxed);
        stats
            .fused_refreshes
            .fetch_add(self.fused_refreshes, Relaxed);
    }

    fn push(&mut self, step: Step<'a>, expire: Option<usize>) -> Route {
        self.steps.push(step);
        Route {
            step: self.steps.len() - 1,
            offset: 0,
            expire,
        }
    }

    /// Encodes the steps as one pipeline; per-command errors stay in their slots.
    pub(super) fn pipeline(&self, scripts: &Scripts) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for step in 0..self.steps.len() {
            self.encode(step, &mut pipe, scripts);
        }
        pipe
    }

    /// The key of a step (see [`Step::key`]).
    pub(super) fn key(&self, step: usize) -> &str {
        self.steps[step].key()
    }

    /// Whether a step may run twice with the same outcome (see [`replay_safe`]): everything
    /// but the write and renew scripts.
    pub(super) fn replay_safe(&self, step: usize) -> bool {
        match self.steps[step] {
            Step::Write(..) | Step::Renew(..) => false,
            Step::Call(command) => replay_safe(&command.op),
            _ => true,
        }
    }

    /// Appends one step to a pipeline.
    pub(super) fn encode(&self, step: usize, pipe: &mut redis::Pipeline, scripts: &Scripts) {
        match &self.steps[step] {
            Step::Expire(key, ms) => {
                pipe.cmd("PEXPIRE").arg(*key).arg(*ms);
            }
            Step::Touch(key, ms) => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.touch.get_hash())
                    .arg(1)
                    .arg(*key)
                    .arg(*ms);
            }
            Step::Exists(key) => {
                pipe.cmd("EXISTS").arg(*key);
            }
            Step::Call(command) => call_args(pipe, command, scripts),
            Step::HMGet(key, fields) => {
                pipe.cmd("HMGET").arg(*key).arg(fields.as_slice());
            }
            Step::HGetAll(key) => {
                pipe.cmd("HGETALL").arg(*key);
            }
            Step::Del(key) => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.invalidate.get_hash())
                    .arg(1)
                    .arg(*key);
            }
            Step::Renew(from, to, ms) => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.renew.get_hash())
                    .arg(2)
                    .arg(*from)
                    .arg(*to)
                    .arg(*ms);
            }
            Step::Write(command, refresh_ms) => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.write.get_hash())
                    .arg(1)
                    .arg(&*command.key);
                write_args(pipe, command, *refresh_ms);
            }
        }
    }

    /// Maps the steps' replies (one per step, in step order) back to the batch's commands.
    pub(super) fn answer(&self, batch: &[Command], replies: Vec<Value>) -> BatchReplies {
        self.answer_with(batch, replies, &HashMap::new())
    }

    /// [`answer`](Self::answer), where the steps in `failed` have no reply but an error (a
    /// cluster node that could not be reached, a slot that is not served): the commands they
    /// answer get that error. A refreshing read whose existence check failed fails too.
    pub(super) fn answer_with(
        &self,
        batch: &[Command],
        mut replies: Vec<Value>,
        failed: &HashMap<usize, Error>,
    ) -> BatchReplies {
        // HMGET steps may answer several commands; take their arrays out once.
        let mut arrays: HashMap<usize, Vec<Value>> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            if matches!(step, Step::HMGet(..)) && matches!(replies[i], Value::Array(_)) {
                if let Value::Array(items) = std::mem::take(&mut replies[i]) {
                    arrays.insert(i, items);
                }
            }
        }
        batch
            .iter()
            .zip(&self.routes)
            .map(|(command, route)| {
                if let Some(error) = failed.get(&route.step) {
                    return Err(error.clone());
                }
                // A refreshing read learns from the session's PEXPIRE (or EXISTS) whether the
                // session exists; a plain read just reads, like the memory backend.
                if let Some(expire) = route.expire {
                    let reads = matches!(command.op, Op::Get(_) | Op::Entries);
                    if let Some(error) = failed.get(&expire).filter(|_| reads) {
                        return Err(error.clone());
                    }
                    if reads
                        && command.refresh.is_some()
                        && matches!(replies[expire], Value::Int(0))
                    {
                        return Ok(Reply::Gone);
                    }
                }
                if let Value::ServerError(e) = &replies[route.step] {
                    return Err(server_error(command, e));
                }
                match &command.op {
                    Op::Get(fields) => {
                        let slice = arrays.get_mut(&route.step).and_then(|items| {
                            items.get_mut(route.offset..route.offset + fields.len())
                        });
                        match slice {
                            Some(slice) => Ok(Reply::Values(
                                slice.iter_mut().map(|v| bytes(std::mem::take(v))).collect(),
                            )),
                            None => Err(Error::Server("unexpected HMGET reply".to_owned())),
                        }
                    }
                    Op::Entries => Ok(entries(std::mem::take(&mut replies[route.step]))),
                    Op::Touch | Op::Invalidate => Ok(Reply::Bool(
                        matches!(replies[route.step], Value::Int(n) if n > 0),
                    )),
                    Op::Renew { .. } => Ok(match replies[route.step] {
                        Value::Int(1) => Reply::Done,
                        _ => Reply::Gone,
                    }),
                    Op::Bind(_) | Op::Revoke { .. } | Op::RevokeAll { .. } => {
                        revoked_reply(&replies[route.step])
                    }
                    Op::SessionsOf { .. } => sessions_reply(&replies[route.step]),
                    Op::Set(..)
                    | Op::Remove(_)
                    | Op::Incr(..)
                    | Op::SetIfAbsent(..)
                    | Op::CompareAndSet(..)
                    | Op::SetTti { .. } => write_reply(command, &replies[route.step]),
                }
            })
            .collect()
    }
}

/// Whether a command may run twice with the same outcome, and so be sent again after its
/// connection died with the batch in flight: reads, TTL refreshes and logout. A write may
/// have run (an increment would count twice, a renew would find its old id gone), so it is
/// failed instead, with [`Error::Unavailable`]: a 503 whose write may have been applied.
pub(super) fn replay_safe(op: &Op) -> bool {
    matches!(
        op,
        Op::Get(_) | Op::Entries | Op::Touch | Op::Invalidate | Op::SessionsOf { .. }
    )
}

/// The refresh step of a session: a plain `PEXPIRE`, or the touch script for a bound one.
fn refresh_step(command: &Command, ms: u64) -> Step<'_> {
    if command.reindex {
        Step::Touch(&command.key, ms)
    } else {
        Step::Expire(&command.key, ms)
    }
}

/// Appends a [`Step::Call`]: the script call of a bind or a per-user index op.
fn call_args(pipe: &mut redis::Pipeline, command: &Command, scripts: &Scripts) {
    let key = &*command.key;
    match &command.op {
        Op::Bind(b) => {
            let index = crate::actor::message::index_key(key, &b.user);
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

/// `{left, ids...}` (revoke) or `{1, ids...}` (bind, where nothing is left to revoke).
fn revoked_reply(value: &Value) -> Result<Reply, Error> {
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
fn sessions_reply(value: &Value) -> Result<Reply, Error> {
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

/// Appends the write script's arguments to the pipeline's last command.
fn write_args(cmd: &mut redis::Pipeline, command: &Command, refresh_ms: u64) {
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

fn write_reply(command: &Command, value: &Value) -> Result<Reply, Error> {
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
            Ok(Reply::Values(vec![found.cloned().and_then(bytes)]))
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

fn server_error(command: &Command, e: &redis::ServerError) -> Error {
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

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn entries(value: Value) -> Reply {
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
    let entries = pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let field = String::from_utf8(bytes(k)?).ok()?;
            if field.as_bytes().first() == Some(&META_PREFIX) {
                return None;
            }
            Some((field, bytes(v)?))
        })
        .collect();
    Reply::Entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::message::{Limits, META_CREATED};
    use std::sync::Arc;
    use std::time::Duration;

    fn cmd(key: &str, op: Op, refresh: bool) -> Command {
        Command {
            key: Arc::from(key),
            op,
            refresh: refresh.then_some(Duration::from_secs(60)),
            limits: Limits::default(),
            reindex: false,
        }
    }

    fn get(fields: &[&str]) -> Op {
        Op::Get(fields.iter().map(|f| f.to_string()).collect())
    }

    #[test]
    fn reads_of_one_session_fuse_into_one_hmget_with_one_refresh() {
        let batch = vec![
            cmd("s:1", get(&["a"]), true),
            cmd("s:2", get(&["x"]), true),
            cmd("s:1", get(&["b", "c"]), true),
        ];
        let plan = Plan::build(&batch);
        assert_eq!(
            plan.steps,
            vec![
                Step::Expire("s:1", 60_000),
                Step::HMGet("s:1", vec!["a", "b", "c"]),
                Step::Expire("s:2", 60_000),
                Step::HMGet("s:2", vec!["x"]),
            ]
        );
        assert_eq!(
            plan.routes[2],
            Route {
                step: 1,
                offset: 1,
                expire: Some(0)
            }
        );
        assert_eq!((plan.fused_reads, plan.fused_refreshes), (1, 1));
    }

    #[test]
    fn a_refresh_that_moves_the_index_is_never_fused_away() {
        let reindexing = |op| Command {
            reindex: true,
            ..cmd("s:1", op, true)
        };
        // After a plain refresh of the session: the PEXPIRE becomes the touch script.
        let batch = vec![cmd("s:1", get(&["a"]), true), reindexing(get(&["b"]))];
        let plan = Plan::build(&batch);
        assert_eq!(
            plan.steps,
            vec![
                Step::Touch("s:1", 60_000),
                Step::HMGet("s:1", vec!["a", "b"])
            ]
        );
        // After a write that refreshed inside its script: a touch step of its own.
        let set = Op::Set(WriteMode::Existing, vec![("a".into(), b"1".to_vec())]);
        let batch = vec![cmd("s:1", set.clone(), true), reindexing(get(&["a"]))];
        let plan = Plan::build(&batch);
        assert_eq!(plan.steps[1], Step::Touch("s:1", 60_000));
        // A write that must move the index after a read refreshed: the read's PEXPIRE moves it.
        let batch = vec![cmd("s:1", get(&["a"]), true), reindexing(set.clone())];
        let plan = Plan::build(&batch);
        assert_eq!(plan.steps[0], Step::Touch("s:1", 60_000));
        // After a write that refreshed: the second write refreshes too, in mode 'i'.
        let batch = vec![cmd("s:1", set.clone(), true), reindexing(set)];
        let plan = Plan::build(&batch);
        assert!(
            matches!(plan.steps[1], Step::Write(_, 60_000)),
            "{:?}",
            plan.steps
        );
    }

    #[test]
    fn a_write_between_two_reads_keeps_them_apart() {
        let set = Op::Set(WriteMode::Existing, vec![("a".into(), b"1".to_vec())]);
        let batch = vec![
            cmd("s:1", get(&["a"]), false),
            cmd("s:1", set, false),
            cmd("s:1", get(&["a"]), false),
        ];
        let plan = Plan::build(&batch);
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.fused_reads, 0);
    }

    #[test]
    fn replies_are_routed_back_to_fused_readers() {
        let batch = vec![
            cmd("s:1", get(&["a"]), false),
            cmd("s:1", get(&["b", "c"]), false),
        ];
        let plan = Plan::build(&batch);
        let reply = Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::Nil,
            Value::BulkString(b"3".to_vec()),
        ]);
        let answers = plan.answer(&batch, vec![reply]);
        assert_eq!(
            answers[0].as_ref().unwrap(),
            &Reply::Values(vec![Some(b"1".to_vec())])
        );
        assert_eq!(
            answers[1].as_ref().unwrap(),
            &Reply::Values(vec![None, Some(b"3".to_vec())])
        );
    }

    #[test]
    fn a_refresh_that_finds_no_session_makes_the_read_gone() {
        let batch = vec![cmd("s:1", get(&["a"]), true)];
        let plan = Plan::build(&batch);
        let answers = plan.answer(&batch, vec![Value::Int(0), Value::Array(vec![Value::Nil])]);
        assert_eq!(answers[0].as_ref().unwrap(), &Reply::Gone);
    }

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
            Reply::Entries(vec![("user".into(), b"\"ann\"".to_vec())])
        );
    }
}
