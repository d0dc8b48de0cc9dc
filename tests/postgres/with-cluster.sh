#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster (tests/postgres/cluster.sh) started for it
# and RELAY_TEST_POSTGRES pointing at it; the cluster is stopped and removed when the command
# ends, however it ends. For one module's tests on both backends:
#
#   tests/postgres/with-cluster.sh cargo test --release -p agent-relay --test all -- messages::
#
# (`-- postgres::` runs only the Postgres variants). Its exit status is the command's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
exports="$("$here/cluster.sh" start)"
eval "$exports"
trap '"$here/cluster.sh" stop "$RELAY_TEST_POSTGRES_DIR"' EXIT
status=0
"$@" || status=$?
exit "$status"
