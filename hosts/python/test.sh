#!/usr/bin/env bash
# The Python host's tests: a cached venv from requirements.txt, the component written by build.sh
# from the built binary (and the fault-injection test component), then pytest, the shared conformance
# cases among them, answer for answer with the Rust host's transcript (written by the Rust tests to
# $target/tmp/conformance, which scripts/test.sh runs first). Closing line:
# `python host tests: N passed, M failed`.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="$(cd "${CARGO_TARGET_DIR:-$root/target}" && pwd)"
relay="$target_dir/release/agent-relay"
faults="${RELAY_GUEST_TARGET_DIR:-$target_dir/guest}/relay-with-faults.wasm"
venv="$target_dir/tmp/python-host-venv"
if ! cmp -s "$here/requirements.txt" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q -r "$here/requirements.txt" || exit 1
    cp "$here/requirements.txt" "$venv/.installed-from"
fi
"$here/build.sh" "$relay" || exit 1
export RELAY_BINARY="$relay"
export RELAY_FAULTS_DIR="$target_dir/tmp/python-host-faults"
export RELAY_CONFORMANCE_DIR="$target_dir/tmp/conformance"
mkdir -p "$RELAY_FAULTS_DIR"
"$relay" component --component "$faults" --out "$RELAY_FAULTS_DIR/relay.wasm" || exit 1
"$relay" component --component "$faults" --signatures --out "$RELAY_FAULTS_DIR/signatures.json" || exit 1
log="$(mktemp)"
(cd "$here" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests) 2>&1 | tee "$log"
passed="$(grep -oE '[0-9]+ passed' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)"
failed="$(grep -oE '[0-9]+ (failed|error)' "$log" | awk '{s+=$1} END {print s+0}')"
rm -f "$log"
echo "python host tests: ${passed:-0} passed, ${failed:-0} failed"
[ "${failed:-0}" = 0 ] && [ "${passed:-0}" != 0 ]
