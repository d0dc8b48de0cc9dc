#!/usr/bin/env bash
# The per-call time of the same send-message on both hosts, in one run:
#   scripts/bench-embed.sh [CALLS] [full|normal|off]   (after scripts/test.sh built both hosts)
# Each host opens a fresh SQLite file (WAL, synchronous as given, default full: an fsync per
# commit; `off` shows the hosts' own cost), registers alice, warms up, then
# times CALLS sends from user to alice, each a fresh component instance and one transaction.
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-1000}"
synchronous="${2:-full}"
cargo bench --quiet -p agent-relay --bench embed_send -- "$calls" "$synchronous" 2>&1 | grep 'host:'
node hosts/node/conformance.mjs --bench "$calls" --synchronous "$synchronous"
