# shellcheck shell=bash
# Throwaway Postgres clusters for ops/dev, ops/test and ops/bench. Source this file, then:
#
#   pg_start NAME [fast|durable]   initdb + start on a Unix socket; sets PG_URL, PG_DIR
#   pg_stop                        stop the cluster and delete its folder (safe to call twice)
#
# The cluster lives in .run/pg-NAME (ignored by git) and runs as a non-root user, as Postgres
# requires. It listens on no TCP port at all, only on a Unix socket inside that folder, which
# is mode 0700: only the cluster's owner (and root) can connect, and they are trusted. (A
# cluster trusting every local user on 127.0.0.1 would let any account on the machine
# connect as superuser and run programs with COPY ... TO PROGRAM.) PG_URL names the socket
# folder with libpq's host= parameter, which psql and fila both read:
#   postgres://postgres@:5432/postgres?host=/path/.run/pg-NAME&sslmode=disable
# "fast" turns off fsync and synchronous commit: fine for tests, never for benchmarks.
# The caller owns the cluster: call pg_stop from an EXIT trap.

PG_BIN=""
PG_DIR=""
PG_URL=""
PG_PORT=""
PG_OWNER=""
# No TCP: the port only names the socket file (.s.PGSQL.5432), and every cluster has a
# folder of its own, so they can all use the default.
PG_PORT_DEFAULT=5432
PG_SOCKET_NAME=".s.PGSQL.$PG_PORT_DEFAULT"

pg_log() { printf '%s\n' "$*" >&2; }

# Finds pg_ctl on PATH or under /usr/lib/postgresql/*/bin; installs Postgres when missing.
pg_find_bin() {
    local candidate
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        PG_BIN=$(dirname "$(command -v pg_ctl)")
        return 0
    fi
    candidate=$(find /usr/lib/postgresql -maxdepth 3 -name pg_ctl -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$candidate" ]; then
        PG_BIN=$(dirname "$candidate")
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        pg_log "Postgres is not installed and this is not root: install the postgresql package first."
        return 1
    fi
    pg_log "Installing Postgres (apt-get)..."
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    candidate=$(find /usr/lib/postgresql -maxdepth 3 -name pg_ctl -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$candidate" ]; then
        pg_log "apt-get installed postgresql but no pg_ctl was found under /usr/lib/postgresql."
        return 1
    fi
    PG_BIN=$(dirname "$candidate")
}

# Runs a command as the cluster's owner (root cannot run Postgres).
pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$PG_OWNER" -- "$@"
    else
        "$@"
    fi
}

pg_choose_owner() {
    if [ "$(id -u)" -ne 0 ]; then
        PG_OWNER=$(id -un)
    elif id postgres >/dev/null 2>&1; then
        PG_OWNER=postgres
    else
        id fila-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin fila-pg
        PG_OWNER=fila-pg
    fi
}

# Runs a command with only standard input, output and error open. The server pg_ctl starts
# must not keep descriptors it inherited from our caller: a parent that waits for a pipe or
# socket to close (as process runners do) would otherwise wait for as long as Postgres runs.
pg_without_inherited_fds() {
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        "$@"
    )
}

pg_start() {
    local name=$1 durability=${2:-fast} root
    pg_find_bin
    pg_choose_owner

    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.run"
    mkdir -p "$root"
    PG_DIR="$root/pg-$name"
    # The owner must be able to reach the folder; fall back to /tmp when the project is
    # private, when the socket's path would be too long for the kernel (about 107 bytes), or
    # when it holds characters that would need escaping in PG_URL.
    if { [ "$(id -u)" -eq 0 ] && ! runuser -u "$PG_OWNER" -- test -x "$root" 2>/dev/null; } ||
        [ $((${#PG_DIR} + ${#PG_SOCKET_NAME} + 1)) -gt 100 ] || [[ ! "$PG_DIR" =~ ^[A-Za-z0-9/._-]+$ ]]; then
        PG_DIR=$(mktemp -d "/tmp/fila-pg-$name.XXXXXX")
    fi
    pg_discard_stale "$PG_DIR"
    mkdir -p "$PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown "$PG_OWNER" "$PG_DIR"
    chmod 700 "$PG_DIR"

    pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=reject --encoding=UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log" >&2
        return 1
    }
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$PG_DIR'"
        echo "unix_socket_permissions = 0700"
        echo "max_connections = 600"
        echo "shared_buffers = 256MB"
        echo "log_min_messages = warning"
        echo "log_min_error_statement = panic"
        if [ "$durability" = fast ]; then
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
    } >>"$PG_DIR/data/postgresql.conf"

    PG_PORT=$PG_PORT_DEFAULT
    if pg_without_inherited_fds pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -o "-p $PG_PORT" -w -t 60 start >/dev/null; then
        PG_URL="postgres://postgres@:$PG_PORT/postgres?host=$PG_DIR&sslmode=disable"
        export PG_URL PG_DIR PG_PORT PG_BIN
        pg_log "Postgres ($("$PG_BIN/postgres" --version | awk '{print $3}')) is up at $PG_URL"
        return 0
    fi
    tail -n 20 "$PG_DIR/server.log" >&2 || true
    return 1
}

# Restarts a running cluster in place (same port), e.g. to test reconnects.
pg_restart_dir() {
    local dir=$1
    pg_without_inherited_fds pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null
}

# Stops a cluster left behind by a killed run, then clears its folder.
pg_discard_stale() {
    local dir=$1
    if [ -f "$dir/data/postmaster.pid" ]; then
        pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

pg_stop() {
    if [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ]; then
        pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
    PG_DIR=""
}
