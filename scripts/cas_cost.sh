#!/usr/bin/env bash
# Compare-and-set on one field of a session hash: a Lua script sent on the shared connection, or
# WATCH/MULTI/EXEC on pooled connections of their own (CAS_SECTION.md). See examples/cas_cost.rs
# for what one run does.
#
# Builds the example in release, starts a private redis-server on a free loopback port (pinned
# to REDIS_CPU; stopped by its PID on exit), and runs every mechanism at keys=1 (all tasks on one
# hash: the most contention) and keys=TASKS (one hash per task: none), REPS times, the cells
# interleaved within each repetition so that slow drift of the machine hits them alike. The tool
# runs pinned to CLIENT_CPU. Uncontended runs do more updates per task (UPDATES_SPREAD), so that
# they last long enough to measure (about 2-4 s instead of 0.2-0.4 s); every figure is per
# update, so the cells stay comparable. Prints a markdown table, each cell the median and [min-max] over
# the repetitions; the raw JSON lines are kept in $OUT. Exits 1 if any run failed its check.
#
# Knobs (environment): TASKS (64), KEYS (hash counts, "1 TASKS"), UPDATES (200 per task, at
#   every hash count but TASKS), UPDATES_SPREAD (2000 per task at keys=TASKS), REPS (3),
#   MECHANISMS ("script watch script-dedicated"), BACKOFF_US (0: retry at once; else a random
#   sleep of up to that many µs before each retry), REDIS_CPU (0), CLIENT_CPU (1),
#   OUT (target/cas_cost/<timestamp>)
# Needs cargo, redis-server, redis-cli, taskset, ss, python3.
#
#   scripts/cas_cost.sh
#   BACKOFF_US=1000 KEYS="1 32" MECHANISMS="script watch" scripts/cas_cost.sh
set -euo pipefail

TASKS=${TASKS:-64}
UPDATES=${UPDATES:-200}
UPDATES_SPREAD=${UPDATES_SPREAD:-2000}
KEYS=${KEYS:-"1 $TASKS"}
BACKOFF_US=${BACKOFF_US:-0}
REPS=${REPS:-3}
MECHANISMS=${MECHANISMS:-"script watch script-dedicated"}
REDIS_CPU=${REDIS_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/cas_cost/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

(cd "$ROOT" && cargo build --release --quiet --example cas_cost)
BIN=$TARGET/release/examples/cas_cost

# shellcheck source=lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"
redis_start "$REDIS_CPU" "$OUT/redis.log" || { echo "cas_cost.sh: redis did not start" >&2; exit 1; }
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on $REDIS_URL (CPU $REDIS_CPU), tool on CPU $CLIENT_CPU; tasks=$TASKS keys=\"$KEYS\" updates=$UPDATES (keys=$TASKS: $UPDATES_SPREAD) backoff=${BACKOFF_US} µs reps=$REPS" | tee "$OUT/setup.txt"

failed=0
for rep in $(seq 1 "$REPS"); do
    for mechanism in $MECHANISMS; do
        for keys in $KEYS; do
            log=$OUT/$mechanism-k$keys-$rep.txt
            updates=$UPDATES
            [ "$keys" != "$TASKS" ] || updates=$UPDATES_SPREAD
            if taskset -c "$CLIENT_CPU" "$BIN" --redis-url "$REDIS_URL" --tasks "$TASKS" \
                --updates "$updates" --keys "$keys" --mechanism "$mechanism" --backoff-us "$BACKOFF_US" --json >"$log" 2>&1; then
                tail -n 1 "$log" >>"$OUT/results.jsonl"
                printf 'rep %s  %-16s keys=%-3s %s\n' "$rep" "$mechanism" "$keys" \
                    "$(sed -n 's/^updates *//p' "$log")"
            else
                failed=1
                echo "cas_cost.sh: $mechanism keys=$keys rep $rep failed:" >&2
                cat "$log" >&2
            fi
        done
    done
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys

rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["mechanism"], r["keys"]), []).append(r)

def cell(runs, field, fmt):
    xs = [r[field] for r in runs]
    return "%s [%s-%s]" % (fmt % statistics.median(xs), fmt % min(xs), fmt % max(xs))

print()
print("| mechanism | keys | updates | ok/s | p50 µs | p99 µs | retries/update | give-ups "
      "| Redis CPU µs/ok | CPU µs/attempt | cmds sent/ok | cmds run/ok | reads/ok |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (mechanism, keys), runs in rows.items():
    print("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        mechanism, keys, runs[0]["tasks"] * runs[0]["updates"],
        cell(runs, "ok_per_s", "%.0f"),
        cell(runs, "p50_us", "%d"),
        cell(runs, "p99_us", "%d"),
        cell(runs, "retries_per_update", "%.2f"),
        cell(runs, "give_ups", "%d"),
        cell(runs, "cpu_us_per_ok", "%.1f"),
        cell(runs, "cpu_us_per_attempt", "%.1f"),
        cell(runs, "commands_sent_per_ok", "%.1f"),
        cell(runs, "commands_run_per_ok", "%.1f"),
        cell(runs, "reads_per_ok", "%.2f"),
    ))
print()
print("ok: a successful update. ok/s: successful updates per second. Latency: every update,")
print("first read to success or give-up. cmds run: what Redis executed (a script's calls")
print("included, an aborted EXEC's queued commands not). reads: Redis read calls. Each cell:")
print("median [min-max] over the repetitions.")
PY
echo "raw results: $OUT"
exit "$failed"
