#!/usr/bin/env bash
# The whole test suite: formatting, lints as errors, and every test in the release profile (one
# optimised build serves the relay and the tests, so wasmtime is compiled once).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --release --all-targets -- -D warnings
# The guest is tested through the host: built natively it would not link as a component.
cargo test --workspace --release --exclude agent-relay-guest
