#!/usr/bin/env bash
# Release hygiene, run by scripts/test.sh after the tests:
# - `cargo deny check bans licenses sources` (cargo-deny installed from crates.io when missing;
#   advisories are not checked, see deny.toml);
# - `cargo package`: the crate builds from exactly the files it would publish, with the
#   toolchain its `rust-version` names (installed with rustup when missing), so one build
#   checks both. If that toolchain cannot be installed, the package is built with the current
#   one and the check says that the rust-version is untested.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo deny check bans licenses sources"
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "cargo-deny missing: installing it from crates.io (a few minutes, once)"
  cargo install --locked cargo-deny >/dev/null
fi
cargo deny --log-level error check bans licenses sources

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
features=tls-rustls,actix-session,metrics
if rustup run "$msrv" rustc --version >/dev/null 2>&1 ||
  rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
  echo "== cargo +$msrv package (rust-version $msrv; features $features)"
  # Its own target directory: artefacts of two compilers do not mix.
  CARGO_TARGET_DIR=target/msrv cargo "+$msrv" package --locked --allow-dirty --quiet \
    --features "$features"
else
  echo "warning: toolchain $msrv cannot be installed here: rust-version $msrv is untested" >&2
  echo "== cargo package (features $features)"
  cargo package --locked --allow-dirty --quiet --features "$features"
fi
