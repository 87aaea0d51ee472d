#!/usr/bin/env bash
# Starts a private PostgreSQL cluster on a loopback port as a non-root user, for the tests.
# Usage: source .ci/postgres.sh   (exports SPOOL_TEST_POSTGRES_URL; `spool_pg_stop` drops it)
set -euo pipefail

PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$PGBIN" ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
PGPORT="${SPOOL_PG_PORT:-55432}"
PGDIR="$(mktemp -d /tmp/spool-pg.XXXXXX)"
PGUSER_OS=postgres
id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --no-create-home "$PGUSER_OS"
chown "$PGUSER_OS" "$PGDIR"
as_pg() { if [ "$(id -u)" = 0 ]; then su -s /bin/sh "$PGUSER_OS" -c "$*"; else sh -c "$*"; fi; }
as_pg "$PGBIN/initdb -D $PGDIR/data -U spool -A trust -E UTF8 --no-locale >$PGDIR/initdb.log 2>&1"
# In postgresql.conf, so that a test that stops and starts the server keeps them.
as_pg "printf '%s\n' \"port = $PGPORT\" \"listen_addresses = '127.0.0.1'\" \"unix_socket_directories = '$PGDIR'\" \"max_connections = 400\" \"shared_buffers = 256MB\" >> $PGDIR/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/server.log -w start >/dev/null"
export SPOOL_TEST_POSTGRES_URL="postgres://spool@127.0.0.1:$PGPORT/postgres"
export SPOOL_PG_DIR="$PGDIR" SPOOL_PG_BIN="$PGBIN"
spool_pg_stop() {
    as_pg "$SPOOL_PG_BIN/pg_ctl -D $SPOOL_PG_DIR/data -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$SPOOL_PG_DIR"
}
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT ($PGDIR)"
