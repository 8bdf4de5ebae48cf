#!/usr/bin/env bash
# End-to-end tests: a release build served against a fresh database, driven by Playwright
# in Debian's Chromium. The database is dropped afterwards, whatever happens.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/build.sh"
cd "$ROOT"

db="flowdeck_e2e_$$"
port="${E2E_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
log="$(mktemp -t flowdeck-e2e.XXXXXX.log)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"

export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
export FLOWDECK_ADDR="127.0.0.1:$port" LEPTOS_SITE_ROOT="$ROOT/target/site"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
"$bin" migrate >/dev/null
key="$("$bin" api-key create --role admin --name e2e | tail -n 1)"
"$bin" serve >"$log" 2>&1 &
server_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -fsS "$url/api/health" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$url/api/health" >/dev/null || { cat "$log"; die "server did not start"; }

api() { curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
api -X POST "$url/api/pipelines/" -d '{"name": "Alpha ingest", "tags": ["ingest"]}' >/dev/null
api -X POST "$url/api/pipelines/" -d '{"name": "Beta transform", "description": "dbt models"}' >/dev/null
gamma="$(api -X POST "$url/api/pipelines/" -d '{"name": "Gamma export"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
api -X POST "$url/api/trigger/$gamma" >/dev/null
api -X POST "$url/api/status-update/" -d "{\"pipeline_id\": $gamma, \"status\": \"completed\"}" >/dev/null

say "Playwright in $(chromium --version 2>/dev/null || echo chromium)"
cd end2end
if ! FLOWDECK_URL="$url" FLOWDECK_ADMIN_KEY="$key" npx playwright test; then
  echo "---- server log ----"; tail -n 50 "$log"
  die "end-to-end tests failed"
fi
