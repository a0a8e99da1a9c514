//! A batch of session commands as one Redis pipeline: which Redis command each becomes, how
//! reads of one session fuse into one `HMGET` and refreshes into one `PEXPIRE`, and how the
//! replies find their way back to each command.
//!
//! Why this file is long: about 280 of its lines are the unit tests of fusion, routing and the
//! fast write's steps, which need the plan's private steps; the rest is one job (building the
//! steps, and routing each step's answer back to its commands, a fast write's follow-up
//! included). The arguments of the script calls are in `args`, the reading of replies into
//! `Reply`s in `replies`, the fast write's commands and outcomes in `fast`.

use std::collections::HashMap;

use redis::Value;
use smallvec::SmallVec;

use super::scripts::Scripts;
use crate::actor::message::{Command, Op, Reply, WriteMode, META_CREATED};
use crate::backend::BatchReplies;
use crate::error::Error;
use crate::stats::Tally;

mod args;
mod fast;
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
    /// `\0created` and the fields read: up to three inline, the common read of a few keys.
    HMGet(&'a str, SmallVec<[&'a str; 4]>),
    HGetAll(&'a str),
    /// The write script, with the TTL refresh it carries (0: none).
    Write(&'a Command, u64),
    /// A `set` as one `MULTI` of plain commands (see `fast`), with its TTL refresh (0: none).
    FastSet(&'a Command, u64),
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
            Step::Write(command, _) | Step::FastSet(command, _) | Step::Call(command) => {
                &command.key
            }
        }
    }
}

impl Step<'_> {
    /// How many Redis commands the step sends.
    fn commands(&self) -> usize {
        match self {
            Step::FastSet(..) => fast::COMMANDS,
            _ => 1,
        }
    }
}

/// A fast write's work after its `MULTI` (see [`Plan::fast_follow_ups`]): deleting its orphan,
/// or settling it (never [`fast::Outcome::Done`]).
#[derive(Debug)]
pub(super) struct FollowUp<'a> {
    step: usize,
    command: &'a Command,
    outcome: fast::Outcome,
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

/// The most bytes an integer argument takes (`u64::MAX` in decimal).
const INT: usize = 20;

/// A command on `key`, sized up front for `args` more arguments of at most `bytes` bytes in
/// all: built with two allocations, where growing its buffers took one per doubling
/// (`alloc_count --redis-url`, BENCHMARKS.md §10). The pipeline's `arg` appends the rest.
fn keyed(name: &str, key: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(2 + args, name.len() + key.len() + bytes);
    cmd.arg(name).arg(key);
    cmd
}

fn millis(d: std::time::Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl<'a> Plan<'a> {
    /// Plans a batch; `fast_writes` lets plain `set`s skip the write script (see `fast`).
    pub(super) fn build(batch: &'a [Command], fast_writes: bool) -> Self {
        let mut plan = Plan {
            steps: Vec::with_capacity(batch.len() + 4),
            routes: Vec::with_capacity(batch.len()),
            fused_reads: 0,
            fused_refreshes: 0,
        };
        // foldhash, not SipHash: the keys are session ids this crate issued (see Cargo.toml).
        // A batch of one command (a quiet server's usual batch) needs no map at all.
        let mut sessions: HashMap<&str, SessionState, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(
                if batch.len() > 1 { batch.len() } else { 0 },
                Default::default(),
            );
        let mut only = SessionState::default();
        for command in batch {
            let key: &str = &command.key;
            let state = match batch.len() {
                1 => &mut only,
                _ => sessions.entry(key).or_default(),
            };
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
                        existing.extend(fields.iter());
                        plan.fused_reads += 1;
                        Route {
                            step,
                            offset,
                            expire: state.expire,
                        }
                    }
                    None => {
                        // `\0created` first: a hash without it is no session (see `fast`).
                        let step = plan.steps.len();
                        let mut read = SmallVec::with_capacity(fields.len() + 1);
                        read.push(META_CREATED);
                        read.extend(fields.iter());
                        plan.steps.push(Step::HMGet(key, read));
                        state.open_read = Some(step);
                        Route {
                            step,
                            offset: 1,
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
                    plan.no_fast_writes(key);
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
                        plan.no_fast_writes(key);
                    }
                    let refresh_ms = match refresh {
                        Some(ttl) => {
                            state.refreshed = true;
                            millis(ttl)
                        }
                        None => 0,
                    };
                    if fast_writes && fast::eligible(command, refresh_ms) {
                        plan.push(Step::FastSet(command, refresh_ms), None)
                    } else {
                        plan.push(Step::Write(command, refresh_ms), None)
                    }
                }
            };
            plan.routes.push(route);
        }
        plan
    }

    /// How many steps the plan has (one reply each, once [`fold`](Self::fold)ed).
    pub(super) fn len(&self) -> usize {
        self.steps.len()
    }

    /// How many Redis commands the pipeline holds (a fast write is several).
    pub(super) fn commands(&self) -> usize {
        self.steps.iter().map(Step::commands).sum()
    }

    /// Turns the pipeline's replies (one per command) into one per step, in place: a fast
    /// write's seven become one. Missing replies read as `Nil`.
    pub(super) fn fold(&self, mut replies: Vec<Value>) -> Vec<Value> {
        if replies.len() == self.steps.len() {
            return replies;
        }
        replies.resize(self.commands(), Value::Nil);
        let mut read = 0;
        // Step `write` reads from `read` on, and `write <= read`: every step has a reply.
        for (write, step) in self.steps.iter().enumerate() {
            let end = read + step.commands();
            replies[write] = match step.commands() {
                1 => std::mem::take(&mut replies[read]),
                _ => fast::reply_of(replies[read..end].iter_mut().map(std::mem::take)),
            };
            read = end;
        }
        replies.truncate(self.steps.len());
        replies
    }

    /// The replies of a pipeline sent twice (after `NOSCRIPT`): the second's, except for the
    /// fast writes, which ran both times and whose first replies say what they found.
    pub(super) fn keep_fast_writes(&self, first: Vec<Value>, again: Vec<Value>) -> Vec<Value> {
        self.steps
            .iter()
            .zip(first.into_iter().zip(again))
            .map(|(step, (first, again))| match step {
                Step::FastSet(..) => first,
                _ => again,
            })
            .collect()
    }

    /// Reads the fast writes' replies (one per step, see [`fold`](Self::fold)), rewriting
    /// those that are final as the write script answers, and returns the work the others
    /// still need: the orphans to delete and the writes to settle (see `fast`).
    pub(super) fn fast_follow_ups(&self, replies: &mut [Value]) -> Vec<FollowUp<'a>> {
        let mut follow_ups = Vec::new();
        for (step, (kind, reply)) in self.steps.iter().zip(replies.iter_mut()).enumerate() {
            let &Step::FastSet(command, _) = kind else {
                continue;
            };
            match fast::outcome(command, reply) {
                fast::Outcome::Done => {}
                outcome => follow_ups.push(FollowUp {
                    step,
                    command,
                    outcome,
                }),
            }
        }
        follow_ups
    }

    /// The pipeline of the follow-ups: a `DEL` per orphan, a settle script call per write to
    /// settle. Its replies, one per follow-up, go to [`settled`](Self::settled).
    pub(super) fn follow_up_pipeline(
        follow_ups: &[FollowUp],
        scripts: &Scripts,
    ) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for FollowUp {
            command, outcome, ..
        } in follow_ups
        {
            match outcome {
                fast::Outcome::Settle(before) => fast::settle(&mut pipe, command, before, scripts),
                // An orphan (a follow-up is never `Done`).
                fast::Outcome::Orphan | fast::Outcome::Done => {
                    pipe.cmd("DEL").arg(&*command.key);
                }
            }
        }
        pipe
    }

    /// Puts the settle script's answers in the place of their writes' replies (an orphan's
    /// write already answers `Gone`, whatever its `DEL` answered).
    pub(super) fn settled(follow_ups: &[FollowUp], answers: Vec<Value>, replies: &mut [Value]) {
        for (follow_up, answer) in follow_ups.iter().zip(answers) {
            if matches!(follow_up.outcome, fast::Outcome::Settle(_)) {
                replies[follow_up.step] = answer;
            }
        }
    }

    /// Counts the plan's Redis commands as they go on the wire (a fast write is seven) and its
    /// fusion.
    pub(super) fn count(&self, tally: &Tally) {
        tally.redis_commands(self.commands() as u64);
        tally.fused(self.fused_reads, self.fused_refreshes);
    }

    /// Turns the fast writes to `key` planned so far back into write scripts: a write that
    /// creates the session follows, and must not find (and adopt) an orphan of theirs in the
    /// same pipeline, before it is deleted (see `fast`). Rare: only writes that create do it.
    fn no_fast_writes(&mut self, key: &str) {
        for step in &mut self.steps {
            if let Step::FastSet(command, ms) = *step {
                if &*command.key == key {
                    *step = Step::Write(command, ms);
                }
            }
        }
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
        let mut pipe = redis::Pipeline::with_capacity(self.commands());
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
            Step::Write(..) | Step::FastSet(..) | Step::Renew(..) => false,
            Step::Call(command) => replay_safe(&command.op),
            _ => true,
        }
    }

    /// Appends one step to a pipeline.
    pub(super) fn encode(&self, step: usize, pipe: &mut redis::Pipeline, scripts: &Scripts) {
        match &self.steps[step] {
            Step::Expire(key, ms) => {
                pipe.add_command(keyed("PEXPIRE", key, 1, INT)).arg(*ms);
            }
            Step::Touch(key, ms) => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.touch.get_hash())
                    .arg(1)
                    .arg(*key)
                    .arg(*ms);
            }
            Step::Exists(key) => {
                pipe.add_command(keyed("EXISTS", key, 0, 0));
            }
            Step::Call(command) => call_args(pipe, command, scripts),
            Step::HMGet(key, fields) => {
                // Sized up front, so that a read's command is built without reallocating:
                // about 2,200 instructions before, 800 after (callgrind, BENCHMARKS.md §10).
                let bytes = fields.iter().map(|f| f.len()).sum();
                pipe.add_command(keyed("HMGET", key, fields.len(), bytes))
                    .arg(fields.as_slice());
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
            Step::FastSet(command, refresh_ms) => fast::encode(pipe, command, *refresh_ms),
        }
    }

    /// Maps the steps' replies (one per step, in step order) back to the batch's commands,
    /// pushing one answer per command onto `out`.
    pub(super) fn answer(&self, batch: &[Command], replies: Vec<Value>, out: &mut BatchReplies) {
        self.answer_with(batch, replies, &HashMap::new(), out)
    }

    /// [`answer`](Self::answer), where the steps in `failed` have no reply but an error (a
    /// cluster node that could not be reached, a slot that is not served): the commands they
    /// answer get that error. A refreshing read whose existence check failed fails too.
    pub(super) fn answer_with(
        &self,
        batch: &[Command],
        mut replies: Vec<Value>,
        failed: &HashMap<usize, Error>,
        out: &mut BatchReplies,
    ) {
        let answers = batch.iter().zip(&self.routes).map(|(command, route)| {
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
                if reads && command.refresh.is_some() && matches!(replies[expire], Value::Int(0)) {
                    return Ok(Reply::Gone);
                }
            }
            if let Value::ServerError(e) = &replies[route.step] {
                return Err(server_error(command, e));
            }
            match &command.op {
                Op::Get(fields) => {
                    // A fused HMGET answers several commands: each takes its own values
                    // out of the array, in place.
                    let Value::Array(items) = &mut replies[route.step] else {
                        return Err(Error::Server("unexpected HMGET reply".to_owned()));
                    };
                    // No `\0created`: no session, or a fast write's orphan (see `fast`).
                    if matches!(items.first(), Some(Value::Nil)) {
                        return Ok(match command.refresh {
                            Some(_) => Reply::Gone,
                            None => Reply::Values(smallvec::smallvec![None; fields.len()]),
                        });
                    }
                    match items.get_mut(route.offset..route.offset + fields.len()) {
                        Some(slice) => Ok(Reply::Values(
                            slice.iter_mut().map(|v| bytes(std::mem::take(v))).collect(),
                        )),
                        None => Err(Error::Server("unexpected HMGET reply".to_owned())),
                    }
                }
                Op::Entries => Ok(
                    match (
                        entries(std::mem::take(&mut replies[route.step])),
                        command.refresh,
                    ) {
                        (Some(entries), _) => entries,
                        (None, Some(_)) => Reply::Gone,
                        (None, None) => Reply::Entries(Vec::new()),
                    },
                ),
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
        });
        out.extend(answers);
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

    /// The plan's answers to `replies`, as the backend collects them.
    fn answer(plan: &Plan, batch: &[Command], replies: Vec<Value>) -> BatchReplies {
        let mut out = Vec::new();
        plan.answer(batch, replies, &mut out);
        out
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
        let plan = Plan::build(&batch, true);
        assert_eq!(
            plan.steps,
            vec![
                Step::Expire("s:1", 60_000),
                Step::HMGet("s:1", smallvec::smallvec![META_CREATED, "a", "b", "c"]),
                Step::Expire("s:2", 60_000),
                Step::HMGet("s:2", smallvec::smallvec![META_CREATED, "x"]),
            ]
        );
        assert_eq!(
            plan.routes[2],
            Route {
                step: 1,
                offset: 2,
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
        let plan = Plan::build(&batch, true);
        assert_eq!(
            plan.steps,
            vec![
                Step::Touch("s:1", 60_000),
                Step::HMGet("s:1", smallvec::smallvec![META_CREATED, "a", "b"])
            ]
        );
        // After a write that refreshed inside its script: a touch step of its own.
        let set = Op::Set(
            WriteMode::Existing,
            vec![("a".into(), b"1".to_vec())].into(),
        );
        let batch = vec![cmd("s:1", set.clone(), true), reindexing(get(&["a"]))];
        let plan = Plan::build(&batch, true);
        assert_eq!(plan.steps[1], Step::Touch("s:1", 60_000));
        // A write that must move the index after a read refreshed: the read's PEXPIRE moves it.
        let batch = vec![cmd("s:1", get(&["a"]), true), reindexing(set.clone())];
        let plan = Plan::build(&batch, true);
        assert_eq!(plan.steps[0], Step::Touch("s:1", 60_000));
        // After a write that refreshed: the second write refreshes too, in mode 'i'.
        let batch = vec![cmd("s:1", set.clone(), true), reindexing(set)];
        let plan = Plan::build(&batch, true);
        assert!(
            matches!(plan.steps[1], Step::Write(_, 60_000)),
            "{:?}",
            plan.steps
        );
    }

    #[test]
    fn a_write_between_two_reads_keeps_them_apart() {
        let set = Op::Set(
            WriteMode::Existing,
            vec![("a".into(), b"1".to_vec())].into(),
        );
        let batch = vec![
            cmd("s:1", get(&["a"]), false),
            cmd("s:1", set, false),
            cmd("s:1", get(&["a"]), false),
        ];
        let plan = Plan::build(&batch, true);
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.fused_reads, 0);
    }

    #[test]
    fn replies_are_routed_back_to_fused_readers() {
        let batch = vec![
            cmd("s:1", get(&["a"]), false),
            cmd("s:1", get(&["b", "c"]), false),
        ];
        let plan = Plan::build(&batch, true);
        let reply = Value::Array(vec![
            Value::BulkString(b"1700000000".to_vec()),
            Value::BulkString(b"1".to_vec()),
            Value::Nil,
            Value::BulkString(b"3".to_vec()),
        ]);
        let answers = answer(&plan, &batch, vec![reply]);
        assert_eq!(
            answers[0].as_ref().unwrap(),
            &Reply::Values(vec![Some(b"1".to_vec())].into())
        );
        assert_eq!(
            answers[1].as_ref().unwrap(),
            &Reply::Values(vec![None, Some(b"3".to_vec())].into())
        );
    }

    #[test]
    fn a_refresh_that_finds_no_session_makes_the_read_gone() {
        let batch = vec![cmd("s:1", get(&["a"]), true)];
        let plan = Plan::build(&batch, true);
        let answers = answer(
            &plan,
            &batch,
            vec![Value::Int(0), Value::Array(vec![Value::Nil])],
        );
        assert_eq!(answers[0].as_ref().unwrap(), &Reply::Gone);
    }

    #[test]
    fn a_hash_without_its_creation_stamp_reads_as_no_session() {
        // An orphan of a fast write: the PEXPIRE finds the key, but `\0created` is missing.
        let orphan = || Value::Array(vec![Value::Nil, Value::BulkString(b"1".to_vec())]);
        let batch = vec![cmd("s:1", get(&["a"]), true)];
        let plan = Plan::build(&batch, true);
        let answers = answer(&plan, &batch, vec![Value::Int(1), orphan()]);
        assert_eq!(answers[0].as_ref().unwrap(), &Reply::Gone);
        let batch = vec![cmd("s:1", get(&["a"]), false)];
        let plan = Plan::build(&batch, true);
        let answers = answer(&plan, &batch, vec![orphan()]);
        assert_eq!(
            answers[0].as_ref().unwrap(),
            &Reply::Values(vec![None].into())
        );
    }

    #[test]
    fn a_plain_set_is_a_fast_write_of_six_commands_on_standalone_only() {
        let set = Op::Set(
            WriteMode::Existing,
            vec![("a".into(), b"1".to_vec())].into(),
        );
        let batch = vec![cmd("s:1", get(&["a"]), false), cmd("s:1", set, false)];
        let plan = Plan::build(&batch, true);
        assert!(
            matches!(plan.steps[1], Step::FastSet(_, 0)),
            "{:?}",
            plan.steps
        );
        assert_eq!((plan.len(), plan.commands()), (2, 8));
        let mut pipe = plan.pipeline(&Scripts::new());
        assert_eq!(pipe.len(), 8);
        pipe.clear();
        let plan = Plan::build(&batch, false);
        assert!(
            matches!(plan.steps[1], Step::Write(_, 0)),
            "{:?}",
            plan.steps
        );
        // The replies of its commands fold into EXEC's, one per step.
        let ok = |s: &str| Value::SimpleString(s.to_owned());
        let plan = Plan::build(&batch, true);
        let exec = Value::Array(vec![Value::Int(1)]);
        let mut replies = vec![Value::Array(vec![Value::Nil, Value::Nil]), ok("OK")];
        replies.extend(std::iter::repeat_n(ok("QUEUED"), 5));
        replies.push(exec.clone());
        let folded = plan.fold(replies);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[1], exec);
    }

    #[test]
    fn fast_writes_fold_in_place_around_other_steps_and_each_command_is_sent_as_planned() {
        let set = |v: &[u8]| {
            Op::Set(
                WriteMode::Existing,
                vec![("a".into(), v.to_vec()), ("bb".into(), b"2".to_vec())].into(),
            )
        };
        let batch = vec![
            cmd("s:1", set(b"1"), false),
            cmd("s:2", get(&["x"]), false),
            cmd("s:3", set(b"3"), true),
        ];
        let plan = Plan::build(&batch, true);
        let pipe = plan.pipeline(&Scripts::new());
        let sent: Vec<Vec<Vec<u8>>> = pipe
            .cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(a) => a.to_vec(),
                        _ => b"<not a plain argument>".to_vec(),
                    })
                    .collect()
            })
            .collect();
        let words = |s: &str| s.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        let fast = |key: &str, value: &str, expire: &str| -> Vec<Vec<Vec<u8>>> {
            vec![
                words("MULTI"),
                words(&format!("HMGET {key} \0created a bb")),
                words(&format!("HSET {key} a {value} bb 2")),
                words(&format!("HINCRBY {key} \0size 5")),
                words(&format!("HLEN {key}")),
                words(&format!("PEXPIRE {key} {expire}")),
                words("EXEC"),
            ]
        };
        let mut expected = fast("s:1", "1", "60000 NX");
        expected.push(words("HMGET s:2 \0created x"));
        expected.extend(fast("s:3", "3", "60000"));
        assert_eq!(sent, expected);

        let ok = |s: &str| Value::SimpleString(s.to_owned());
        let exec = |n| Value::Array(vec![Value::Int(n)]);
        let read = Value::Array(vec![Value::Int(7), Value::Nil]);
        let mut replies = vec![ok("OK")];
        replies.extend(std::iter::repeat_n(ok("QUEUED"), 5));
        replies.extend([exec(1), read.clone(), ok("OK")]);
        replies.extend(std::iter::repeat_n(ok("QUEUED"), 5));
        replies.push(exec(3));
        assert_eq!(plan.fold(replies.clone()), vec![exec(1), read, exec(3)]);
        // A short reply (never sent by `send`, which checks the count) reads as Nil.
        replies.truncate(8);
        assert_eq!(plan.fold(replies)[2], Value::Nil);
    }

    #[test]
    fn a_write_that_creates_the_session_takes_its_earlier_fast_writes_back_to_the_script() {
        let set = |mode| Op::Set(mode, vec![("a".into(), b"1".to_vec())].into());
        let create = WriteMode::Create {
            created: 1,
            ttl: Duration::from_secs(60),
        };
        let batch = vec![
            cmd("s:1", set(WriteMode::Existing), false),
            cmd("s:2", set(WriteMode::Existing), false),
            cmd("s:1", set(create), false),
        ];
        let plan = Plan::build(&batch, true);
        assert!(matches!(plan.steps[0], Step::Write(..)), "{:?}", plan.steps);
        assert!(
            matches!(plan.steps[1], Step::FastSet(..)),
            "{:?}",
            plan.steps
        );
    }
}
