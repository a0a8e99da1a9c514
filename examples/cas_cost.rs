//! What an atomic compare-and-set on one field of a session hash costs Redis, done two ways:
//! the measurement behind `AsyncSession::update(key, |old| new)` and `compare_and_set`, which
//! chose the script (BENCHMARKS.md, section 8).
//!
//! Why this file is long: it is a whole benchmark tool in one file, as the other examples are:
//! three mechanisms, the pool set-up, the counter check that nothing was lost, and the report
//! from `INFO` deltas and latency histograms.
//!
//! ```sh
//! taskset -c 1 cargo run --release --example cas_cost -- --redis-url redis://127.0.0.1:PORT \
//!     --tasks 64 --updates 200 --keys 64 --mechanism script
//! scripts/cas_cost.sh     # the whole matrix, against a private redis-server
//! ```
//!
//! Each of `--tasks` tasks does `--updates` read-modify-writes of a JSON counter in field `n`
//! of the hash `cas:{t mod K}` (`--keys K`: 1 is the most contention, as many as tasks none):
//! read the value, add one in Rust, write it back only if it is still the value read, and on a
//! conflict start again (at once, or after a random sleep of up to `--backoff-us`), at most 16
//! times more; then the update gives up and is counted. Every mechanism is the same two round
//! trips per attempt, a read and a conditional write:
//!
//! - `script`: `HGET`, then `EVALSHA` of `examples/cas_cost.lua` (HGET, compare, HSET + PEXPIRE,
//!   reply 1 or 0), both on one multiplexed connection that every task shares, as the session
//!   actor's pipelined connection would carry them next to other sessions' commands.
//! - `watch`: `WATCH` + `HGET` (one pipeline), then `MULTI HSET PEXPIRE EXEC` (one pipeline),
//!   on a connection of the task's own from a bb8-redis pool for the whole update. WATCH is
//!   state of the connection, so no other client's command may travel on it in between: it
//!   cannot share the actor's connection.
//! - `script-dedicated`: the script's commands on the pool's connections, as `watch` uses them.
//!   Not a design anyone would ship; it separates what the script saves in Redis per command
//!   from what sharing one connection saves in reads and writes.
//!
//! The pool has one connection per task, made before the measurement, with bb8's check-out PING
//! off (`test_on_check_out(false)`), so `watch` never waits for a connection and pays no PING;
//! a real pool, smaller than the number of concurrent updates, would be slower, not faster.
//!
//! Redis `INFO` is read just before and just after the updates: Redis CPU (used_cpu_sys +
//! used_cpu_user) per successful update and per attempt; the commands Redis ran
//! (`total_commands_processed`, which counts the commands a script calls and not those an
//! aborted EXEC discarded) and by name (`commandstats`), and its read calls
//! (`total_reads_processed`: fewer than commands when a read brings several), per successful
//! update. Latency is that of every update, from its first read to its success or its giving
//! up. At the end the counters must add up to tasks × updates − give-ups; if not (an increment
//! was lost or made twice) the exit status is 1, as on any Redis error. A bad command line
//! exits with 2.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bb8_redis::{bb8, RedisConnectionManager};
use clap::{Parser, ValueEnum};
use futures::future::try_join_all;
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};
use serde_json::json;

#[path = "shared/redis_info.rs"]
mod redis_info;
use redis_info::RedisInfo;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// Attempts after the first before an update gives up.
const MAX_RETRIES: u32 = 16;

/// The TTL every write sets, as a session write refreshes its idle timeout.
const TTL_MS: u64 = 1_800_000;

/// The field that holds the counter.
const FIELD: &str = "n";

/// Compare-and-set on one field of a session hash: a Lua script or WATCH/MULTI/EXEC.
#[derive(Parser)]
#[command(name = "cas_cost")]
struct Args {
    /// redis://host:port of a Redis whose `cas:*` keys may be overwritten
    #[arg(long)]
    redis_url: String,
    /// Concurrent updaters
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    tasks: u32,
    /// Updates per task
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    updates: u32,
    /// Distinct hashes; task t updates cas:{t mod keys} (1: all on one, tasks: one each)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// How the conditional write is made atomic
    #[arg(long, value_enum)]
    mechanism: Mechanism,
    /// Before each retry, sleep a random 0..=this many µs (0: retry at once; tokio's timer
    /// rounds a sleep up to whole milliseconds)
    #[arg(long, default_value_t = 0)]
    backoff_us: u64,
    /// Also print one JSON line with the results
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Mechanism {
    /// HGET, then EVALSHA of the CAS script, on one shared multiplexed connection
    Script,
    /// WATCH + HGET, then MULTI HSET PEXPIRE EXEC, on a pooled connection of its own
    Watch,
    /// The script's commands on pooled connections of their own (for comparison only)
    ScriptDedicated,
}

impl Mechanism {
    /// Commands the client sends per attempt: HGET and EVALSHA; WATCH, HGET, MULTI, HSET,
    /// PEXPIRE and EXEC (Redis parses and queues all six even when EXEC then aborts).
    fn commands_per_attempt(self) -> u64 {
        match self {
            Mechanism::Script | Mechanism::ScriptDedicated => 2,
            Mechanism::Watch => 6,
        }
    }

    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

fn key(k: u32) -> String {
    format!("cas:{k}")
}

/// The counter a read found (absent counts as 0) and the bytes to write for one more.
fn increment(old: Option<&[u8]>) -> Fallible<Vec<u8>> {
    let n: u64 = match old {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| format!("field {FIELD} is not a JSON counter: {e}"))?,
        None => 0,
    };
    Ok(serde_json::to_vec(&(n + 1))?)
}

// ---------------------------------------------------------------------------------------------
// One attempt of each mechanism: read, compute, conditional write; `false` is a conflict.

/// The script's attempt; `conn` is either the shared connection or a pooled one.
async fn attempt_script(
    conn: &mut MultiplexedConnection,
    cas: &Script,
    key: &str,
) -> Fallible<bool> {
    let old: Option<Vec<u8>> = conn.hget(key, FIELD).await?;
    let new = increment(old.as_deref())?;
    let (expect, old) = match &old {
        Some(v) => ("v", v.as_slice()),
        None => ("a", &b""[..]),
    };
    let written: i64 = cas
        .key(key)
        .arg(FIELD)
        .arg(expect)
        .arg(old)
        .arg(new)
        .arg(TTL_MS)
        .invoke_async(conn)
        .await?;
    Ok(written == 1)
}

/// The optimistic transaction's attempt, on a connection no other task uses meanwhile.
async fn attempt_watch(conn: &mut MultiplexedConnection, key: &str) -> Fallible<bool> {
    let (old,): (Option<Vec<u8>>,) = redis::pipe()
        .cmd("WATCH")
        .arg(key)
        .ignore()
        .hget(key, FIELD)
        .query_async(conn)
        .await?;
    let new = increment(old.as_deref())?;
    // EXEC answers nil, `None` here, when the watched key changed after WATCH: nothing written,
    // and the connection is no longer watching anything.
    let replies: Option<(i64, i64)> = redis::pipe()
        .atomic()
        .hset(key, FIELD, new)
        .pexpire(key, TTL_MS as i64)
        .query_async(conn)
        .await?;
    Ok(replies.is_some())
}

// ---------------------------------------------------------------------------------------------
// The updaters

/// Where a task gets its connection from.
enum Connections {
    Shared(MultiplexedConnection),
    Pool(bb8::Pool<RedisConnectionManager>),
}

/// What one task brings back.
struct Tally {
    latencies_us: Histogram<u64>,
    successes: u64,
    retries: u64,
    give_ups: u64,
}

impl Tally {
    fn new() -> Fallible<Self> {
        Ok(Tally {
            latencies_us: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            successes: 0,
            retries: 0,
            give_ups: 0,
        })
    }

    fn merge(&mut self, other: Tally) -> Fallible<()> {
        self.latencies_us.add(other.latencies_us)?;
        self.successes += other.successes;
        self.retries += other.retries;
        self.give_ups += other.give_ups;
        Ok(())
    }
}

async fn run_task(
    mechanism: Mechanism,
    connections: &Connections,
    cas: &Script,
    key: String,
    updates: u32,
    backoff_us: u64,
) -> Fallible<Tally> {
    let mut tally = Tally::new()?;
    let mut shared = match connections {
        Connections::Shared(conn) => Some(conn.clone()),
        Connections::Pool(_) => None,
    };
    for _ in 0..updates {
        let started = Instant::now();
        // A pooled connection is the task's for the whole update, retries included.
        let mut pooled = match connections {
            Connections::Pool(pool) => Some(pool.get().await.map_err(|e| format!("pool: {e}"))?),
            Connections::Shared(_) => None,
        };
        let conn = match (pooled.as_deref_mut(), shared.as_mut()) {
            (Some(conn), _) | (None, Some(conn)) => conn,
            (None, None) => return Err("no connection".into()),
        };
        let mut written = false;
        for attempt in 0..=MAX_RETRIES {
            if attempt > 0 {
                tally.retries += 1;
                if backoff_us > 0 {
                    let us = rand::random_range(0..=backoff_us);
                    tokio::time::sleep(Duration::from_micros(us)).await;
                }
            }
            written = match mechanism {
                Mechanism::Script | Mechanism::ScriptDedicated => {
                    attempt_script(conn, cas, &key).await?
                }
                Mechanism::Watch => attempt_watch(conn, &key).await?,
            };
            if written {
                break;
            }
        }
        if written {
            tally.successes += 1;
        } else {
            tally.give_ups += 1;
        }
        let us = started.elapsed().as_micros().max(1);
        tally
            .latencies_us
            .saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
    }
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// Redis INFO

/// One `INFO commandstats stats cpu`: calls by command and the numeric fields.
async fn info(conn: &mut MultiplexedConnection) -> Fallible<RedisInfo> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .arg("stats")
        .arg("cpu")
        .query_async(conn)
        .await?;
    Ok(redis_info::parse(&text))
}

// ---------------------------------------------------------------------------------------------

async fn run(args: Args) -> Fallible<bool> {
    let client = redis::Client::open(args.redis_url.as_str())
        .map_err(|e| format!("--redis-url {:?}: {e}", args.redis_url))?;
    // Our own connection for setup, INFO and the final check, apart from the measured ones.
    let mut admin = client.get_multiplexed_async_connection().await?;

    let keys: Vec<String> = (0..args.keys).map(key).collect();
    let mut setup = redis::pipe();
    for k in &keys {
        setup.del(k).ignore();
        setup.hset(k, FIELD, "0").ignore();
        setup.pexpire(k, TTL_MS as i64).ignore();
    }
    let () = setup.query_async(&mut admin).await?;
    let cas = Script::new(include_str!("cas_cost.lua"));
    let _sha: String = cas.load_async(&mut admin).await?;

    let connections = match args.mechanism {
        Mechanism::Script => Connections::Shared(client.get_multiplexed_async_connection().await?),
        Mechanism::Watch | Mechanism::ScriptDedicated => {
            let manager = RedisConnectionManager::new(args.redis_url.as_str())?;
            // Every connection made now (build waits for min_idle), none checked with a PING.
            let pool = bb8::Pool::builder()
                .max_size(args.tasks)
                .min_idle(Some(args.tasks))
                .test_on_check_out(false)
                .connection_timeout(Duration::from_secs(10))
                .build(manager)
                .await?;
            Connections::Pool(pool)
        }
    };

    let before = info(&mut admin).await?;
    let started = Instant::now();
    let tallies = try_join_all((0..args.tasks).map(|t| {
        run_task(
            args.mechanism,
            &connections,
            &cas,
            key(t % args.keys),
            args.updates,
            args.backoff_us,
        )
    }))
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let after = info(&mut admin).await?;

    let mut total = Tally::new()?;
    for t in tallies {
        total.merge(t)?;
    }
    let updates = u64::from(args.tasks) * u64::from(args.updates);
    let mut stored = 0u64;
    for k in &keys {
        let value: Option<Vec<u8>> = admin.hget(k, FIELD).await?;
        let value = value.ok_or_else(|| format!("{k} has no field {FIELD} at the end"))?;
        stored += serde_json::from_slice::<u64>(&value)
            .map_err(|e| format!("{k}: field {FIELD} is not a JSON counter: {e}"))?;
    }
    let expected = updates - total.give_ups;
    let consistent = stored == expected && total.successes == expected;

    // Deltas per successful update. Our first INFO is counted (commands, reads) in the second
    // snapshot; the second is not yet counted in itself.
    let per = |x: f64| x / total.successes.max(1) as f64;
    let d = |k: &str| after.fields.get(k).unwrap_or(&0.0) - before.fields.get(k).unwrap_or(&0.0);
    let cpu_us = d("used_cpu_sys") + d("used_cpu_user");
    let commands = d("total_commands_processed") - 1.0;
    let reads = d("total_reads_processed") - 1.0;
    let attempts = updates + total.retries;
    let by_command: BTreeMap<String, f64> = (after.calls.iter())
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, &n)| {
            (
                name,
                n - before.calls.get(name).copied().unwrap_or(0).min(n),
            )
        })
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name.clone(), per(n as f64)))
        .collect();
    let h = &total.latencies_us;
    let [p50, p99] = [0.5, 0.99].map(|q| h.value_at_quantile(q));
    let rate = total.successes as f64 / secs;

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "== {} ==  tasks={} updates={} keys={} backoff={} µs  {secs:.2} s",
        args.mechanism.name(),
        args.tasks,
        args.updates,
        args.keys,
        args.backoff_us
    );
    let _ = writeln!(
        w,
        "updates      {} ok of {updates}   {rate:.0} ok/s   {:.2} retries/update   {} give-ups",
        total.successes,
        total.retries as f64 / updates as f64,
        total.give_ups
    );
    let _ = writeln!(
        w,
        "latency      p50 {p50} µs  p99 {p99} µs  max {} µs (every update)",
        h.max()
    );
    let _ = writeln!(
        w,
        "redis        {:.2} CPU µs/ok ({:.2}/attempt)   {:.2} commands run/ok ({} sent/attempt)   {:.2} reads/ok",
        per(cpu_us * 1e6),
        cpu_us * 1e6 / attempts as f64,
        per(commands),
        args.mechanism.commands_per_attempt(),
        per(reads)
    );
    let names: Vec<String> = (by_command.iter())
        .map(|(name, n)| format!("{name} {n:.2}"))
        .collect();
    let _ = writeln!(
        w,
        "by command   {} (per ok, script calls included)",
        names.join("  ")
    );
    let _ = writeln!(
        w,
        "check        counters sum to {stored}, expected {expected}: {}",
        if consistent { "ok" } else { "LOST OR DOUBLED" }
    );
    print!("{out}");
    if args.json {
        let line = json!({
            "mechanism": args.mechanism.name(),
            "tasks": args.tasks,
            "updates": args.updates,
            "keys": args.keys,
            "backoff_us": args.backoff_us,
            "secs": secs,
            "successes": total.successes,
            "ok_per_s": rate,
            "p50_us": p50,
            "p99_us": p99,
            "retries_per_update": total.retries as f64 / updates as f64,
            "give_ups": total.give_ups,
            "cpu_us_per_ok": per(cpu_us * 1e6),
            "cpu_us_per_attempt": cpu_us * 1e6 / attempts as f64,
            "commands_run_per_ok": per(commands),
            "commands_sent_per_attempt": args.mechanism.commands_per_attempt(),
            "commands_sent_per_ok": per((attempts * args.mechanism.commands_per_attempt()) as f64),
            "reads_per_ok": per(reads),
            "by_command_per_ok": by_command,
            "consistent": consistent,
        });
        println!("{line}");
    }
    Ok(consistent)
}

fn main() -> ExitCode {
    // A bad command line exits with 2 (clap's own status for usage errors), --help with 0.
    let args = Args::parse();
    // One thread, so that the tool can be pinned to one core and Redis to another.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(format!("cannot start the runtime: {e}").into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cas_cost: {e}");
            ExitCode::from(1)
        }
    }
}
