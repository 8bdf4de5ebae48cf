#!/usr/bin/env bash
# `make run`: installs what is missing, builds, migrates and serves the dashboard.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/tools.sh" build
if [ -z "${DATABASE_URL:-}" ]; then
  "$ROOT/scripts/db.sh" flowdeck
  export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/flowdeck"
fi
"$ROOT/scripts/build.sh"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
export LEPTOS_SITE_ROOT="${LEPTOS_SITE_ROOT:-$ROOT/target/site}"
addr="${FLOWDECK_ADDR:-127.0.0.1:8000}"
"$bin" migrate >/dev/null
key="$("$bin" api-key create --role admin --name "make-run $(date -u +%Y-%m-%dT%H:%M:%SZ)" | tail -n 1)"
cat <<TXT

  Flowdeck is starting on  http://$addr/
  Sign in with this admin API key (shown once; a new one is made on each 'make run'):

  $key

  Stop with Ctrl-C.
TXT
exec "$bin" serve
