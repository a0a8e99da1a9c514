//! The differential suite: random batches of commands run on a Redis engine (standalone or
//! cluster) and on the memory backend must get the same replies. This checks the memory
//! backend's semantics and, because batches are sent together, the Redis backend's fusion
//! (merged reads, deduplicated refreshes) and, on a cluster, its split of a batch into one
//! pipeline per node, against a backend that has none.
//!
//! Keys carry hash tags (`session:{<tag>}:<name>`), and a renew keeps its key's tag, so the
//! suite runs unchanged on a cluster.

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

fn random_command(rng: &mut StdRng, keys: &mut Vec<Arc<str>>, renames: &mut u32) -> Command {
    let key = keys[rng.random_range(0..keys.len())].clone();
    let refresh = rng.random_bool(0.5).then_some(TTL);
    let op = match rng.random_range(0..10) {
        0 | 1 => Op::Get(random_fields(rng)),
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
    for seed in 1..=8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        // Fresh key names per seed, so earlier seeds' sessions do not interfere.
        let mut keys: Vec<Arc<str>> = (0..4)
            .map(|i| Arc::from(format!("session:{{{seed}s{i}}}:k")))
            .collect();
        let mut renames = 1000 * seed as u32;
        for round in 0..300 {
            let size = rng.random_range(1..=12);
            let batch: Vec<Command> = (0..size)
                .map(|_| random_command(&mut rng, &mut keys, &mut renames))
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
            compared += batch.len();
            refused += from_redis
                .iter()
                .filter(|r| matches!(r, Err(e) if e.starts_with("session is full")))
                .count();
        }
    }
    assert!(compared > 10_000, "only {compared} commands compared");
    assert!(refused > 100, "only {refused} writes hit a size limit");
    let stats = redis.stats();
    assert!(
        stats.fused_reads > 0 && stats.fused_refreshes > 0,
        "the batches exercised fusion: {stats:?}"
    );
}
