//! A batch of session commands as one Redis pipeline: which Redis command each becomes, how
//! reads of one session fuse into one `HMGET` and refreshes into one `PEXPIRE`, and how the
//! replies find their way back to each command.
//!
//! Why this file is long: about 130 of its lines are the unit tests of fusion and routing,
//! which need the plan's private steps; the rest is one job (building the steps, and routing
//! each step's answer back to its commands). The arguments of the script calls are in `args`,
//! the reading of replies into `Reply`s in `replies`.

use std::collections::HashMap;

use redis::Value;

use super::scripts::Scripts;
use crate::actor::message::{Command, Op, Reply, WriteMode};
use crate::backend::BatchReplies;
use crate::error::Error;
use crate::stats::Tally;

mod args;
mod replies;

use args::{call_args, write_args};
use replies::{bytes, entries, revoked_reply, server_error, sessions_reply, write_reply};

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

    pub(super) fn count(&self, tally: &Tally) {
        tally.redis_commands(self.steps.len() as u64);
        tally.fused(self.fused_reads, self.fused_refreshes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::message::Limits;
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
}
