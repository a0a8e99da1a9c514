# shellcheck shell=bash
# The bench server a script started: `SERVER_PID` holds its PID (empty: none). `stop_server`
# stops exactly that process (TERM, then KILL after 5 s) and forgets it; `server_port` waits for
# its port. Sourced by bench.sh and load_smoke.sh.

SERVER_PID=""

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# Prints the port the started server (SERVER_PID) says it listens on in its log `$1`, once it
# says so; prints nothing if it exits or stays silent for 10 s.
server_port() {
    local port=""
    for _ in $(seq 1 100); do
        port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$1" 2>/dev/null | head -n1 || true)
        [ -n "$port" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$port"
}
