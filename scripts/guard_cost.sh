#!/usr/bin/env bash
# Redis CPU per write, for the ways a session write can guard against reviving a session that
# expired or was invalidated (BENCHMARKS.md, "Lua vs plain commands").
#
# Starts a private redis-server on a free loopback port (pinned to CPU 0), loads the crate's
# write script from src/backend/lua/write.lua, fills 1000 sessions, then for each variant pipes
# N writes with `redis-cli --pipe` (from CPU 1) and reports Redis's own CPU time (INFO
# used_cpu_user + used_cpu_sys) per write. Needs redis-server, redis-cli, python3, taskset, ss.
# With BASELINE=<git rev>, the write script of that revision (src/backend/lua/write.lua, or
# src/backend/redis.rs where it lived before 0.1's hardening) is measured too, as base-lua and
# base-lua+pexpire.
#
# Variants: hset (no guard), multi-guard (HEXISTS + HSET in a MULTI), fast (the crate's fast
# write since issue #13: MULTI, HMGET, HSET, HINCRBY, HLEN, PEXPIRE NX, EXEC), lua (the write
# script); each +pexpire with the TTL refresh. And two reads: read-old (PEXPIRE + HMGET, every
# read before issue #13) and read (HMGET with \0created, a read since). VARIANTS="fast lua"
# picks some.
# MEASURE=instructions counts Redis's own instructions per operation under callgrind instead
# (deterministic, where CPU time moves with the machine; N=5000 is plenty, and slow enough).
#
#   N=200000 REPS=2 scripts/guard_cost.sh
#   MEASURE=instructions N=5000 VARIANTS="hset fast lua lua+pexpire read-old read" scripts/guard_cost.sh
#   BASELINE=f6c290f REPS=3 scripts/guard_cost.sh
set -euo pipefail

N=${N:-200000}
REPS=${REPS:-2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
# shellcheck disable=SC2064 # $WORK is expanded now, on purpose
trap "rm -rf '$WORK'" EXIT
# shellcheck source=lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"
# Also stops exactly this redis-server on exit (before the folder with its log is removed).
redis_start 0 "$WORK/redis.log" || { echo "guard_cost.sh: redis did not start" >&2; exit 1; }
PORT=$REDIS_PORT

SHA=$(redis-cli -p "$PORT" script load "$(cat "$ROOT/src/backend/lua/index.lua" "$ROOT/src/backend/lua/write.lua")")
BASE_SHA=none
# The baseline script's arguments: those of today's script ("file") or of the inline one.
BASE_LAYOUT=inline
if [ -n "${BASELINE:-}" ]; then
    if git -C "$ROOT" cat-file -e "$BASELINE:src/backend/lua/write.lua" 2>/dev/null; then
        # Since 0.1's hardening the script is a file (with the index helpers in front of it
        # since issue #11).
        BASE_SCRIPT=$({
            git -C "$ROOT" show "$BASELINE:src/backend/lua/index.lua" 2>/dev/null || true
            git -C "$ROOT" show "$BASELINE:src/backend/lua/write.lua"
        })
        BASE_LAYOUT=file
    else
        BASE_SCRIPT=$(git -C "$ROOT" show "$BASELINE:src/backend/redis.rs" |
            sed -n '/^const WRITE_SCRIPT: &str = r#"/,/^"#;/p' | sed '1d;$d')
    fi
    [ -n "$BASE_SCRIPT" ] || { echo "guard_cost.sh: no inline write script at $BASELINE" >&2; exit 2; }
    BASE_SHA=$(redis-cli -p "$PORT" script load "$BASE_SCRIPT")
fi

cat >"$WORK/gen.py" <<'PY'
import sys

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

mode, n, sha, base_sha, base_layout = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
w = sys.stdout.buffer
sessions = 1000
ttl = "1800000"
for i in range(n):
    key = "session:%032x" % (i % sessions)
    if mode == "setup":
        if i < sessions:
            # \0size: bytes of user keys and values (a + alpha + counter + 0).
            w.write(resp("HSET", key, "\0created", "1", "\0size", "14", "a", "alpha", "counter", "0"))
            w.write(resp("PEXPIRE", key, ttl))
    elif mode == "hset":  # no guard, no refresh: a write that may revive a dead session
        w.write(resp("HSET", key, "counter", i))
    elif mode == "hset+pexpire":  # no guard
        w.write(resp("HSET", key, "counter", i))
        w.write(resp("PEXPIRE", key, ttl))
    elif mode == "multi-guard":  # existence read inside a transaction, no refresh
        w.write(resp("MULTI"))
        w.write(resp("HEXISTS", key, "\0created"))
        w.write(resp("HSET", key, "counter", i))
        w.write(resp("EXEC"))
    elif mode == "multi-guard+pexpire":
        w.write(resp("MULTI"))
        w.write(resp("HEXISTS", key, "\0created"))
        w.write(resp("HSET", key, "counter", i))
        w.write(resp("PEXPIRE", key, ttl))
        w.write(resp("EXEC"))
    elif mode == "fast":  # the crate's fast write (plan/fast.rs), no refresh: the default since #13
        w.write(resp("MULTI"))
        w.write(resp("HMGET", key, "\0created", "counter"))
        w.write(resp("HSET", key, "counter", i))
        w.write(resp("HINCRBY", key, "\0size", len("counter") + len(str(i))))
        w.write(resp("HLEN", key))
        w.write(resp("PEXPIRE", key, "60000", "NX"))
        w.write(resp("EXEC"))
    elif mode == "fast+pexpire":  # the same, with the refresh due
        w.write(resp("MULTI"))
        w.write(resp("HMGET", key, "\0created", "counter"))
        w.write(resp("HSET", key, "counter", i))
        w.write(resp("HINCRBY", key, "\0size", len("counter") + len(str(i))))
        w.write(resp("HLEN", key))
        w.write(resp("PEXPIRE", key, ttl))
        w.write(resp("EXEC"))
    elif mode == "read-old":  # a read before issue #13: refreshed on every use
        w.write(resp("PEXPIRE", key, ttl))
        w.write(resp("HMGET", key, "a", "counter"))
    elif mode == "read":  # a read since: the refresh skipped, \0created read with the fields
        w.write(resp("HMGET", key, "\0created", "a", "counter"))
    elif mode == "lua":  # the crate's write script (guard + size limits), no refresh
        w.write(resp("EVALSHA", sha, 1, key, "e", "0", "0", "256", "262144", "s", "counter", i))
    elif mode == "lua+pexpire":  # the same with the refresh folded in
        w.write(resp("EVALSHA", sha, 1, key, "e", "0", ttl, "256", "262144", "s", "counter", i))
    elif mode.startswith("base-lua") and base_layout == "file":  # BASELINE's write.lua
        refresh = ttl if mode == "base-lua+pexpire" else "0"
        w.write(resp("EVALSHA", base_sha, 1, key, "e", "0", refresh, "256", "262144", "s", "counter", i))
    elif mode == "base-lua":  # BASELINE's inline write script (guard only), no refresh
        w.write(resp("EVALSHA", base_sha, 1, key, "x", "0", "0", "s", "counter", i))
    elif mode == "base-lua+pexpire":
        w.write(resp("EVALSHA", base_sha, 1, key, "e", "0", ttl, "s", "counter", i))
PY

python3 "$WORK/gen.py" setup 1000 "$SHA" "$BASE_SHA" "$BASE_LAYOUT" | redis-cli -p "$PORT" --pipe >/dev/null
cpu() { redis-cli -p "$PORT" info cpu | awk -F: '/used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
VARIANTS=${VARIANTS:-"hset hset+pexpire multi-guard multi-guard+pexpire fast fast+pexpire lua lua+pexpire"}
[ "$BASE_SHA" = none ] || VARIANTS="$VARIANTS base-lua base-lua+pexpire"
for v in $VARIANTS; do python3 "$WORK/gen.py" "$v" "$N" "$SHA" "$BASE_SHA" "$BASE_LAYOUT" >"$WORK/$v.resp"; done

if [ "${MEASURE:-cpu}" = instructions ]; then
    # Redis's own instructions: a fresh redis-server under callgrind per variant, filled the
    # same way, its whole life counted, less the same life without the operations.
    for tool in valgrind callgrind_annotate; do
        command -v "$tool" >/dev/null || { echo "guard_cost.sh: '$tool' is missing" >&2; exit 2; }
    done
    python3 "$WORK/gen.py" setup 1000 "$SHA" "$BASE_SHA" "$BASE_LAYOUT" >"$WORK/setup.resp"
    : >"$WORK/none.resp"
    counted() {
        local dir port vpid
        dir=$(mktemp -d "$WORK/cg.XXXX")
        port=$(redis_free_port)
        valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" redis-server --port "$port" \
            --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
        vpid=$!
        for _ in $(seq 1 150); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
        redis-cli -p "$port" script load "$(cat "$ROOT/src/backend/lua/index.lua" "$ROOT/src/backend/lua/write.lua")" >/dev/null
        [ "$BASE_SHA" = none ] || redis-cli -p "$port" script load "$BASE_SCRIPT" >/dev/null
        redis-cli -p "$port" --pipe <"$WORK/setup.resp" >/dev/null
        redis-cli -p "$port" --pipe <"$WORK/$1.resp" >/dev/null
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
        wait "$vpid" || true
        callgrind_annotate "$dir/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
    }
    base=$(counted none)
    echo "| variant | Redis instructions per operation |"
    echo "|---|---:|"
    for v in $VARIANTS; do echo "| $v | $(( ($(counted "$v") - base) / N )) |"; done
    exit 0
fi

echo "| variant | Redis CPU µs per write (each rep) |"
echo "|---|---|"
for v in $VARIANTS; do
    line="| $v |"
    for _ in $(seq 1 "$REPS"); do
        a=$(cpu)
        taskset -c 1 redis-cli -p "$PORT" --pipe <"$WORK/$v.resp" >/dev/null
        b=$(cpu)
        line="$line $(awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN { printf "%.2f", (b - a) / n * 1e6 }')"
    done
    echo "$line |"
done
