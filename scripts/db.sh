#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on $PGHOST:$PGPORT, starting or installing the
# local one if needed; with a database name, also creates that database if missing.
# Usage: scripts/db.sh [DBNAME]
source "$(dirname "$0")/lib.sh"

pg_ready() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }

if ! command -v pg_isready >/dev/null; then
  say "installing PostgreSQL (Debian package)"
  apt_install postgresql
fi
if ! pg_ready; then
  if [ "$PGHOST" != 127.0.0.1 ] && [ "$PGHOST" != localhost ]; then
    die "PostgreSQL at $PGHOST:$PGPORT does not answer"
  fi
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  version="$(ls /etc/postgresql | sort -n | tail -1)"
  say "starting the local PostgreSQL $version cluster"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  pg_ready || die "PostgreSQL did not start; see /var/log/postgresql/"
fi
if ! psql -qAt -d "$DB_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then
  die "cannot connect to PostgreSQL as $PGUSER at $PGHOST:$PGPORT (trust auth expected locally; set PGUSER or DB_ADMIN_URL)"
fi
if [ -n "${1:-}" ]; then
  name="$1"
  [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || die "database name must be lower-case letters, digits and _"
  if [ "$(psql -qAt -d "$DB_ADMIN_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
    say "creating database $name"
    psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $name" || die "could not create database $name"
  fi
fi
