#!/usr/bin/env bash
# A short run of the load path, so that it cannot rot: builds examples/bench_server.rs and
# examples/loadtest.rs (debug, with the features scripts/test.sh tests with, so after the test
# step this is mostly a link), starts a private redis-server on a free loopback port, starts
# `bench_server --mode circumflex` against it on a free port, and runs `loadtest --duration 5`
# on `/incr --check counter` and on `/read --check json`.
#
# It asserts answers, never timings: a run fails when loadtest exits non-zero (it exits 1 when
# any answer was wrong or any error was counted) or when its `--json` line reports no request.
# About 15 s of wall time once built. Needs redis-server, redis-cli, taskset, ss and python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FEATURES=${FEATURES:-tls-rustls,actix-session}
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/debug/examples

for tool in redis-server redis-cli taskset ss python3; do
    command -v "$tool" >/dev/null || {
        echo "load_smoke.sh: '$tool' is missing (apt-get install redis-server util-linux iproute2 python3)" >&2
        exit 2
    }
done

# Only the processes this script started: the bench server here, Redis in redis_stop.
WORK=$(mktemp -d)
# shellcheck source=lib/server.sh
. "$ROOT/scripts/lib/server.sh"
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

cargo build --quiet --example bench_server --example loadtest --features "$FEATURES"

# shellcheck source=lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"
# Every core this script may use: the smoke run measures nothing, so nothing is pinned.
CPUS=$(taskset -cp $$ | sed 's/.*: *//')
redis_start "$CPUS" "$WORK/redis.log" || { echo "load_smoke.sh: redis did not start" >&2; exit 1; }

"$BIN/bench_server" --mode circumflex --port 0 --redis-url "$REDIS_URL" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
port=$(server_port "$WORK/server.log")
if [ -z "$port" ]; then
    echo "load_smoke.sh: bench_server did not start; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi

# One load run: path and check; fails on loadtest's status or on zero requests.
smoke() {
    local path=$1 check=$2 out=$WORK/loadtest-${1#/}.txt rc=0
    timeout 60 "$BIN/loadtest" --url "http://127.0.0.1:$port" --login /login --path "$path" \
        --check "$check" --users 16 --duration 5 --warmup 0.5 --redis-url "$REDIS_URL" \
        --server-pid "$SERVER_PID" --json >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "load_smoke.sh: loadtest $path --check $check exited with $rc:" >&2
        cat "$out" >&2
        return 1
    fi
    # The --json line: how many requests were answered, and that none was wrong.
    grep '^{' "$out" | tail -n1 | python3 -c '
import json, sys
path, check = sys.argv[1], sys.argv[2]
r = json.load(sys.stdin)
n, ok, errors, setup = r["requests"], r["ok"], r["errors_total"], r["setup_errors_total"]
if n == 0 or ok != n or errors or setup:
    sys.exit(f"load_smoke.sh: {path} --check {check}: {n} requests, {ok} ok, "
             f"{errors} errors, {setup} setup errors")
print(f"load smoke: {path} --check {check}: {ok} requests, every answer checked, no error")
' "$path" "$check" || { cat "$out" >&2; return 1; }
}

smoke /incr counter
smoke /read json
stop_server
echo "load smoke run passed"
