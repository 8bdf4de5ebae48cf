#!/usr/bin/env bash
# End-to-end tests: a release build served against a fresh database, driven by Playwright
# in Debian's Chromium. The database is dropped afterwards, whatever happens.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/build.sh"
cd "$ROOT"

serve_fresh flowdeck_e2e

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
