#!/usr/bin/env bash
# Release hygiene, run by scripts/test.sh after the tests:
# - `cargo deny check bans licenses sources` (cargo-deny installed from crates.io when missing;
#   advisories are not checked, see deny.toml);
# - `cargo package`, then the packaged crate, unpacked on its own, checked with the toolchain
#   its `rust-version` names (installed with rustup when missing): the published files compile
#   with the oldest compiler the crate claims. If that toolchain cannot be installed, the
#   package is checked with the current one and the script says the rust-version is untested.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo deny check bans licenses sources"
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "cargo-deny missing: installing it from crates.io (a few minutes, once)"
  cargo install --locked cargo-deny >/dev/null
fi
cargo deny --log-level error check bans licenses sources

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
features=tls-rustls,actix-session,metrics
echo "== cargo package, then the packaged crate checked on its own (features $features)"
cargo package --locked --allow-dirty --no-verify --quiet
unpacked=target/package-check
rm -rf "$unpacked" && mkdir -p "$unpacked"
tar -xzf "target/package/circumflex-session-$version.crate" -C "$unpacked"
manifest=$unpacked/circumflex-session-$version/Cargo.toml
if rustup run "$msrv" rustc --version >/dev/null 2>&1 ||
  rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
  echo "   with the rust-version toolchain, $msrv"
  # Its own target directory: artefacts of two compilers do not mix.
  CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check --locked --quiet --lib \
    --manifest-path "$manifest" --features "$features"
else
  echo "warning: toolchain $msrv cannot be installed here: rust-version $msrv is untested" >&2
  cargo check --locked --quiet --lib --manifest-path "$manifest" --features "$features"
fi
