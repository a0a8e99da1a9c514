#!/usr/bin/env bash
# Release hygiene, run by scripts/test.sh after the tests:
# - the crate builds with the toolchain its `rust-version` names (installed with rustup when
#   missing; if it cannot be installed, the check says so and the rust-version stays untested);
# - `cargo deny check bans licenses sources` (cargo-deny installed from crates.io when missing;
#   advisories are not checked, see deny.toml);
# - `cargo package` builds the crate from exactly the files it would publish.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
echo "== rust-version $msrv: cargo +$msrv check (lib, every feature but tls-native-tls)"
if rustup run "$msrv" rustc --version >/dev/null 2>&1 ||
  rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
  # Its own target directory: artefacts of two compilers do not mix.
  CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check --locked --lib \
    --features tls-rustls,actix-session,metrics
else
  echo "warning: toolchain $msrv cannot be installed here: rust-version $msrv is untested" >&2
fi

echo "== cargo deny check bans licenses sources"
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "cargo-deny missing: installing it from crates.io (a few minutes, once)"
  cargo install --locked cargo-deny >/dev/null
fi
cargo deny --log-level error check bans licenses sources

echo "== cargo package (builds the crate from the files it would publish)"
cargo package --locked --allow-dirty --quiet
