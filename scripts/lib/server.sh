# shellcheck shell=bash
# The bench server a script started: `SERVER_PID` holds its PID (empty: none). `stop_server`
# stops exactly that process (TERM, then KILL after 5 s) and forgets it. Sourced by bench.sh and
# load_smoke.sh.

SERVER_PID=""

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
