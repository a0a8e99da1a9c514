//! The differential suite: random batches of commands run on a Redis engine (standalone or
//! cluster) and on the memory backend must get the same replies. This checks the memory
//! backend's semantics and, because batches are sent together, the Redis backend's fusion
//! (merged reads, deduplicated refreshes) and, on a cluster, its split of a batch into one
//! pipeline per node, against a backend that has none. Compare-and-set expects a field absent,
//! what a reply last showed there, or a value never written, so that it both matches and
//! misses; setting a time to idle adds a metadata field that the key limits must not count.
//!
//! Keys carry hash tags (`session:{<tag>}:<name>`), and a renew keeps its key's tag, so the
//! suite runs unchanged on a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use circumflex_session::testing::{self, Command, Handle, Limits, Op, Reply, WriteMode};
use circumflex_session::{Error, MemoryBackend, SessionEngine};
use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TTL: Duration = Duration::from_secs(600);
const FIELDS: [&str; 5] = ["a", "b", "c", "n", "m"];

fn random_fields(rng: &mut StdRng) -> Vec<String> {
    let count = rng.random_range(1..=3);
    (0..count)
        .map(|_| FIELDS[rng.random_range(0..FIELDS.len())].to_owned())
        .collect()
}

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..3) {
        0 => rng.random_range(-5i64..5).to_string().into_bytes(),
        1 => b"\"text\"".to_vec(),
        _ => format!("[{}]", rng.random_range(0..100)).into_bytes(),
    }
}

fn random_mode(rng: &mut StdRng) -> WriteMode {
    if rng.random_bool(0.3) {
        WriteMode::Create {
            created: 7,
            ttl: TTL,
        }
    } else {
        WriteMode::Existing
    }
}

/// The value each field of each key was last seen to hold, in a reply or by a write that
/// succeeded: a compare-and-set's "right" expected value (right unless a command since
/// changed it, which is fine: then it is one more wrong one).
type Seen = BTreeMap<(Arc<str>, String), Vec<u8>>;

/// Learns from one batch's replies what its fields hold.
fn learn(seen: &mut Seen, batch: &[Command], replies: &[Result<Reply, String>]) {
    for (command, reply) in batch.iter().zip(replies) {
        let key = &command.key;
        let mut saw = |field: &str, value: Option<&Vec<u8>>| match value {
            Some(value) => {
                seen.insert((key.clone(), field.to_owned()), value.clone());
            }
            None => {
                seen.remove(&(key.clone(), field.to_owned()));
            }
        };
        match (&command.op, reply) {
            (Op::Get(fields), Ok(Reply::Values(values))) => {
                for (field, value) in fields.iter().zip(values) {
                    saw(field, value.as_ref());
                }
            }
            (Op::Entries, Ok(Reply::Entries(entries))) => {
                for (field, value) in entries {
                    saw(field, Some(value));
                }
            }
            (Op::Set(_, pairs), Ok(Reply::Done)) => {
                for (field, value) in pairs {
                    saw(field, Some(value));
                }
            }
            (Op::CompareAndSet(_, field, _, new), Ok(Reply::Bool(true))) => saw(field, Some(new)),
            (Op::CompareAndSet(_, field, ..), Ok(Reply::Values(found))) => {
                saw(field, found.first().and_then(Option::as_ref))
            }
            _ => {}
        }
    }
}

/// A compare-and-set's field and what it expects there: absent, what a field of the key was
/// last seen to hold, or a value no command ever writes.
fn random_swap(rng: &mut StdRng, seen: &Seen, key: &Arc<str>) -> (String, Option<Vec<u8>>) {
    let known: Vec<(&String, &Vec<u8>)> = seen
        .range((key.clone(), String::new())..)
        .take_while(|((k, _), _)| k == key)
        .map(|((_, field), value)| (field, value))
        .collect();
    let field = FIELDS[rng.random_range(0..FIELDS.len())].to_owned();
    match rng.random_range(0..3) {
        0 => (field, None),
        1 if !known.is_empty() => {
            let (field, value) = known[rng.random_range(0..known.len())];
            (field.clone(), Some(value.clone()))
        }
        _ => (field, Some(b"\"never written\"".to_vec())),
    }
}

fn random_command(
    rng: &mut StdRng,
    keys: &mut Vec<Arc<str>>,
    renames: &mut u32,
    seen: &Seen,
) -> Command {
    let key = keys[rng.random_range(0..keys.len())].clone();
    let refresh = rng.random_bool(0.5).then_some(TTL);
    let op = match rng.random_range(0..12) {
        0 | 1 => Op::Get(random_fields(rng).into_iter().collect()),
        2 => Op::Entries,
        3 => {
            let mode = random_mode(rng);
            let pairs = random_fields(rng)
                .into_iter()
                .map(|f| (f, random_value(rng)))
                .collect();
            Op::Set(mode, pairs)
        }
        4 => Op::Remove(random_fields(rng)),
        5 => Op::Incr(
            random_mode(rng),
            FIELDS[rng.random_range(0..FIELDS.len())].to_owned(),
            rng.random_range(-3..4),
        ),
        6 => Op::SetIfAbsent(
            random_mode(rng),
            FIELDS[rng.random_range(0..FIELDS.len())].to_owned(),
            random_value(rng),
        ),
        7 => Op::Touch,
        8 if rng.random_bool(0.3) => Op::Invalidate,
        9 => {
            let (field, expected) = random_swap(rng, seen, &key);
            Op::CompareAndSet(random_mode(rng), field, expected, random_value(rng))
        }
        10 => Op::SetTti {
            mode: random_mode(rng),
            tti: Duration::from_secs(rng.random_range(1..=3600)),
            ttl: TTL,
        },
        _ => {
            *renames += 1;
            // The new key keeps the old one's hash tag, as a renewed session's does.
            let tag = key
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map_or("", |(tag, _)| tag);
            let to: Arc<str> = Arc::from(format!("session:{{{tag}}}:r{renames}"));
            keys.push(to.clone());
            Op::Renew { to, ttl: TTL }
        }
    };
    // Limits small enough that random writes hit them: both backends must refuse alike.
    let limits = if rng.random_bool(0.4) {
        Limits {
            max_keys: rng.random_range(1..=4),
            max_bytes: rng.random_range(4..=24),
        }
    } else {
        Limits::default()
    };
    Command {
        key,
        op,
        refresh,
        limits,
        reindex: false,
    }
}

/// A reply in a form both backends agree on: entries sorted, errors by kind, except that a
/// size refusal must name the same sizes.
fn normalise(result: Result<Reply, Error>) -> Result<Reply, String> {
    match result {
        Ok(Reply::Entries(mut entries)) => {
            entries.sort();
            Ok(Reply::Entries(entries))
        }
        Ok(reply) => Ok(reply),
        Err(e @ Error::SessionFull { .. }) => Err(e.to_string()),
        Err(e) => Err(e.kind().to_owned()),
    }
}

async fn run_batch(actor: &Handle, batch: &[Command]) -> Vec<Result<Reply, String>> {
    join_all(batch.iter().cloned().map(|c| actor.call(c)))
        .await
        .into_iter()
        .map(normalise)
        .collect()
}

/// Runs the random batches on `redis` and on a fresh memory backend, and compares every reply.
pub async fn random_batches_agree_with_memory(redis: SessionEngine) {
    let memory = SessionEngine::new(MemoryBackend::new());
    let (redis_actor, memory_actor) = (testing::start(&redis), testing::start(&memory));
    let mut compared = 0;
    let mut refused = 0;
    let (mut swapped_on_match, mut mismatched, mut tti_set) = (0, 0, 0);
    for seed in 1..=8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        // Fresh key names per seed, so earlier seeds' sessions do not interfere.
        let mut keys: Vec<Arc<str>> = (0..4)
            .map(|i| Arc::from(format!("session:{{{seed}s{i}}}:k")))
            .collect();
        let mut renames = 1000 * seed as u32;
        let mut seen = Seen::new();
        for round in 0..300 {
            let size = rng.random_range(1..=12);
            let batch: Vec<Command> = (0..size)
                .map(|_| random_command(&mut rng, &mut keys, &mut renames, &seen))
                .collect();
            let from_redis = run_batch(&redis_actor, &batch).await;
            let from_memory = run_batch(&memory_actor, &batch).await;
            let shown: Vec<String> = batch
                .iter()
                .map(|c| format!("{} {:?} refresh={}", c.key, c.op, c.refresh.is_some()))
                .collect();
            assert_eq!(
                from_redis, from_memory,
                "seed {seed}, round {round}, batch {shown:#?}"
            );
            learn(&mut seen, &batch, &from_redis);
            compared += batch.len();
            for (command, reply) in batch.iter().zip(&from_redis) {
                match (&command.op, reply) {
                    (Op::CompareAndSet(_, _, Some(_), _), Ok(Reply::Bool(true))) => {
                        swapped_on_match += 1
                    }
                    (Op::CompareAndSet(..), Ok(Reply::Values(_))) => mismatched += 1,
                    (Op::SetTti { .. }, Ok(Reply::Done)) => tti_set += 1,
                    _ => {}
                }
            }
            refused += from_redis
                .iter()
                .filter(|r| matches!(r, Err(e) if e.starts_with("session is full")))
                .count();
        }
    }
    assert!(compared > 10_000, "only {compared} commands compared");
    assert!(refused > 100, "only {refused} writes hit a size limit");
    assert!(
        swapped_on_match > 40 && mismatched > 40 && tti_set > 40,
        "compare-and-set matched a value {swapped_on_match} times and missed {mismatched} \
         times; a time to idle was set {tti_set} times"
    );
    let stats = redis.stats();
    assert!(
        stats.fused_reads > 0 && stats.fused_refreshes > 0,
        "the batches exercised fusion: {stats:?}"
    );
}
