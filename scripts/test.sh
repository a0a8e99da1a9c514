#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing (redis-server for the
# integration tests; libssl-dev and pkg-config for the tls-native-tls build), then runs
# formatting, lints, tests (examples and benches compiled too), a short load run with every answer
# checked (scripts/load_smoke.sh) and docs with warnings denied.
#
# The main run has the tls-rustls and actix-session features, so that the TLS tests
# (tests/http/tls.rs, tests/cluster/tls.rs) and the adapter's (tests/http/actix_session.rs) run;
# the default feature set (no TLS, no adapter) is linted; the TLS tests run once more with
# tls-native-tls.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v pkg-config >/dev/null 2>&1; then
  missing+=(pkg-config libssl-dev)
elif ! pkg-config --exists openssl; then
  missing+=(libssl-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}: installing with apt-get (integration tests need a real Redis," \
    "the tls-native-tls build needs OpenSSL's headers)"
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "error: cannot install ${missing[*]} (need apt-get as root or sudo)." >&2
    echo "Install Redis 6.2+ (with TLS), OpenSSL's headers and pkg-config, then rerun." >&2
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
echo "== cargo clippy: default features (no TLS, no adapter), no default features (no metrics), tls-rustls with actix-session, tls-native-tls"
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --no-default-features -- -D warnings
cargo clippy --all-targets --features tls-rustls,actix-session -- -D warnings
cargo clippy --lib --test http --test cluster --features tls-native-tls -- -D warnings
# The demo tests (tests/http/demo.rs, tls.rs) run target/debug/examples/demo, which `cargo
# test` does not build (it builds examples as test harnesses): build it from this source before
# each run, with that run's TLS library.
echo "== cargo test --features tls-rustls,actix-session"
cargo build --example demo --features tls-rustls,actix-session
cargo test --all-targets --features tls-rustls,actix-session
cargo test --doc --features tls-rustls,actix-session
echo "== the TLS tests again, with --features tls-native-tls"
cargo build --example demo --features tls-native-tls
cargo test --test http --test cluster --features tls-native-tls -- tls::
echo "== the load path: bench_server and loadtest, 5 s each of /incr and /read, answers checked"
./scripts/load_smoke.sh
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features tls-rustls,actix-session
./scripts/release_checks.sh
echo "== all checks passed"
