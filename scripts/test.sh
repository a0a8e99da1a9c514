#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs redis-server if it is missing, then runs
# formatting, lints, tests (examples and benches compiled too) and docs with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get (integration tests need a real Redis)"
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "error: cannot install redis-server (need apt-get as root or sudo)." >&2
    echo "Install Redis 6.2+ yourself so that 'redis-server' is on PATH, then rerun." >&2
    exit 1
  fi
fi
echo "using $(redis-server --version)"

# The tests start their own redis-server processes on free loopback ports; a Redis already on
# 6379 is neither needed nor touched.
echo "== layout (no mutual imports, no long file without a reason)"
python3 scripts/check_layout.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
cargo test --doc
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
echo "== all checks passed"
