//! Redis Cluster: a batch split into one pipeline per primary, sent concurrently, with every
//! redirect followed per command.
//!
//! Why this file is long: a third of it is this documentation of the design, and the rest is
//! one job that does not split well: the rounds of sending, and for each reply the decision of
//! where (and whether) its command goes next. The slot map and the reading of replies have
//! files of their own (`topology`, `reply`).
//!
//! # A batch on a cluster
//! The batch becomes the same steps as on a standalone server (`plan`: fused reads, one TTL
//! refresh per session). Each step has one key, or two that share a hash tag (a renew keeps
//! the session's tag), so each step has one slot: CRC16/XMODEM of the tag, modulo 16384. The
//! steps are grouped by the primary that owns their slot, in batch order, and each group goes
//! out as one pipeline on a pooled connection to that primary; the pipelines are sent
//! concurrently (`join_all`). All the steps of one session share a slot, so they travel in one
//! pipeline, in order.
//!
//! **Cost:** one round trip per primary the batch touches, all in parallel, so about one round
//! trip of latency; plus, only when needed, a round of resends after `MOVED`, `ASK`,
//! `TRYAGAIN`, `NOSCRIPT` or a lost connection, which carries only the affected steps (one
//! pipeline per node they go to; [`MAX_ROUNDS`] rounds at most). `StatsSnapshot::round_trips`
//! counts the pipelines, so `redis_commands / round_trips` is the batch size per node. In the
//! cluster tests, 100 concurrent requests made one batch of three pipelines (one per primary,
//! 67 commands each), and during a reshard of 1200 slots under load about 230 commands were
//! redirected while some 45,000 increments and as many reads ran.
//!
//! # Replies that are not answers
//! Each step's reply is read on its own (`reply::classify`):
//! - `MOVED <slot> <node>`: the command did not run. The map records the new owner, the step
//!   is sent there, and a refresh of the whole map starts in the background: a reshard moves
//!   slots in bulk.
//! - `ASK <slot> <node>`: the command did not run; `ASKING` and the step go to that node, each
//!   step with its own `ASKING` (a single one would let the pipeline's next command create a
//!   key on the importing node that the migration then collides with).
//! - `TRYAGAIN` (a renew, whose two keys are in a slot being migrated and only one has moved):
//!   the command did not run; it is sent again after 10, 20, then 40 ms, then it fails with
//!   [`Error::Unavailable`].
//! - `NOSCRIPT` (a primary that restarted or was promoted): the next pipeline to that node
//!   starts with `SCRIPT LOAD`s, and carries the step again.
//! - `CLUSTERDOWN` (the cluster lost a majority, or the slot is not served): that command
//!   fails with [`Error::Unavailable`]; the others of the batch are unaffected.
//! - After [`MAX_ROUNDS`] rounds a step still redirected fails with [`Error::Unavailable`].
//!
//! Resending after any of these is safe because the reply says the command did not run.
//! When a step is sent again, the later steps of its session go where it goes, after it; those
//! that already ran are sent again too if they are reads or refreshes (so a read still sees
//! the write before it), while a write that ran keeps its reply (it cannot run twice). Other
//! sessions' steps, in the same slot or not, go where their own replies say.
//!
//! # A node that fails
//! - No connection to it (refused, or every pooled connection dead, found before anything was
//!   sent): nothing ran. The slot map is refreshed (awaited, rate-limited), and the steps go to
//!   the new owner if there is one, else fail with [`Error::Unavailable`]. The pools of
//!   cluster nodes report a refused connection at once instead of retrying until
//!   `connect_timeout`, so a dead primary costs its own sessions a 503 and nobody else a wait.
//! - The connection died with the pipeline in flight: its writes may have run and fail with
//!   [`Error::Unavailable`]; its reads, refreshes and logouts are sent again once, after a
//!   refresh of the map (to the promoted replica, once there is one).
//! - Anything else (a response timeout, a refusal such as `LOADING`): that node's steps fail
//!   with [`Error::Unavailable`], and a refresh starts in the background.
//!
//! Commands on the other primaries succeed in each case. A primary that hangs instead of
//! refusing holds up the whole batch until `response_timeout`, as the batch is answered as a
//! whole (and a refresh of the map, which waits for every node's answer, as long).
//!
//! Replication is asynchronous: a write a primary acknowledged just before it died may be
//! missing on the replica that replaces it (`WAIT` is not used). The failover tests count such
//! losses; on loopback they found none.
//!
//! # Why our own pipelines and slot map, not redis-rs's cluster client
//! Measured on a real cluster (BENCHMARKS.md, section 7; redis 1.8.1): `route_pipeline`
//! redirects or retries a *whole* pipeline on the first `MOVED`/`ASK` it meets, so during a
//! reshard commands ran up to 9 times for one call, or ran and reported failure (438-492
//! failed, all of which had run, and 3469-3895 extra runs, in 3 runs under load); hash-tag
//! buckets of one slot per pipeline made `redis-cli --cluster reshard` abort in 3 of 5 runs
//! (one `ASKING` before a whole pipeline created keys on the target); fred was about 2.5×
//! slower and stopped answering under `ASK`. Own per-node pipelines with per-command
//! redirects were the only variant with no failure and no duplicate run, at the speed of
//! `route_pipeline`. The slot map is ours too: redis-rs keeps its own private and rebuilds it
//! only when its own connections see `MOVED` (an I/O error only reconnects that node), while
//! a failover is noticed here, on our connections, and must refresh the map on demand.
//! `CLUSTER SLOTS` on the pools we already have costs one small round trip per refresh, and
//! every node, seed or discovered, gets the URL's settings (user, password, TLS) through the
//! same `client` code as a standalone server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use redis::Value;

use super::connections::PipelineFailure;
use super::plan::Plan;
use super::scripts::Scripts;
use crate::actor::message::Command;
use crate::backend::BatchReplies;
use crate::config::RedisConfig;
use crate::error::{Error, StoreError};
use crate::stats::Tally;

mod reply;
mod topology;

use reply::{classify, Verdict};
pub(crate) use topology::slot;
use topology::{Node, Topology};

/// Most times one step is sent: the first time, then resends after redirects, `TRYAGAIN`,
/// `NOSCRIPT` or a lost connection.
const MAX_ROUNDS: u8 = 5;
/// Most resends of one step after `TRYAGAIN`.
const TRYAGAIN_RETRIES: u8 = 3;
/// The pause before the first resend after `TRYAGAIN`; it doubles each time.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(10);

/// Sessions on a Redis Cluster.
#[derive(Debug)]
pub(super) struct Cluster {
    topology: Arc<Topology>,
}

/// Where a step goes in the next round.
#[derive(Clone)]
enum Target {
    /// The primary of its slot in the map.
    Owner,
    /// The primary of its slot, unless the map still names this node, which could not be
    /// reached: then the step fails with the error.
    OwnerOtherThan(Arc<Node>, Error),
    /// This node; after `ASKING` when the flag is set.
    Node(Arc<Node>, bool),
}

/// A step still to send.
#[derive(Clone)]
struct Pending {
    step: usize,
    target: Target,
    /// The node lost the scripts: load them before the step.
    load: bool,
    tryagain: u8,
    /// Already sent again after its connection died.
    replayed: bool,
    /// Already waited for a refresh of the map because its slot had no known primary.
    unplaced: bool,
    /// Sent at least once: sending it again counts as another Redis command.
    sent: bool,
}

impl Pending {
    fn new(step: usize) -> Self {
        Self {
            step,
            target: Target::Owner,
            load: false,
            tryagain: 0,
            replayed: false,
            unplaced: false,
            sent: false,
        }
    }

    fn to(&self, target: Target) -> Self {
        Self {
            target,
            load: false,
            ..self.clone()
        }
    }
}

/// One node's pipeline in a round.
struct Part {
    node: Arc<Node>,
    /// The steps, in batch order, each with whether it goes after `ASKING`.
    steps: Vec<(Pending, bool)>,
    load: bool,
}

/// How a node's pipeline failed as a whole.
enum Failure {
    /// Nothing was sent: no live connection.
    NotSent(Error),
    /// The connection died after the pipeline was sent: some steps may have run.
    Lost(Error),
    /// Anything else: a response timeout, a garbled reply, a refusal.
    Failed(Error),
}

/// What every round of one batch reads: the plan and each step's slot.
struct Round<'p, 'a> {
    plan: &'p Plan<'a>,
    slots: &'p [u16],
    tally: &'p Tally,
}

/// What the batch's steps answered so far: a reply, or an error that fails the step.
struct Answers {
    values: Vec<Value>,
    failed: HashMap<usize, Error>,
}

/// What one round left to do.
#[derive(Default)]
struct Next {
    pending: Vec<Pending>,
    /// A node could not be reached: refresh the map before sending again.
    refresh_first: bool,
    /// A redirect or an outage: refresh the map in the background.
    refresh_soon: bool,
    /// A step met `TRYAGAIN`: pause before sending again.
    pause: Option<Duration>,
}

impl Cluster {
    pub(super) fn new(config: &RedisConfig, seeds: &[String]) -> Result<Self, Error> {
        Ok(Self {
            topology: Arc::new(Topology::new(config, seeds)?),
        })
    }

    /// Loads the slot map now and PINGs every primary.
    pub(super) async fn check(&self, prefix: &str, scripts: &Scripts) -> Result<(), Error> {
        self.topology.refresh(true).await?;
        let unserved = self.topology.unserved();
        if unserved > 0 {
            return Err(Error::unavailable(StoreError::new(format!(
                "{unserved} of the cluster's 16384 hash slots have no primary"
            ))));
        }
        let primaries = self.topology.primaries();
        let probes = join_all(primaries.iter().map(|node| async move {
            let base = self.probe_base(prefix, node).ok_or_else(|| {
                node.error(Error::unavailable(StoreError::new(
                    "no probe key found for a slot of this primary",
                )))
            })?;
            node.connections
                .probe(&base, scripts.invalidate.get_hash())
                .await
                .map_err(|e| node.error(e))
        }))
        .await;
        probes.into_iter().collect()
    }

    /// The stem of keys no session has (`<prefix>:{check<n>}`: a session's tag has four hex
    /// characters) in a slot that `node` owns. A primary owns at least one slot of the 16384,
    /// so about 16384 tries at most find one: CRC16 spreads consecutive names over every slot.
    fn probe_base(&self, prefix: &str, node: &Arc<Node>) -> Option<String> {
        (0..1 << 20)
            .map(|n| format!("{prefix}:{{check{n}}}"))
            .find(|key| {
                self.topology
                    .owners(std::iter::once(slot(key.as_bytes())))
                    .first()
                    .and_then(Option::as_ref)
                    .is_some_and(|owner| Arc::ptr_eq(owner, node))
            })
    }

    /// Runs a batch: one pipeline per primary, concurrently, then resends (see the module doc).
    pub(super) async fn execute(
        &self,
        batch: &[Command],
        out: &mut BatchReplies,
        tally: &Tally,
        scripts: &Scripts,
    ) -> Result<(), Error> {
        // No fast writes on a cluster: a redirection inside a MULTI would need ASKING per command.
        let plan = Plan::build(batch, false);
        plan.count(tally);
        let slots: Vec<u16> = (0..plan.len())
            .map(|step| slot(plan.key(step).as_bytes()))
            .collect();
        let round = Round {
            plan: &plan,
            slots: &slots,
            tally,
        };
        let mut answers = Answers {
            values: vec![Value::Nil; plan.len()],
            failed: HashMap::new(),
        };
        let mut next = Next {
            pending: (0..plan.len()).map(Pending::new).collect(),
            ..Next::default()
        };
        for _ in 0..MAX_ROUNDS {
            if next.pending.is_empty() {
                break;
            }
            if next.refresh_soon {
                self.topology.refresh_soon();
            }
            if next.refresh_first {
                // Its error is the one the unplaced steps get (see `unserved_error`).
                let _ = self.topology.refresh(false).await;
            }
            if let Some(pause) = next.pause {
                tokio::time::sleep(pause).await;
            }
            let (mut parts, unplaced) = self.place(
                std::mem::take(&mut next.pending),
                &slots,
                &mut answers.failed,
            );
            let mut resent = 0;
            for (pending, _) in parts.iter_mut().flat_map(|p| p.steps.iter_mut()) {
                resent += u64::from(pending.sent);
                pending.sent = true;
            }
            tally.redis_commands(resent);
            tally.round_trips(parts.len() as u64);
            let outcomes = join_all(parts.iter().map(|part| send(part, &plan, scripts))).await;
            next = Next {
                refresh_first: !unplaced.is_empty(),
                pending: unplaced,
                ..Next::default()
            };
            for (part, outcome) in parts.into_iter().zip(outcomes) {
                self.settle(part, outcome, &round, &mut answers, &mut next);
            }
        }
        if next.refresh_soon {
            self.topology.refresh_soon();
        }
        for pending in next.pending {
            let slot = slots[pending.step];
            let error = match pending.target {
                Target::OwnerOtherThan(_, error) => error,
                Target::Owner if pending.unplaced => self.topology.unserved_error(slot),
                _ => Error::unavailable(StoreError::new(format!(
                    "hash slot {slot} still redirected after {MAX_ROUNDS} attempts"
                ))),
            };
            answers.failed.insert(pending.step, error);
        }
        plan.answer_with(batch, answers.values, &answers.failed, out);
        Ok(())
    }

    /// Groups the steps by the node they go to, each group in batch order. A step whose slot
    /// has no known primary waits for a refresh of the map, once (returned apart), then fails.
    fn place(
        &self,
        mut pending: Vec<Pending>,
        slots: &[u16],
        failed: &mut HashMap<usize, Error>,
    ) -> (Vec<Part>, Vec<Pending>) {
        pending.sort_by_key(|p| p.step);
        let owners = self.topology.owners(pending.iter().map(|p| slots[p.step]));
        let mut parts: Vec<Part> = Vec::new();
        let mut unplaced = Vec::new();
        for (pending, owner) in pending.into_iter().zip(owners) {
            let (node, asking) = match (&pending.target, owner) {
                (Target::Node(node, asking), _) => (node.clone(), *asking),
                (Target::OwnerOtherThan(down, error), owner) => match owner {
                    Some(owner) if !Arc::ptr_eq(&owner, down) => (owner, false),
                    _ => {
                        failed.insert(pending.step, error.clone());
                        continue;
                    }
                },
                (Target::Owner, Some(owner)) => (owner, false),
                (Target::Owner, None) if !pending.unplaced => {
                    unplaced.push(Pending {
                        unplaced: true,
                        ..pending
                    });
                    continue;
                }
                (Target::Owner, None) => {
                    failed.insert(
                        pending.step,
                        self.topology.unserved_error(slots[pending.step]),
                    );
                    continue;
                }
            };
            let load = pending.load;
            match parts.iter_mut().find(|p| Arc::ptr_eq(&p.node, &node)) {
                Some(part) => {
                    part.load |= load;
                    part.steps.push((pending, asking));
                }
                None => parts.push(Part {
                    node,
                    steps: vec![(pending, asking)],
                    load,
                }),
            }
        }
        (parts, unplaced)
    }

    /// Records what one node's pipeline answered, and what must be sent again.
    fn settle(
        &self,
        part: Part,
        outcome: Result<Vec<Value>, Failure>,
        round: &Round<'_, '_>,
        answers: &mut Answers,
        next: &mut Next,
    ) {
        let Round { plan, slots, tally } = *round;
        let Answers { values, failed } = answers;
        let replies = match outcome {
            Ok(replies) => replies,
            Err(Failure::NotSent(error)) => {
                // Nothing ran: every step may go to a new owner, if the map finds one.
                next.refresh_first = true;
                let down = Target::OwnerOtherThan(part.node.clone(), error);
                next.pending
                    .extend(part.steps.iter().map(|(p, _)| p.to(down.clone())));
                return;
            }
            Err(Failure::Lost(error)) => {
                // Writes may have run; reads, refreshes and logouts may run again, once.
                next.refresh_first = true;
                for (pending, _) in part.steps {
                    if plan.replay_safe(pending.step) && !pending.replayed {
                        next.pending.push(Pending {
                            replayed: true,
                            ..pending.to(Target::Owner)
                        });
                    } else {
                        failed.insert(pending.step, error.clone());
                    }
                }
                return;
            }
            Err(Failure::Failed(error)) => {
                next.refresh_soon = true;
                for (pending, _) in part.steps {
                    failed.insert(pending.step, error.clone());
                }
                return;
            }
        };
        // The first step of each session (key) that is sent again: the session's later steps
        // follow it, so that they stay in order.
        let mut again: HashMap<&str, Pending> = HashMap::new();
        for ((pending, asking), value) in part.steps.into_iter().zip(replies) {
            let step = pending.step;
            let (key, slot) = (plan.key(step), slots[step]);
            let verdict = classify(&value);
            let retry = match verdict {
                Verdict::Done => {
                    match again.get(key) {
                        // It ran after an earlier step of its session that did not: a read or
                        // a refresh runs again after it; a write that ran keeps its reply.
                        Some(first) if plan.replay_safe(step) => {
                            next.pending.push(Pending {
                                target: first.target.clone(),
                                load: first.load,
                                ..pending
                            });
                        }
                        _ => values[step] = value,
                    }
                    continue;
                }
                Verdict::ClusterDown(text) => {
                    next.refresh_soon = true;
                    let error = part.node.error(Error::unavailable(StoreError::new(text)));
                    failed.insert(step, error);
                    continue;
                }
                Verdict::Moved { slot, host, port } => {
                    next.refresh_soon = true;
                    tally.redirect();
                    match self.topology.moved(slot, part.node.or_self(&host), port) {
                        Ok(node) => pending.to(Target::Node(node, false)),
                        Err(error) => {
                            failed.insert(step, error);
                            continue;
                        }
                    }
                }
                Verdict::Ask { host, port } => {
                    tally.redirect();
                    match self.topology.node(part.node.or_self(&host), port) {
                        Ok(node) => pending.to(Target::Node(node, true)),
                        Err(error) => {
                            failed.insert(step, error);
                            continue;
                        }
                    }
                }
                Verdict::TryAgain => {
                    if pending.tryagain >= TRYAGAIN_RETRIES {
                        failed.insert(
                            step,
                            part.node.error(Error::unavailable(StoreError::new(format!(
                                "TRYAGAIN: hash slot {slot} is being migrated"
                            )))),
                        );
                        continue;
                    }
                    let pause = TRYAGAIN_PAUSE * 2u32.pow(u32::from(pending.tryagain));
                    next.pause = next.pause.max(Some(pause));
                    Pending {
                        tryagain: pending.tryagain + 1,
                        ..pending.to(Target::Owner)
                    }
                }
                Verdict::NoScript => Pending {
                    load: true,
                    ..pending.to(Target::Node(part.node.clone(), asking))
                },
            };
            let retry = match again.get(key) {
                // A later step of a session already sent again follows the first.
                Some(first) => Pending {
                    load: retry.load || first.load,
                    target: first.target.clone(),
                    ..retry
                },
                None => {
                    again.insert(key, retry.clone());
                    retry
                }
            };
            next.pending.push(retry);
        }
    }
}

/// Sends one node's pipeline: its steps in order, each after `ASKING` where asked, after the
/// `SCRIPT LOAD`s if the node lost the scripts. Returns one reply per step.
async fn send(part: &Part, plan: &Plan<'_>, scripts: &Scripts) -> Result<Vec<Value>, Failure> {
    let node = &part.node;
    let mut conn = node
        .connections
        .live()
        .await
        .map_err(|e| Failure::NotSent(node.error(e)))?;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    if part.load {
        Scripts::load(&mut pipe);
    }
    let mut expected = if part.load { Scripts::LOAD_COMMANDS } else { 0 };
    for (pending, asking) in &part.steps {
        if *asking {
            pipe.cmd("ASKING");
            expected += 1;
        }
        plan.encode(pending.step, &mut pipe, scripts);
        expected += 1;
    }
    let replies = node
        .connections
        .send(&mut conn, &pipe, expected)
        .await
        .map_err(|failure| match failure {
            PipelineFailure::Lost(e) => Failure::Lost(node.error(e)),
            PipelineFailure::Failed(e) => Failure::Failed(node.error(e)),
        })?;
    let mut replies = replies.into_iter();
    if part.load {
        replies.by_ref().take(Scripts::LOAD_COMMANDS).for_each(drop);
    }
    let mut out = Vec::with_capacity(part.steps.len());
    for (_, asking) in &part.steps {
        if *asking {
            replies.next();
        }
        out.push(replies.next().unwrap_or(Value::Nil));
    }
    Ok(out)
}
