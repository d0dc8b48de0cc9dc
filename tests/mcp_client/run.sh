#!/usr/bin/env bash
# The MCP server against clients nobody here wrote: the official Python SDK (both protocol eras
# over HTTP, and stdio) and Claude Code's own `claude mcp list`. Each runs from pinned, locked
# files in an environment this script makes (reused while the pins are unchanged).
# Usage: tests/mcp_client/run.sh PATH/TO/agent-relay
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
relay="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
target_dir="$(dirname "$(dirname "$relay")")"

venv="$target_dir/mcp-client-venv"
if ! cmp -s "$here/requirements.txt" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.installed-from"
fi
"$venv/bin/python" "$here/test_mcp.py" "$relay"

# Claude Code's own CLI, from its lock file (npm ci; skipped while node_modules holds that lock).
claude_dir="$here/claude-code"
if ! cmp -s "$claude_dir/package-lock.json" "$claude_dir/node_modules/.installed-from-lock" 2>/dev/null; then
    (cd "$claude_dir" && npm ci --no-audit --no-fund --silent)
    cp "$claude_dir/package-lock.json" "$claude_dir/node_modules/.installed-from-lock"
fi
(cd "$here" && "$venv/bin/python" claude_check.py "$relay" "$claude_dir/node_modules/.bin/claude")
