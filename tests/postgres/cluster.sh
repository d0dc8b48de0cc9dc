#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (docs/testing.md, "The Postgres variants").
#
#   eval "$(tests/postgres/cluster.sh start)"   # prints the two exports below
#   tests/postgres/cluster.sh stop "$RELAY_TEST_POSTGRES_DIR"
#
# `start` installs PostgreSQL's server from Debian's packages when `initdb`/`pg_ctl` are nowhere
# to be found (as root, non-interactive), makes a cluster in a new temporary directory (as the
# unprivileged `postgres` user when run as root: the server refuses to run as root), starts it on
# a free loopback port with its unix socket in that directory, and prints
#   export RELAY_TEST_POSTGRES=postgres://relay@127.0.0.1:PORT/postgres
#   export RELAY_TEST_POSTGRES_DIR=DIR
#   export RELAY_TEST_POSTGRES_CA=DIR/tls/ca.crt    (the CA of the server's TLS certificate)
# The user `relay` may create databases (the harness makes one per server). Durability is off
# (no fsync): the cluster lives for one run. `stop DIR` stops it and removes DIR; it is safe to
# call twice, and on a directory whose cluster never started.
set -euo pipefail

log() { echo "postgres cluster: $*" >&2; }

# The directory holding initdb and pg_ctl: PATH first, then Debian's versioned directories
# (newest first).
find_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

install_postgres() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "PostgreSQL's server (initdb, pg_ctl) is not installed; install it (Debian: apt-get install postgresql) or put its bin directory on PATH"
        exit 1
    fi
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists of a clean machine are empty: update only when the install cannot find it.
    if ! apt-get install -y -q postgresql >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        apt-get install -y -q postgresql >/dev/null
    fi
}

# Runs a command as the cluster's owner: ourselves, or `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    local bin
    if ! bin="$(find_bin)"; then
        install_postgres
        bin="$(find_bin)" || { log "no initdb/pg_ctl after installing postgresql"; exit 1; }
    fi
    owner="$(id -un)"
    if [ "$(id -u)" = 0 ]; then
        owner=postgres
        if ! id "$owner" >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
        fi
    fi
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/relay-pg-XXXXXX")"
    chmod 700 "$dir"
    [ "$owner" = "$(id -un)" ] || chown "$owner" "$dir"
    if ! as_owner "$bin/initdb" -D "$dir/data" -U relay --auth=trust --no-sync \
        --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        log "initdb failed"
        exit 1
    fi
    # TLS for the tests that connect with sslmode (tests/all/hosts.rs): a CA of the run's own and
    # a server certificate for 127.0.0.1 it signed. The server also takes plain connections.
    if ! command -v openssl >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null 2>&1 ||
                { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null; }
        else
            log "openssl is missing: install it (the TLS tests need a certificate)"
            exit 1
        fi
    fi
    mkdir -p "$dir/tls"
    (
        cd "$dir/tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=agent-relay test CA" \
            -keyout ca.key -out ca.crt >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout server.key -out server.csr >/dev/null 2>&1
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.crt >/dev/null 2>&1
        chmod 600 server.key
    ) || { rm -rf "$dir"; log "could not make the test certificates"; exit 1; }
    [ "$owner" = "$(id -un)" ] || chown -R "$owner" "$dir/tls"
    local port tries=0
    while :; do
        tries=$((tries + 1))
        port=$((20000 + RANDOM % 30000))
        port_in_use "$port" && continue
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 \
                -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key" \
            start >/dev/null; then
            break
        fi
        if [ "$tries" -ge 5 ]; then
            cat "$dir/server.log" >&2 || true
            rm -rf "$dir"
            log "the server did not start"
            exit 1
        fi
    done
    echo "$bin" >"$dir/bin"
    echo "$owner" >"$dir/owner"
    log "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"
    echo "export RELAY_TEST_POSTGRES=postgres://relay@127.0.0.1:$port/postgres"
    echo "export RELAY_TEST_POSTGRES_DIR=$dir"
    echo "export RELAY_TEST_POSTGRES_CA=$dir/tls/ca.crt"
}

stop() {
    local dir="${1:?usage: cluster.sh stop DIR}"
    [ -d "$dir" ] || return 0
    if [ -f "$dir/bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        local bin
        bin="$(cat "$dir/bin")"
        owner="$(cat "$dir/owner")"
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
