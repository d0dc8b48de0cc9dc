#!/usr/bin/env bash
# The dashboard page (docs/dashboard.md) in a real browser: headless Chromium from Debian's
# packages (installed when missing), driven by Playwright for Python against a fresh
# `agent-relay serve` per test module; also `GET /metrics` read with prometheus_client's parser.
# Screenshots land in target/screenshots/. The tools come from tests/browser/requirements.txt
# (pinned), installed once into a virtual environment under the target directory.
#
#   tests/browser/run.sh [PYTEST ARGS]   # RELAY_BIN: the binary (default target/release/agent-relay)
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
export RELAY_BIN="${RELAY_BIN:-$target_dir/release/agent-relay}"
[ -x "$RELAY_BIN" ] || { echo "no relay binary at $RELAY_BIN (cargo build --release)" >&2; exit 1; }
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export SCREENSHOTS="$target_dir/screenshots"

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends chromium >/dev/null
    else
        echo "no Chromium at $CHROMIUM (apt-get install chromium, or run as root on Debian)" >&2
        exit 1
    fi
fi

venv="$target_dir/browser-venv"
requirements=tests/browser/requirements.txt
if ! cmp -s "$requirements" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.installed-from"
fi

mkdir -p "$SCREENSHOTS"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/browser "$@" 2>&1 | tee "$log" || status=$?
# One closing line from pytest's summary ("3 passed, 1 failed in 9.1s").
summary="$(grep -E '^=*.*(passed|failed|error).* in [0-9.]+s' "$log" | tail -n 1 || true)"
passed="$( (grep -oE "[0-9]+ passed" <<<"$summary" || true) | awk '{ n += $1 } END { print n + 0 }')"
failed="$( (grep -oE "[0-9]+ (failed|errors?)" <<<"$summary" || true) | awk '{ n += $1 } END { print n + 0 }')"
echo "browser tests: $passed passed, $failed failed"
exit "$status"
