#!/usr/bin/env bash
# Writes agent_relay/relay.wasm and agent_relay/signatures.json (git-ignored) from the built
# `agent-relay` binary: the same component bytes it embeds, and its exports' types.
# Usage: hosts/python/build.sh [path/to/agent-relay]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
relay="${1:-$here/../../target/release/agent-relay}"
"$relay" component --out "$here/agent_relay/relay.wasm"
"$relay" component --signatures --out "$here/agent_relay/signatures.json"
