#!/usr/bin/env bash
# A PostgreSQL server of its own for the tests and for trying a shared Optuna study on one machine.
#
#   eval "$(scripts/postgres_server.sh up)"   # start; prints: export RNNEXP_TEST_POSTGRES_URL=postgresql://...
#   scripts/postgres_server.sh url            # print that line again (server running)
#   scripts/postgres_server.sh down [--purge] # stop exactly the server `up` started; --purge also deletes its folder
#
# `up` installs Debian's `postgresql` with apt where its binaries are missing (as root), creates a
# cluster in a folder it owns ($RNNEXP_POSTGRES_DIR, default ${TMPDIR:-/tmp}/rnnexp-postgres), starts
# it on 127.0.0.1 only, on $RNNEXP_POSTGRES_PORT or else a free port, with a role (allowed to create
# databases) and a database both named `rnnexp`, and prints the URL (the only line on stdout). Connections from 127.0.0.1 are
# trusted (no password): a throw-away server for one machine, never one to expose. As root the
# server runs as the `postgres` user (PostgreSQL refuses to run as root). Running `up` twice
# reuses the running server. `down` reads the postmaster's pid from <folder>/postgres.pid, checks
# that pid is the postgres serving <folder>/data, and stops it (fast shutdown) with pg_ctl.
set -euo pipefail

DIR=${RNNEXP_POSTGRES_DIR:-${TMPDIR:-/tmp}/rnnexp-postgres}
DATA=$DIR/data
PIDFILE=$DIR/postgres.pid
PORTFILE=$DIR/port
ROLE=rnnexp
DATABASE=rnnexp

say() { echo "postgres_server: $*" >&2; }
die() { say "error: $*"; exit 1; }

pg_bindir() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$initdb" ] && command -v initdb >/dev/null; then initdb=$(command -v initdb); fi
    [ -n "$initdb" ] && dirname "$initdb"
}

# as the server's owner: `postgres` when we are root, else ourselves
as_owner() {
    if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running_pid() {  # the pid in $PIDFILE, if it is the postmaster of $DATA
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid=$(head -n 1 "$PIDFILE")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "-D $DATA" || return 1
    echo "$pid"
}

print_url() {
    echo "export RNNEXP_TEST_POSTGRES_URL=postgresql://$ROLE@127.0.0.1:$(cat "$PORTFILE")/$DATABASE"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

up() {
    if running_pid >/dev/null; then
        say "already running (pid $(running_pid), $DIR)"
        print_url
        return
    fi
    local bin
    bin=$(pg_bindir || true)
    if [ -z "$bin" ]; then
        [ "$(id -u)" = "0" ] || die "PostgreSQL is not installed and only root can install it (apt-get install postgresql)"
        say "installing Debian's postgresql"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
            || die "apt-get install postgresql failed"
        bin=$(pg_bindir || true)
        [ -n "$bin" ] || die "postgresql installed, but no initdb under /usr/lib/postgresql/*/bin"
    fi
    mkdir -p "$DIR"
    if [ "$(id -u)" = "0" ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as (reinstall postgresql)"
        chown postgres: "$DIR"
        chmod 700 "$DIR"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        rm -rf "$DATA"
        as_owner "$bin/initdb" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
            || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    local port=${RNNEXP_POSTGRES_PORT:-$(free_port)}
    echo "$port" > "$PORTFILE"
    # fsync off: a test server; durability across a power cut is not wanted here, speed is
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c fsync=off -c max_connections=200" start >&2 \
        || { tail -n 20 "$DIR/server.log" >&2; die "the server did not start (log: $DIR/server.log)"; }
    head -n 1 "$DATA/postmaster.pid" > "$PIDFILE"
    local psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q)
    if ! "${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'" | grep -q 1; then
        # CREATEDB: a test may work in a database of its own (tests/test_optuna_sweeper.py)
        "${psql[@]}" -c "CREATE ROLE $ROLE LOGIN CREATEDB" >&2
    fi
    if ! "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1; then
        "${psql[@]}" -c "CREATE DATABASE $DATABASE OWNER $ROLE" >&2
    fi
    say "running (pid $(cat "$PIDFILE"), 127.0.0.1:$port, folder $DIR)"
    print_url
}

down() {
    local pid
    if pid=$(running_pid); then
        local bin
        bin=$(pg_bindir) || die "no pg_ctl to stop pid $pid with"
        as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >&2 || die "pg_ctl stop failed for pid $pid"
        say "stopped pid $pid"
    else
        say "not running (no live postmaster of $DATA in $PIDFILE)"
    fi
    rm -f "$PIDFILE"
    if [ "${1:-}" = "--purge" ]; then
        rm -rf "$DIR"
        say "removed $DIR"
    fi
}

case "${1:-}" in
    up) up ;;
    down) shift; down "${1:-}" ;;
    url) running_pid >/dev/null || die "not running (scripts/postgres_server.sh up)"; print_url ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
