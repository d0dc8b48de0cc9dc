#!/usr/bin/env bash
# The README's walk-throughs and docs/guide.md's, run as a reader pastes them: every ```sh block
# of the sections named below is taken verbatim from its file (found by heading, so edits to the
# docs are what runs) and run with `set -euo pipefail` in the directory of a fresh
# `agent-relay serve`, the binary on PATH. A block fails, naming itself, its file and line, when
# a command fails; `curl` gets
# `--fail-with-body -S`, so an HTTP error answer fails too, unless the README line itself handles
# the failure (`cmd || echo ...`, `-w '%{http_code}'` and no `-f`, as a reader would see it).
# The one change to the text: the README's address 127.0.0.1:8787 becomes the free port the
# server took. Streams (`curl -N`, `agent-relay watch`) that never end by design are cut after
# STREAM_SECS and count as passed when they were cut, not when they failed.
#
#   tests/readme/run.sh [README]   # RELAY_BIN: the binary (default target/release/agent-relay)
# (README replaces README.md; the sections of docs/guide.md are read from the checkout.)
set -euo pipefail
if [ -n "${1:-}" ]; then readme="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; fi
cd "$(dirname "$0")/../.."
readme="${readme:-$PWD/README.md}"
guide="$PWD/docs/guide.md"
relay="${RELAY_BIN:-${CARGO_TARGET_DIR:-target}/release/agent-relay}"
relay="$(cd "$(dirname "$relay")" && pwd)/$(basename "$relay")"
[ -x "$relay" ] || { echo "no relay binary at $relay (cargo build --release, or set RELAY_BIN)" >&2; exit 1; }
export STREAM_SECS="${STREAM_SECS:-2}"

# The tools the blocks use; on a clean Debian machine (CI runs as root) they are installed.
missing=()
for tool in curl jq openssl timeout git; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        packages=("${missing[@]/timeout/coreutils}")
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            ca-certificates "${packages[@]}" >/dev/null
    else
        echo "missing tools: ${missing[*]} (install them, or run as root on Debian)" >&2
        exit 1
    fi
fi

# Each run is one fresh server and one shell, so the blocks of a run share their variables ($OP,
# $R, $ALICE, ...) as a reader's terminal does. The CLI walk-through repeats the curl one's steps
# from scratch, so it gets a server of its own.
# A section is FILE:HEADING, FILE being README (the README) or GUIDE (docs/guide.md).
runs=(
    "README:Walk-through with curl|GUIDE:Wire up CI or an error tracker|GUIDE:Connect a chat bridge|GUIDE:Run an orchestrator|GUIDE:Push: wake when a message arrives"
    "README:Walk-through with the CLI"
    "README:Wake an idle agent"
    "README:Three agents in one checkout"
    "README:Several agents in one repository"
)

work="$(mktemp -d)"
server=""
stop_server() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    server=""
}
trap 'stop_server; rm -rf "$work"' EXIT

# Writes the ```sh blocks of section $1 (a `## ` heading, matched from its start) of file $3 to
# files under $2 named after their file and first line (so the shell's own messages, e.g. an
# unbound variable, name it too) and prints one "FILE LINE" per block. A block right after the
# line `<!-- readme-test: skip REASON -->` is left out (REASON says why; GitHub does not show it).
extract() {
    awk -v section="$1" -v dir="$2" -v name="$(basename "$3")" '
        /^## / { inside = (index(substr($0, 4), section) == 1); next }
        !inside { next }
        /^<!-- readme-test: skip/ { skip = 1; next }
        /^```sh[[:space:]]*$/ && !block {
            block = 1
            if (skip) { file = "/dev/null" } else { file = sprintf("%s/%s-line-%d.sh", dir, name, NR + 1); print file, NR }
            skip = 0; next
        }
        /^```/ && block { block = 0; close(file); next }
        block { print > file }
        /[^[:space:]]/ { skip = 0 }
    ' "$3"
}

status=0
for i in "${!runs[@]}"; do
    dir="$work/run-$i"
    mkdir -p "$dir/blocks"
    IFS='|' read -r -a sections <<<"${runs[$i]}"
    driver="$dir/blocks/driver.sh"
    : >"$driver"
    blocks=0
    for j in "${!sections[@]}"; do
        section="${sections[$j]#*:}"
        case "${sections[$j]%%:*}" in README) source_file="$readme" ;; *) source_file="$guide" ;; esac
        shown="${source_file#"$PWD/"}"
        listing="$(extract "$section" "$dir/blocks" "$source_file")"
        [ -n "$listing" ] || { echo "$shown: no sh block under the heading '## $section'" >&2; exit 1; }
        while read -r file line; do
            blocks=$((blocks + 1))
            printf 'BLOCK=%q; BLOCK_FILE=%q; BLOCK_LINE=%d; echo "--- $BLOCK ($BLOCK_FILE line $((BLOCK_LINE + 1)))"; source %q\n' \
                "$section" "$source_file" "$line" "$file" >>"$driver"
        done <<<"$listing"
    done

    (
        cd "$dir"
        # As on a reader's machine: the token file is written, the default database used.
        unset RELAY_OPERATOR_TOKEN RELAY_DB RELAY_LISTEN RELAY_URL RELAY_TOKEN
        RELAY_LOG=info "$relay" serve --listen 127.0.0.1:0 2>"$dir/server.log" &
        echo $! >"$dir/server.pid"
    )
    server="$(cat "$dir/server.pid")"
    base=""
    for _ in $(seq 100); do
        base="$(sed -n 's/.*listen=\([^ ]*\).*/\1/p' "$dir/server.log" | head -n 1)"
        [ -n "$base" ] && break
        kill -0 "$server" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$base" ] || { echo "the relay did not start listening" >&2; exit 1; }
    sed -i "s/127\.0\.0\.1:8787/$base/g" "$dir"/blocks/*-line-*.sh

    mkdir -p "$dir/bin"
    ln -sf "$relay" "$dir/bin/agent-relay"
    echo "=== run $((i + 1)): ${runs[$i]//|/, } ($blocks blocks, relay at $base)"
    start=$SECONDS
    # Not under `if`/`||`: there bash ignores `set -e` and the ERR trap inside the subshell too.
    set +e
    (
        cd "$dir"
        export PATH="$dir/bin:$PATH"
        unset RELAY_OPERATOR_TOKEN RELAY_DB RELAY_LISTEN RELAY_URL RELAY_TOKEN
        set -euo pipefail
        # HTTP errors fail the command; a stream the reader would stop with ^C is cut here.
        curl() {
            local arg stream=0 rc=0
            for arg in "$@"; do [ "$arg" = -N ] && stream=1; done
            if [ "$stream" = 1 ]; then
                command curl --fail-with-body --no-progress-meter --max-time "$STREAM_SECS" "$@" || rc=$?
                [ "$rc" = 28 ] && rc=0
            else
                command curl --fail-with-body -S "$@" || rc=$?
            fi
            echo
            return "$rc"
        }
        agent-relay() {
            local rc=0
            if [ "${1:-}" = watch ]; then
                timeout "$STREAM_SECS" "$dir/bin/agent-relay" "$@" || rc=$?
                [ "$rc" = 124 ] && rc=0
            else
                "$dir/bin/agent-relay" "$@" || rc=$?
            fi
            return "$rc"
        }
        # `set -u` and syntax errors stop the shell without the ERR trap: the EXIT trap names the
        # block then (the shell's message above names the line).
        failed=""
        trap '[ $? = 0 ] || [ -n "$failed" ] || echo "FAILED: block \"$BLOCK\" ($BLOCK_FILE line $((BLOCK_LINE + 1)) on)" >&2' EXIT
        trap 'rc=$?; failed=1; line=$((BLOCK_LINE + LINENO))
            echo "FAILED: block \"$BLOCK\", $BLOCK_FILE line $line (exit $rc): $(sed -n "${line}p" "$BLOCK_FILE")" >&2' ERR
        source "$driver"
    )
    rc=$?
    set -e
    if [ "$rc" != 0 ]; then
        status=1
        echo "--- server log (last lines)" >&2
        tail -n 20 "$dir/server.log" >&2
    fi
    echo "=== run $((i + 1)) took $((SECONDS - start)) s"
    stop_server
    [ "$status" = 0 ] || break
done
[ "$status" = 0 ] && echo "README walk-throughs: all blocks passed"
exit "$status"
