//! Engine micro-benchmark: N concurrent session reads (`HMGET` of the creation stamp and two
//! fields) on a private redis-server, four ways:
//! - `actor`: through the `SessionActor` (batched pipelines, bb8 pool underneath);
//! - `raw_pipeline`: the same N `HMGET`s written by hand as one `redis::pipe()` on one
//!   `MultiplexedConnection`, no actor: the floor for the actor's batch, so that the
//!   difference is the actor's own cost per command;
//! - `multiplexed`: one shared redis-rs `MultiplexedConnection`, used directly (redis-rs
//!   already coalesces concurrent commands on it);
//! - `bb8_checkout`: a bb8-redis pool checkout per command.
//!
//! Run: `cargo bench --bench engine` (`-- --quick`, or `-- --warm-up-time 1 --measurement-time
//! 3`, for a shorter run). Criterion reports operations per second (throughput elements); the
//! actor's average batch size per concurrency level is printed to stderr. After criterion, a
//! summary is printed to stderr from rounds timed here with `Instant` (the three variants
//! alternated, [`SUMMARY_ROUNDS`] rounds each): per level the actor's and the raw pipeline's
//! ns per read, their difference (the actor's overhead per command) and the actor's throughput
//! over the shared multiplexed connection; then the same for the same-session case. The
//! summary is skipped when the binary runs as a test (`cargo test --benches`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::rt::{System, SystemRunner};
use bb8_redis::RedisConnectionManager;
use circumflex_session::testing::{self, Command, Handle, Op, WriteMode};
use circumflex_session::{ActorConfig, RedisBackend, RedisConfig, SessionEngine};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;

const LEVELS: [usize; 4] = [1, 16, 128, 512];
const SESSIONS: usize = 1024;
/// What the baselines read: the command the actor sends for `get(["a", "b"])`, which fetches
/// the session's creation stamp first (a hash without it is no session), so that every
/// variant sends Redis the same bytes.
const READ_FIELDS: [&str; 3] = ["\0created", "a", "b"];
/// Rounds per variant and level in the summary, run in [`SUMMARY_CHUNKS`] alternating chunks.
const SUMMARY_ROUNDS: usize = 200;
const SUMMARY_CHUNKS: usize = 5;

fn session_key(i: usize) -> Arc<str> {
    Arc::from(format!("session:bench{i:04}"))
}

/// One round: `n` reads through the actor, all issued before any is awaited; `key_of(i)` picks
/// the session of read `i`.
async fn actor_round(actor: &Handle, n: usize, key_of: impl Fn(usize) -> usize) {
    let reads = (0..n).map(|i| {
        let command = Command {
            key: session_key(key_of(i)),
            op: Op::Get(["a", "b"].into_iter().collect()),
            refresh: None,
            limits: Default::default(),
            reindex: false,
        };
        actor.call(command)
    });
    for result in join_all(reads).await {
        result.expect("actor read");
    }
}

/// One round of `n` `HMGET`s on one shared multiplexed connection.
async fn multiplexed_round(
    conn: &MultiplexedConnection,
    n: usize,
    key_of: impl Fn(usize) -> usize,
) {
    let reads = (0..n).map(|i| {
        let mut conn = conn.clone();
        let key = session_key(key_of(i));
        async move {
            redis::cmd("HMGET")
                .arg(&*key)
                .arg(&READ_FIELDS[..])
                .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                .await
        }
    });
    for result in join_all(reads).await {
        result.expect("multiplexed read");
    }
}

/// One round of `n` `HMGET`s sent as one hand-written pipeline on a multiplexed connection.
async fn pipeline_round(conn: &MultiplexedConnection, n: usize, key_of: impl Fn(usize) -> usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("HMGET")
            .arg(&*session_key(key_of(i)))
            .arg(&READ_FIELDS[..]);
    }
    let replies: Vec<Vec<Option<Vec<u8>>>> = pipe
        .query_async(&mut conn.clone())
        .await
        .expect("pipelined read");
    assert_eq!(replies.len(), n);
}

/// Wall time and the bench thread's CPU time of some rounds.
#[derive(Clone, Copy, Default)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::AddAssign for Timing {
    fn add_assign(&mut self, other: Timing) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// CPU time of this thread so far (`/proc/self/schedstat`, nanoseconds): the actix system,
/// with the actor and redis-rs's connection driver, runs on the bench's own thread.
fn thread_cpu() -> Duration {
    let stat = procfs::process::Process::myself()
        .and_then(|p| p.schedstat())
        .expect("/proc/self/schedstat");
    Duration::from_nanos(stat.sum_exec_runtime)
}

/// Times `iters` rounds on the actix system, in wall and CPU time.
fn timed_cpu<F: std::future::Future<Output = ()>>(
    system: &SystemRunner,
    iters: u64,
    mut round: impl FnMut(usize) -> F,
) -> Timing {
    system.block_on(async {
        let (start, cpu) = (Instant::now(), thread_cpu());
        for it in 0..iters as usize {
            round(it).await;
        }
        Timing {
            wall: start.elapsed(),
            cpu: thread_cpu() - cpu,
        }
    })
}

/// Times `iters` rounds on the actix system (wall time, for criterion).
fn timed<F: std::future::Future<Output = ()>>(
    system: &SystemRunner,
    iters: u64,
    round: impl FnMut(usize) -> F,
) -> Duration {
    timed_cpu(system, iters, round).wall
}

fn engine_bench(c: &mut Criterion) {
    let server = support::RedisServer::start();
    let system = System::new();
    let url = server.url();

    // Sessions with two fields each.
    let engine = system.block_on(async {
        let backend = RedisBackend::connect(RedisConfig::new(url.clone()))
            .await
            .expect("redis config");
        SessionEngine::with_config(backend, ActorConfig::default()).expect("actor config")
    });
    let actor = system.block_on(async { testing::start(&engine) });
    system.block_on(async {
        let ttl = Duration::from_secs(600);
        for i in 0..SESSIONS {
            let pairs = vec![
                ("a".into(), b"\"alpha\"".to_vec()),
                ("b".into(), b"\"beta\"".to_vec()),
            ];
            let command = Command {
                key: session_key(i),
                op: Op::Set(WriteMode::Create { created: 0, ttl }, pairs.into()),
                refresh: None,
                limits: Default::default(),
                reindex: false,
            };
            actor.call(command).await.expect("seed session");
        }
    });
    let multiplexed = system.block_on(async {
        redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("multiplexed connection")
    });
    let pool = system.block_on(async {
        let manager = RedisConnectionManager::new(url.as_str()).expect("url");
        bb8::Pool::builder()
            .max_size(16)
            .test_on_check_out(false)
            .build(manager)
            .await
            .expect("pool")
    });

    let mut group = c.benchmark_group("session_read");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for &n in &LEVELS {
        group.throughput(Throughput::Elements(n as u64));

        let before = engine.stats();
        group.bench_with_input(BenchmarkId::new("actor", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                timed(&system, iters, |it| {
                    actor_round(&actor, n, move |i| (it * n + i) % SESSIONS)
                })
            })
        });
        let after = engine.stats();
        eprintln!(
            "actor at {n} concurrent: average batch {:.1} commands, max {}",
            (after.commands - before.commands) as f64
                / (after.pipelines - before.pipelines).max(1) as f64,
            after.max_batch
        );

        group.bench_with_input(BenchmarkId::new("raw_pipeline", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                timed(&system, iters, |it| {
                    pipeline_round(&multiplexed, n, move |i| (it * n + i) % SESSIONS)
                })
            })
        });

        group.bench_with_input(BenchmarkId::new("multiplexed", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                timed(&system, iters, |it| {
                    multiplexed_round(&multiplexed, n, move |i| (it * n + i) % SESSIONS)
                })
            })
        });

        group.bench_with_input(BenchmarkId::new("bb8_checkout", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let start = Instant::now();
                    for it in 0..iters as usize {
                        join_all((0..n).map(|i| {
                            let pool = &pool;
                            let key = session_key((it * n + i) % SESSIONS);
                            async move {
                                let mut conn = pool.get().await.expect("checkout");
                                redis::cmd("HMGET")
                                    .arg(&*key)
                                    .arg(&READ_FIELDS[..])
                                    .query_async::<Vec<Option<Vec<u8>>>>(&mut *conn)
                                    .await
                            }
                        }))
                        .await
                        .into_iter()
                        .for_each(|r| {
                            r.expect("bb8 read");
                        });
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // Many concurrent reads of few sessions (a page firing XHRs with one cookie): the actor
    // fuses the reads of one session in a batch into one HMGET.
    let mut group = c.benchmark_group("same_session_read");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let n = 512;
    let hot = 16;
    group.throughput(Throughput::Elements(n as u64));
    let before = engine.stats();
    group.bench_function(BenchmarkId::new("actor", n), |b| {
        b.iter_custom(|iters| timed(&system, iters, |_| actor_round(&actor, n, |i| i % hot)))
    });
    let after = engine.stats();
    eprintln!(
        "actor, {n} reads of {hot} sessions: {:.1} Redis commands per batch of {:.1}",
        (after.redis_commands - before.redis_commands) as f64
            / (after.pipelines - before.pipelines).max(1) as f64,
        (after.commands - before.commands) as f64
            / (after.pipelines - before.pipelines).max(1) as f64,
    );
    group.bench_function(BenchmarkId::new("multiplexed", n), |b| {
        b.iter_custom(|iters| {
            timed(&system, iters, |_| {
                multiplexed_round(&multiplexed, n, |i| i % hot)
            })
        })
    });
    group.finish();

    if let Ok(variant) = std::env::var("ENGINE_PROFILE") {
        profile(&system, &actor, &multiplexed, &variant);
    } else if benchmarking() {
        summary(&system, &actor, &multiplexed);
    }
    drop(server);
}

/// `ENGINE_PROFILE=actor|raw_pipeline|multiplexed` (with `PROFILE_ROUNDS`, default 2000, and
/// `PROFILE_LEVEL`, default 512): only that variant's rounds of that many distinct reads, for a profiler (`perf`, `valgrind --tool=callgrind`)
/// to attribute the actor's cost per command without the other variants in the profile.
fn profile(
    system: &SystemRunner,
    actor: &Handle,
    multiplexed: &MultiplexedConnection,
    variant: &str,
) {
    let rounds: u64 = std::env::var("PROFILE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    let n: usize = std::env::var("PROFILE_LEVEL")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512);
    let key = move |it: usize, i: usize| (it * n + i) % SESSIONS;
    let elapsed = match variant {
        "actor" => timed(system, rounds, |it| {
            actor_round(actor, n, move |i| key(it, i))
        }),
        "raw_pipeline" => timed(system, rounds, |it| {
            pipeline_round(multiplexed, n, move |i| key(it, i))
        }),
        "multiplexed" => timed(system, rounds, |it| {
            multiplexed_round(multiplexed, n, move |i| key(it, i))
        }),
        other => panic!("ENGINE_PROFILE={other}: expected actor, raw_pipeline or multiplexed"),
    };
    eprintln!(
        "profile {variant}: {rounds} rounds of {n}, {:.0} ns/op",
        ns_per_op(elapsed, rounds as usize, n)
    );
}

/// Whether criterion runs benchmarks (`cargo bench`), not tests (`cargo test --benches`): its
/// own rule, which `Criterion` does not expose.
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// Nanoseconds per read of `rounds` rounds of `n` reads each, timed here, for the summary.
fn ns_per_op(elapsed: Duration, rounds: usize, n: usize) -> f64 {
    elapsed.as_nanos() as f64 / (rounds * n) as f64
}

/// The stderr summary: the actor against a raw pipeline of the same commands and against the
/// shared multiplexed connection, from rounds of the variants alternated in chunks, so that the
/// machine's drift hits them alike. Each is given in wall time per read (Redis's work
/// included, on the other core) and in the bench thread's CPU time per read (the client's own
/// cost, which moves less on this machine).
fn summary(system: &SystemRunner, actor: &Handle, multiplexed: &MultiplexedConnection) {
    let chunk = (SUMMARY_ROUNDS / SUMMARY_CHUNKS) as u64;
    let rounds = chunk as usize * SUMMARY_CHUNKS;
    eprintln!(
        "summary: {rounds} rounds per variant and level, timed with Instant and the thread's \
         CPU time (the variants alternated in {SUMMARY_CHUNKS} chunks)"
    );
    let per_op = |t: Timing, n: usize| (ns_per_op(t.wall, rounds, n), ns_per_op(t.cpu, rounds, n));
    for &n in &LEVELS {
        let (mut a, mut p, mut m) = (Timing::default(), Timing::default(), Timing::default());
        for c in 0..SUMMARY_CHUNKS {
            // Distinct sessions in every round, as in the criterion runs.
            let base = c * chunk as usize;
            let key = move |it: usize, i: usize| ((base + it) * n + i) % SESSIONS;
            a += timed_cpu(system, chunk, |it| {
                actor_round(actor, n, move |i| key(it, i))
            });
            p += timed_cpu(system, chunk, |it| {
                pipeline_round(multiplexed, n, move |i| key(it, i))
            });
            m += timed_cpu(system, chunk, |it| {
                multiplexed_round(multiplexed, n, move |i| key(it, i))
            });
        }
        let ((a, a_cpu), (p, p_cpu), (m, m_cpu)) = (per_op(a, n), per_op(p, n), per_op(m, n));
        eprintln!(
            "level {n}: actor {a:.0} ns/op ({a_cpu:.0} CPU), raw pipeline {p:.0} ({p_cpu:.0} \
             CPU), actor overhead {:.0} ns/op ({:.0} CPU), multiplexed {m:.0} ({m_cpu:.0} \
             CPU); actor/multiplexed: throughput {:.2}×, CPU per read {:.2}×",
            a - p,
            a_cpu - p_cpu,
            m / a,
            a_cpu / m_cpu
        );
    }
    let (n, hot) = (512, 16);
    let (mut a, mut m) = (Timing::default(), Timing::default());
    for _ in 0..SUMMARY_CHUNKS {
        a += timed_cpu(system, chunk, |_| actor_round(actor, n, |i| i % hot));
        m += timed_cpu(system, chunk, |_| {
            multiplexed_round(multiplexed, n, |i| i % hot)
        });
    }
    let ((a, a_cpu), (m, m_cpu)) = (per_op(a, n), per_op(m, n));
    eprintln!(
        "{n} reads of {hot} sessions: actor {a:.0} ns/op ({a_cpu:.0} CPU), multiplexed {m:.0} \
         ({m_cpu:.0} CPU); actor/multiplexed: throughput {:.2}×, CPU per read {:.2}×",
        m / a,
        a_cpu / m_cpu
    );
}

criterion_group!(benches, engine_bench);
criterion_main!(benches);
