#!/usr/bin/env bash
# Redis's own instructions per session operation, counted by callgrind: a deterministic
# companion to guard_cost.sh (which times Redis's CPU and moves with the machine's load).
#
# For each variant, starts a fresh redis-server on a free loopback port under
# `valgrind --tool=callgrind`, loads the crate's scripts, fills 1000 sessions, pipes N
# operations with `redis-cli --pipe`, shuts the server down, and reports (total - total of the
# same run without the operations) / N. Needs valgrind, redis-server, redis-cli, python3.
#
# Variants: hset (a bare HSET, no guard); fast (the fast write as plan/fast.rs sends it, no
# refresh due); lua and lua+pexpire (the write script without and with its refresh); read-old
# (PEXPIRE + HMGET: a read before issue #13, refreshing on every use) and read (HMGET with
# \0created, the read since: the refresh skipped within 10 % of the time to idle).
#
#   N=5000 scripts/redis_instructions.sh
set -euo pipefail

N=${N:-5000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
VPID=""
cleanup() { [ -z "$VPID" ] || kill "$VPID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for tool in valgrind redis-server redis-cli python3 callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "redis_instructions.sh: '$tool' is missing" >&2; exit 2; }
done

cat >"$WORK/gen.py" <<'PY'
import sys

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

mode, n, sha = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w = sys.stdout.buffer
ttl = "1800000"
for i in range(n):
    key = "session:%032x" % (i % 1000)
    if mode == "setup":
        if i < 1000:
            w.write(resp("HSET", key, "\0created", "1", "\0size", "14", "a", "alpha", "counter", "0"))
            w.write(resp("PEXPIRE", key, ttl))
    elif mode == "hset":
        w.write(resp("HSET", key, "counter", i))
    elif mode == "fast":
        w.write(resp("MULTI"))
        w.write(resp("HMGET", key, "\0created", "counter"))
        w.write(resp("HSET", key, "counter", i))
        w.write(resp("HINCRBY", key, "\0size", len("counter") + len(str(i))))
        w.write(resp("HLEN", key))
        w.write(resp("PEXPIRE", key, "60000", "NX"))
        w.write(resp("EXEC"))
    elif mode in ("lua", "lua+pexpire"):
        refresh = ttl if mode == "lua+pexpire" else "0"
        w.write(resp("EVALSHA", sha, 1, key, "e", "0", refresh, "256", "262144", "s", "counter", i))
    elif mode == "read-old":
        w.write(resp("PEXPIRE", key, ttl))
        w.write(resp("HMGET", key, "a", "counter"))
    elif mode == "read":
        w.write(resp("HMGET", key, "\0created", "a", "counter"))
PY

# Total instructions of one server's life: start, fill, run `$1` (or nothing), shut down.
total() {
    local dir port
    dir=$(mktemp -d "$WORK/run.XXXX")
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" redis-server --port "$port" \
        --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
    VPID=$!
    for _ in $(seq 1 150); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
    local sha
    sha=$(redis-cli -p "$port" script load "$(cat "$ROOT/src/backend/lua/index.lua" "$ROOT/src/backend/lua/write.lua")")
    python3 "$WORK/gen.py" setup 1000 "$sha" | redis-cli -p "$port" --pipe >/dev/null
    if [ "$1" != none ]; then
        python3 "$WORK/gen.py" "$1" "$N" "$sha" | redis-cli -p "$port" --pipe >/dev/null
    fi
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$VPID" || true
    VPID=""
    callgrind_annotate "$dir/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

base=$(total none)
echo "| variant | Redis instructions per operation |"
echo "|---|---:|"
for v in ${VARIANTS:-hset fast lua lua+pexpire read-old read}; do
    echo "| $v | $(( ($(total "$v") - base) / N )) |"
done
