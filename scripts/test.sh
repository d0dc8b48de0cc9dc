#!/usr/bin/env bash
# The whole test suite: formatting, lints as errors, and every test in the release profile (one
# optimised build serves the relay and the tests, so wasmtime is compiled once); then the same
# relay component in the second host (Node.js, hosts/node) against the same conformance cases,
# answer for answer with the Rust host.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
# The commit guard's tests (tests/all/guard.rs) and the README's walk-through commit in real git
# repositories: git is installed when missing (as root, on Debian).
if ! command -v git >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --release --all-targets -- -D warnings
# One throwaway PostgreSQL cluster for the whole run (installed from Debian's packages when
# missing): the behaviour suites and the conformance cases run on it as well as on SQLite
# (docs/testing.md). It is stopped and its directory removed when this script ends, however.
root="$(pwd)"
pg_exports="$(tests/postgres/cluster.sh start)"
eval "$pg_exports"
trap '"$root/tests/postgres/cluster.sh" stop "$RELAY_TEST_POSTGRES_DIR"' EXIT
# The guest is tested through the host (it has no native tests): built natively, its cdylib's
# export names (`agent-relay:relay/commands@0.6.0#...`) break rust-lld's version script.
cargo_log="$(mktemp)"
cargo test --release -p agent-relay -p agent-relay-core 2>&1 | tee "$cargo_log"

# The served OpenAPI document: openapi-spec-validator and a short Schemathesis run (pinned Python
# tools in a cached venv) find nothing.
tests/openapi/check.sh

# The README's walk-throughs, pasted verbatim into a shell against a fresh server, still work.
tests/readme/run.sh

# The dashboard page in headless Chromium (Debian's package, installed when missing) driven by
# Playwright (pinned, cached venv), one browser for the whole run; also /metrics parsed.
browser_log="$(mktemp)"
tests/browser/run.sh 2>&1 | tee "$browser_log"

# The second host: the test component (the one the binary embeds plus the fault-injection
# exports, as the Rust conformance run uses it), transpiled by jco, over better-sqlite3.
target_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
relay="$target_dir/release/agent-relay"
# (Built by tests/programs, which only the tests depend on.)
faults="${RELAY_GUEST_TARGET_DIR:-$target_dir/guest}/relay-with-faults.wasm"
# MCP clients nobody here wrote: the official Python SDK (both eras, stdio) and Claude Code.
mcp_log="$(mktemp)"
tests/mcp_client/run.sh "$relay" 2>&1 | tee "$mcp_log"

mkdir -p hosts/node/build
"$relay" component --component "$faults" --out hosts/node/build/relay.wasm
"$relay" component --component "$faults" --signatures --out hosts/node/build/signatures.json
cd hosts/node
# npm ci from the lock file; skipped when node_modules already holds exactly that lock file.
if ! cmp -s package-lock.json node_modules/.installed-from-lock 2>/dev/null; then
    npm ci --no-audit --no-fund
    cp package-lock.json node_modules/.installed-from-lock
fi
node --test store.test.mjs
node transpile.mjs
# Calls in a worker thread: a looping call stopped past the time limit, memory capped (limits.test.mjs).
node --test limits.test.mjs
node example.mjs >/dev/null
node conformance.mjs --compare "$target_dir/tmp/conformance"
cd ../..

# The third host: the package hosts/python over wasmtime-py (its own venv from pinned requirements).
python_log="$(mktemp)"
hosts/python/test.sh 2>&1 | tee "$python_log"

# One closing line for the whole Rust suite.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "rust tests: %d passed, %d failed\n", passed, failed }' "$cargo_log"
grep -h -e '^mcp client tests:' -e '^claude code checks:' "$mcp_log"
grep -h '^browser tests:' "$browser_log"
grep -h '^python host tests:' "$python_log"
