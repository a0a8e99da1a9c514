//! Engine micro-benchmark: N concurrent session reads (`HMGET` of two fields) on a private
//! redis-server, three ways:
//! - `actor`: through the `SessionActor` (batched pipelines, bb8 pool underneath);
//! - `multiplexed`: one shared redis-rs `MultiplexedConnection`, used directly (redis-rs
//!   already coalesces concurrent commands on it);
//! - `bb8_checkout`: a bb8-redis pool checkout per command.
//!
//! Run: `cargo bench --bench engine`. Criterion reports operations per second (throughput
//! elements); the actor's average batch size per concurrency level is printed to stderr.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{System, SystemRunner};
use bb8_redis::RedisConnectionManager;
use circumflex_session::testing::{self, Command, Handle, Op, WriteMode};
use circumflex_session::{ActorConfig, RedisBackend, RedisConfig, SessionEngine};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;

const LEVELS: [usize; 4] = [1, 16, 128, 512];
const SESSIONS: usize = 1024;

fn session_key(i: usize) -> Arc<str> {
    Arc::from(format!("session:bench{i:04}"))
}

/// One round: `n` reads through the actor, all issued before any is awaited; `key_of(i)` picks
/// the session of read `i`.
async fn actor_round(actor: &Handle, n: usize, key_of: impl Fn(usize) -> usize) {
    let reads = (0..n).map(|i| {
        let command = Command {
            key: session_key(key_of(i)),
            op: Op::Get(vec!["a".to_owned(), "b".to_owned()]),
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
                .arg("a")
                .arg("b")
                .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                .await
        }
    });
    for result in join_all(reads).await {
        result.expect("multiplexed read");
    }
}

/// Times `iters` rounds on the actix system.
fn timed<F: std::future::Future<Output = ()>>(
    system: &SystemRunner,
    iters: u64,
    mut round: impl FnMut(usize) -> F,
) -> Duration {
    system.block_on(async {
        let start = Instant::now();
        for it in 0..iters as usize {
            round(it).await;
        }
        start.elapsed()
    })
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
                op: Op::Set(WriteMode::Create { created: 0, ttl }, pairs),
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
                                    .arg("a")
                                    .arg("b")
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
    drop(server);
}

criterion_group!(benches, engine_bench);
criterion_main!(benches);
