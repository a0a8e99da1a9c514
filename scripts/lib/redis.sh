# shellcheck shell=bash
# A private redis-server for one script run: on a free loopback port (never a fixed one, so a
# Redis on 6379 is never touched), pinned to a CPU with taskset, nothing saved to disk. Source it,
# then:
#
#   redis_start CPU LOG [redis-server args...]
#
# starts redis-server with the extra arguments, waits until it answers PING and sets REDIS_PORT,
# REDIS_PID and REDIS_URL. It adds `redis_stop` to the script's EXIT trap (keeping a trap the
# script set before), so that exactly that PID is stopped however the script ends; `redis_stop`
# may also be called earlier. Needs redis-server, redis-cli, taskset and ss.

REDIS_PORT=""
REDIS_PID=""
REDIS_URL=""

# A free TCP port on the loopback, picked at random from 20000-49999.
redis_free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        if [ -z "$(ss -Htln "( sport = :$p )")" ]; then
            echo "$p"
            return 0
        fi
    done
    echo "redis.sh: no free port found" >&2
    return 1
}

redis_start() {
    local cpu=$1 log=$2
    shift 2
    if [ -n "$REDIS_PID" ]; then
        echo "redis.sh: redis_start called twice (pid $REDIS_PID is running)" >&2
        return 1
    fi
    REDIS_PORT=$(redis_free_port) || return 1
    taskset -c "$cpu" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no "$@" >"$log" 2>&1 &
    REDIS_PID=$!
    # Chain onto the EXIT trap the script may already have (trap -p prints it quoted for eval).
    local previous=""
    eval "set -- $(trap -p EXIT)"
    [ $# -ge 3 ] && previous=$3
    # shellcheck disable=SC2064 # the previous trap is expanded now, on purpose
    trap "redis_stop; $previous" EXIT
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
        echo "redis.sh: redis-server did not answer PING on port $REDIS_PORT; its log:" >&2
        cat "$log" >&2 || true
        redis_stop
        return 1
    fi
    REDIS_URL=redis://127.0.0.1:$REDIS_PORT
}

# Stops the redis-server that redis_start started (by its PID only): TERM, then KILL after 3 s.
redis_stop() {
    [ -n "$REDIS_PID" ] || return 0
    kill "$REDIS_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
}

# A private Redis Cluster of N masters (no replicas), for benchmarks:
#
#   redis_cluster_start CPU DIR N
#
# starts N redis-server --cluster-enabled yes on free loopback ports (pinned to CPU, node files
# in DIR), joins them with `redis-cli --cluster create`, waits for cluster_state:ok, and sets
# CLUSTER_PORTS and CLUSTER_URLS (comma-separated). Like redis_start, it chains
# redis_cluster_stop onto the EXIT trap, which stops exactly those PIDs.
CLUSTER_PIDS=""
CLUSTER_PORTS=""
CLUSTER_URLS=""

redis_cluster_start() {
    local cpu=$1 dir=$2 n=$3 port addrs="" i
    mkdir -p "$dir"
    local previous=""
    eval "set -- $(trap -p EXIT)"
    [ $# -ge 3 ] && previous=$3
    # shellcheck disable=SC2064 # the previous trap is expanded now, on purpose
    trap "redis_cluster_stop; $previous" EXIT
    for i in $(seq 1 "$n"); do
        port=$(redis_free_port) || return 1
        taskset -c "$cpu" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf" \
            --dir "$dir" >"$dir/redis-$port.log" 2>&1 &
        CLUSTER_PIDS="$CLUSTER_PIDS $!"
        CLUSTER_PORTS="$CLUSTER_PORTS $port"
        addrs="$addrs 127.0.0.1:$port"
        CLUSTER_URLS="${CLUSTER_URLS:+$CLUSTER_URLS,}redis://127.0.0.1:$port"
    done
    for port in $CLUSTER_PORTS; do
        for _ in $(seq 1 50); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    # shellcheck disable=SC2086 # one argument per node address
    redis-cli --cluster create $addrs --cluster-yes >"$dir/create.log" 2>&1 || {
        echo "redis.sh: redis-cli --cluster create failed:" >&2
        cat "$dir/create.log" >&2
        return 1
    }
    for port in $CLUSTER_PORTS; do
        for _ in $(seq 1 100); do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
            sleep 0.1
        done
        redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' || {
            echo "redis.sh: the cluster did not reach cluster_state:ok on port $port" >&2
            return 1
        }
    done
}

redis_cluster_stop() {
    local pid
    for pid in $CLUSTER_PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $CLUSTER_PIDS; do
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CLUSTER_PIDS=""
}
