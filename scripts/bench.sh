#!/usr/bin/env bash
# Compare session layers under the same closed-loop load (draft).
#
# Builds the two examples in release mode, starts a private redis-server on a free loopback port,
# then for each run and each server: starts `bench_server --mode SERVER` (pinned to SERVER_CPU),
# runs `loadtest` (pinned to CLIENT_CPU) once per workload, and stops the server. Servers are
# interleaved run by run so that slow drift of the machine hits all of them alike. At the end a
# markdown table is printed (with the two columns issue #13 sets targets on: server CPU added
# over `none` and Redis CPU per request), then a short "targets" block for read and incr
# (circumflex, base-circumflex against actix-session); every raw result is kept in $OUT.
#
# Knobs (environment):
#   SERVERS    servers to compare, each a --mode of bench_server ("none actix-session circumflex"),
#              or circumflex-rl10 (refresh_after_percent = 10, the default since issue #13),
#              circumflex-rl0 (refresh_after_percent = 0: a refresh on every use, the default
#              before issue #13), circumflex-batch16 (max_batch 16),
#              circumflex-memory (memory backend: the layer's own cost, no Redis),
#              circumflex-bound (every login binds a user of its own: reads and writes on bound
#              sessions, whose refreshes keep the user's index),
#              circumflex-metrics (a Prometheus recorder installed: what the metrics feature
#              costs when it records),
#              circumflex-cluster (a private 3-master Redis Cluster on the server's core instead
#              of the standalone Redis; loadtest sums INFO over the three masters)
#   SERVER_ARGS extra bench_server arguments (e.g. "--max-batch 64")
#   WORKLOADS  subset of: read incr noop read50 ("read incr noop read50")
#   RUNS       repetitions of every cell (2)     DURATION  measured seconds per cell (10)
#   USERS      virtual users (64)                WARMUP    seconds not counted (1)
#   WORKERS    actix-web workers per server (1)
#   SERVER_CPU / CLIENT_CPU  cores for taskset (0 / 1); Redis shares the server's core
#   OUT        result folder (target/bench/<timestamp>)
#   BASELINE   a git revision (main~3, a tag, a hash) to measure in the same run as the current tree.
#              It is resolved to a commit hash H and checked out with `git worktree add --detach`
#              into $TARGET/baseline/H (reused when it is already there at H; your own work tree is
#              never touched), and bench_server is built there in release mode with
#              CARGO_TARGET_DIR=$TARGET/baseline-target, so the two builds do not clobber each other
#              (the first baseline build compiles all dependencies again). Every server name above
#              is then also available as base-NAME (base-circumflex, base-circumflex-rl10, ...):
#              the baseline's bench_server with the same mode and arguments. loadtest always comes
#              from the current tree. base-* names without BASELINE are an error (exit 2).
#              To remove a checkout: git worktree remove --force target/baseline/H
#
# Example: DURATION=3 RUNS=2 scripts/bench.sh
# Example: BASELINE=<rev> SERVERS="none base-circumflex circumflex" scripts/bench.sh
set -euo pipefail

SERVERS=${SERVERS:-"none actix-session circumflex"}
WORKLOADS=${WORKLOADS:-"read incr noop read50"}
RUNS=${RUNS:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
USERS=${USERS:-64}
WORKERS=${WORKERS:-1}
SERVER_ARGS=${SERVER_ARGS:-}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASELINE=${BASELINE:-}

BASE_REV=""
if [ -z "$BASELINE" ]; then
    for server in $SERVERS; do
        case $server in
            base-*)
                echo "bench.sh: server '$server' needs BASELINE=<git rev> (the build to compare against)" >&2
                exit 2
                ;;
        esac
    done
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -n "$BASELINE" ]; then
    command -v git >/dev/null || { echo "bench.sh: BASELINE needs git" >&2; exit 2; }
    BASE_REV=$(git -C "$ROOT" rev-parse --verify --quiet "$BASELINE^{commit}") || {
        echo "bench.sh: BASELINE='$BASELINE' is not a commit in $ROOT" >&2
        exit 2
    }
fi
BIN=$TARGET/release/examples
OUT=${OUT:-$TARGET/bench/$(date +%Y%m%d-%H%M%S)}

if ! command -v jq >/dev/null || ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "bench.sh: installing jq and redis-server with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq redis-server >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq redis-server >/dev/null; }
    fi
fi
for tool in redis-server redis-cli jq taskset ss; do
    command -v "$tool" >/dev/null || {
        echo "bench.sh: '$tool' is missing (apt-get install redis-server jq util-linux iproute2)" >&2
        exit 2
    }
done

# Workload name -> login path, hammered path, check.
workload() {
    case $1 in
        read) echo "/login /read json" ;;
        incr) echo "/login /incr counter" ;;
        noop) echo "/login /noop json" ;;
        read50) echo "/login?filler=50 /read json" ;;
        *) echo "bench.sh: unknown workload $1" >&2; return 1 ;;
    esac
}
for w in $WORKLOADS; do workload "$w" >/dev/null; done

# shellcheck source=lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"

# Only the processes this script started: the bench server here, Redis in redis_stop (lib/redis.sh).
# shellcheck source=lib/server.sh
. "$ROOT/scripts/lib/server.sh"
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "== building (release)" >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --example loadtest --example bench_server)

# The baseline: a detached worktree of BASELINE under $TARGET/baseline, built in its own target dir.
BASE_BIN=""
if [ -n "$BASELINE" ]; then
    mkdir -p "$TARGET/baseline" "$TARGET/baseline-target"
    BASE_DIR=$(cd "$TARGET/baseline" && pwd -P)/$BASE_REV
    BASE_TARGET=$(cd "$TARGET/baseline-target" && pwd -P) # absolute: the build runs in BASE_DIR
    if [ -e "$BASE_DIR" ]; then
        # Reuse only a worktree of its own (not the enclosing checkout) that is still at BASE_REV.
        top=$(git -C "$BASE_DIR" rev-parse --show-toplevel 2>/dev/null || true)
        [ -n "$top" ] && top=$(cd "$top" && pwd -P)
        head=$(git -C "$BASE_DIR" rev-parse --verify --quiet HEAD 2>/dev/null || true)
        if [ "$top" != "$BASE_DIR" ] || [ "$head" != "$BASE_REV" ]; then
            echo "bench.sh: $BASE_DIR exists but is not a worktree at $BASE_REV; remove it" \
                "(git worktree remove --force $BASE_DIR, or rm -r it and git worktree prune)" >&2
            exit 2
        fi
        if [ -n "$(git -C "$BASE_DIR" status --porcelain --untracked-files=no)" ]; then
            echo "bench.sh: warning: the baseline worktree $BASE_DIR has local changes:" >&2
            git -C "$BASE_DIR" status --short --untracked-files=no >&2
        fi
        echo "== baseline $BASELINE = $BASE_REV: reusing $BASE_DIR" >&2
    else
        echo "== baseline $BASELINE = $BASE_REV: git worktree add --detach $BASE_DIR" >&2
        # --force only lets git reuse this path when it is still registered but was deleted
        # (cargo clean); the directory does not exist, so nothing in it can be overwritten.
        git -C "$ROOT" worktree add --force --detach "$BASE_DIR" "$BASE_REV" >&2
    fi
    echo "== building the baseline (release, CARGO_TARGET_DIR=$BASE_TARGET)" >&2
    base_start=$SECONDS
    (cd "$BASE_DIR" && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release --example bench_server)
    echo "== baseline build took $((SECONDS - base_start))s" >&2
    BASE_BIN=$BASE_TARGET/release/examples/bench_server
    case " $SERVERS " in
        *" base-"*) ;;
        *) echo "bench.sh: warning: BASELINE is set but SERVERS has no base-* name" >&2 ;;
    esac
fi

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

redis_start "$SERVER_CPU" "$OUT/redis.log" || { echo "bench.sh: redis did not start" >&2; exit 1; }
echo "== redis on $REDIS_URL (pid $REDIS_PID), results in $OUT" >&2
case " $SERVERS " in
    *-cluster" "*)
        redis_cluster_start "$SERVER_CPU" "$OUT/cluster" 3 ||
            { echo "bench.sh: the cluster did not start" >&2; exit 1; }
        echo "== 3-master cluster on $CLUSTER_URLS" >&2
        ;;
esac

failures=0
for run in $(seq 1 "$RUNS"); do
    for server in $SERVERS; do
        log=$OUT/server-$server-$run.log
        : >"$log" # exists before the server's own redirect, for the polling below
        # A server name is a bench_server mode, optionally with a tuning suffix; base- in front
        # runs the baseline's binary instead of the current tree's.
        bin=$BIN/bench_server
        name=$server
        case $server in
            base-*) bin=$BASE_BIN; name=${server#base-} ;;
        esac
        case $name in
            circumflex-rl10) mode=circumflex; extra="--refresh-after-percent 10" ;;
            circumflex-rl0) mode=circumflex; extra="--refresh-after-percent 0" ;;
            circumflex-batch16) mode=circumflex; extra="--max-batch 16" ;;
            circumflex-memory) mode=circumflex; extra="--backend memory" ;;
            circumflex-bound) mode=circumflex; extra="--bind-user" ;;
            circumflex-metrics) mode=circumflex; extra="--metrics" ;;
            circumflex-cluster) mode=circumflex; extra="--redis-cluster-nodes $CLUSTER_URLS" ;;
            *) mode=$name; extra="" ;;
        esac
        # shellcheck disable=SC2086 # word splitting of the extra arguments is intended
        taskset -c "$SERVER_CPU" "$bin" --mode "$mode" --port 0 \
            --redis-url "$REDIS_URL" --workers "$WORKERS" $extra ${SERVER_ARGS:-} >"$log" 2>&1 &
        SERVER_PID=$!
        port=$(server_port "$log")
        if [ -z "$port" ]; then
            echo "bench.sh: server '$server' did not start:" >&2
            cat "$log" >&2
            stop_server
            failures=$((failures + 1))
            continue
        fi
        for w in $WORKLOADS; do
            read -r login path check <<<"$(workload "$w")"
            redis-cli -p "$REDIS_PORT" flushall >/dev/null
            info_urls=$REDIS_URL
            case $name in
                *-cluster)
                    info_urls=$CLUSTER_URLS
                    for p in $CLUSTER_PORTS; do redis-cli -p "$p" flushall >/dev/null; done
                    ;;
            esac
            echo "== run $run  $server  $w" >&2
            out=$OUT/$server-$w-$run.txt
            rc=0
            timeout $((DURATION + WARMUP + 30)) taskset -c "$CLIENT_CPU" "$BIN/loadtest" \
                --url "http://127.0.0.1:$port" --login "$login" --path "$path" --check "$check" \
                --users "$USERS" --duration "$DURATION" --warmup "$WARMUP" \
                --redis-url "$info_urls" --server-pid "$SERVER_PID" --label "$server/$w" --json \
                >"$out" 2>&1 || rc=$?
            grep -v '^{' "$out" >&2 || true
            if [ "$rc" -ne 0 ]; then
                echo "bench.sh: loadtest exited with $rc for $server/$w (run $run)" >&2
                failures=$((failures + 1))
            fi
            grep '^{' "$out" | jq -c --arg s "$server" --arg w "$w" --argjson r "$run" --argjson rc "$rc" \
                '. + {server: $s, workload: $w, run: $r, exit: $rc}' >>"$RESULTS" || true
        done
        stop_server
    done
done

# Markdown summary: mean over runs per (workload, server); ratio to the `none` ceiling. The two
# columns that issue #13 sets its targets on: "server CPU added over none" (this server's server
# CPU per request minus the `none` server's in the same run and workload, averaged over the runs
# where both have a result; — when `none` was not run) and "Redis CPU µs/req".
JQ_DEFS='
  def mean: map(select(. != null)) | if length == 0 then null else add / length end;
  # Fixed decimals for non-negative numbers: 3.14159 | f(2) == "3.14".
  def f(d): if . == null then "—"
    elif d == 0 then (round | tostring)
    else (. * pow(10; d) | round | tostring) as $n
      | ("0" * ([d + 1 - ($n | length), 0] | max) + $n) as $p
      | $p[0:($p | length) - d] + "." + $p[($p | length) - d:]
    end;
  # The same with a sign, for differences: -0.25 | sf(1) == "-0.3".
  def sf(d): if . == null then "—" elif . < 0 then "-" + ((0 - .) | f(d)) else f(d) end;
  def cells($all; $w; $s): [$all[] | select(.workload == $w and .server == $s)];
  # Server CPU per request over the `none` server of the same run and workload, mean over runs.
  def added($all; $w; $s):
    [cells($all; $w; $s)[] | . as $x
     | (cells($all; $w; "none")[] | select(.run == $x.run) | .server_cpu_us_per_req.total) as $none
     | if $x.server_cpu_us_per_req.total == null or $none == null then null
       else $x.server_cpu_us_per_req.total - $none end]
    | mean;
  def words: split(" ") | map(select(length > 0));
'
echo
echo "DURATION=${DURATION}s WARMUP=${WARMUP}s USERS=$USERS WORKERS=$WORKERS RUNS=$RUNS" \
    "server+redis on cpu $SERVER_CPU, loadtest on cpu $CLIENT_CPU; $(nproc) cpus;" \
    "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)${BASE_REV:+; base-* = BASELINE=$BASELINE ($BASE_REV)}"
echo
jq -r -s --arg servers "$SERVERS" --arg workloads "$WORKLOADS" "$JQ_DEFS"'
  ($servers | words) as $S
  | ($workloads | words) as $W
  | . as $all
  | "| workload | server | runs | rps (mean) | rps min–max | vs none | p50 µs | p99 µs | client CPU | server CPU µs/req (user+kernel) | server CPU added over none µs/req | redis cmds/req | redis bytes/req | Redis CPU µs/req | redis reads/cmd | errors |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ($W[] as $w
     | (cells($all; $w; "none") | map(.rps) | mean) as $ceil
     | $S[] as $s
     | cells($all; $w; $s) as $c
     | if ($c | length) == 0 then "| \($w) | \($s) | 0 | — | — | — | — | — | — | — | — | — | — | — | — | — |"
       else
         ([$c[].rps] | mean) as $rps
         | "| \($w) | \($s) | \($c | length) | \($rps | f(0)) | \([$c[].rps] | min | f(0))–\([$c[].rps] | max | f(0))"
           + " | \(if $ceil then ($rps / $ceil * 100 | f(0)) + "%" else "—" end)"
           + " | \([$c[].latency_us.p50] | mean | f(0)) | \([$c[].latency_us.p99] | mean | f(0))"
           + " | \([$c[].client_cpu_pct] | mean | f(0))%"
           + " | \([$c[].server_cpu_us_per_req.total] | mean | f(1)) (\([$c[].server_cpu_us_per_req.user] | mean | f(1))+\([$c[].server_cpu_us_per_req.kernel] | mean | f(1)))"
           + " | \(added($all; $w; $s) | sf(1))"
           + " | \([$c[].redis.commands_per_req] | mean | f(2))"
           + " | \([$c[].redis.net_bytes_per_req] | mean | f(0))"
           + " | \([$c[].redis.cpu_us_per_req] | mean | f(1))"
           + " | \([$c[].redis.reads_per_command] | mean | f(2))"
           + " | \([$c[] | .errors_total + .setup_errors_total] | add) |"
       end)
' "$RESULTS"

# Issue #13's targets for `read` and `incr` (its get-then-set): circumflex, and base-circumflex
# when present, against actix-session in this run. The ratio is of the mean rps over runs.
if [ -n "$(jq -r -s --arg servers "$SERVERS" --arg workloads "$WORKLOADS" "$JQ_DEFS"'
    if ($workloads | words | any(. == "read" or . == "incr"))
       and ($servers | words | any(. == "circumflex" or . == "base-circumflex"))
    then "yes" else empty end' "$RESULTS")" ]; then
    echo
    echo "targets (issue #13; the target in brackets): against actix-session in this run"
    echo
    jq -r -s --arg servers "$SERVERS" --arg workloads "$WORKLOADS" "$JQ_DEFS"'
      ($servers | words) as $S
      | ($workloads | words) as $W
      | . as $all
      | {read: {ratio: "2.5", added: "3", redis: "1.5"},
         incr: {ratio: "3", added: "6", redis: "4"}} as $T
      | "| workload | server | rps vs actix-session | server CPU added over none µs/req | Redis CPU µs/req |",
        "|---|---|---:|---:|---:|",
        ("read", "incr"
         | select(. as $w | $W | any(. == $w)) as $w
         | (cells($all; $w; "actix-session") | map(.rps) | mean) as $base
         | ("circumflex", "base-circumflex" | select(. as $s | $S | any(. == $s))) as $s
         | (cells($all; $w; $s) | map(.rps) | mean) as $rps
         | "| \($w) | \($s)"
           + " | \(if $rps != null and $base != null and $base > 0 then ($rps / $base | f(2)) + "×" else "—" end) (≥ \($T[$w].ratio)×)"
           + " | \(added($all; $w; $s) | sf(1)) (≤ \($T[$w].added))"
           + " | \(cells($all; $w; $s) | map(.redis.cpu_us_per_req) | mean | f(1)) (≤ \($T[$w].redis)) |")
    ' "$RESULTS"
fi

if [ "$failures" -gt 0 ]; then
    echo
    echo "bench.sh: $failures cell(s) had errors; see $OUT" >&2
    exit 1
fi
