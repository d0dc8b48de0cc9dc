#!/usr/bin/env bash
# The served OpenAPI document, checked from outside: openapi-spec-validator finds no error in it,
# and a short Schemathesis run with every check finds no failure (no 5xx, every answer as the
# document says, every request the document allows accepted, every one it forbids refused).
#
# The tools come from tests/openapi/requirements.txt (pinned), installed once into a virtual
# environment under the target directory and reused while the file is unchanged. Runs the built
# release binary (`cargo build --release` first) on a fresh database.
#
#   tests/openapi/check.sh [EXAMPLES]   # test cases per operation, default 5
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${1:-5}"
target_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
relay="$target_dir/release/agent-relay"
venv="$target_dir/openapi-venv"
requirements=tests/openapi/requirements.txt

if ! cmp -s "$requirements" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.installed-from"
fi

work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

token="openapi-check-operator-token-$$-$RANDOM"
# A held inbox (`wait=`) is cut to one second, so generated waits cost little.
RELAY_OPERATOR_TOKEN="$token" RELAY_LOG=info "$relay" serve --listen 127.0.0.1:0 \
    --db "$work/relay.db" --max-wait-secs 1 2>"$work/server.log" &
server=$!
base=""
for _ in $(seq 100); do
    base="$(sed -n 's/.*listen=\([^ ]*\).*/\1/p' "$work/server.log" | head -n 1)"
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$base" ] || { echo "the relay did not start listening" >&2; exit 1; }
url="http://$base/v1/openapi.json"

curl -fsS "$url" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" --schema 3.0 --validation-errors all "$work/openapi.json"

# The event stream never ends by design, so it is left out of the run (tests/all/push.rs covers it).
schemathesis() {
    "$venv/bin/st" --config-file tests/openapi/schemathesis.toml run "$url" \
        --checks all \
        --header "Authorization: Bearer $token" \
        --exclude-operation-id poll-inbox-stream \
        --max-examples "$examples" \
        --seed 1 \
        --workers 2 \
        --request-timeout 10 \
        --suppress-health-check all \
        --no-color
}
# CPython 3.11 can fail to parse a source file with "SystemError: AST constructor recursion depth
# mismatch" when hypothesis describes a filter's lambda deep in a call stack (a bug of the
# interpreter's parser; it depends on thread timing, so it comes and goes: two clean runs of the
# same API passed, the third crashed on PUT /v1/integrations/{source}).
# That is a crash of the tool, not a finding about the relay: the run is made once more then.
log="$work/schemathesis.log"
status=0
schemathesis 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ] && grep -q "AST constructor recursion depth mismatch" "$log" \
    && ! grep -qE "^(_+ )?Failed|FAILURES" "$log"; then
    echo "Schemathesis crashed on CPython's parser bug (not a finding): running it once more" >&2
    status=0
    schemathesis || status=$?
fi
exit "$status"
