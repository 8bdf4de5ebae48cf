#!/usr/bin/env bash
# End-to-end tests that need a real Prefect (end2end/prefect/): the demo flow run from the
# run page, its log followed live in Chromium, its failure explained, and a restart from
# the failed stage. A fresh database and a release server pointed at the given Prefect.
# Usage: scripts/e2e-prefect.sh PREFECT_STATE_DIR PREFECT_PORT  (a Prefect from prefect.sh start)
source "$(dirname "$0")/lib.sh"
prefect_dir="${1:?prefect state dir}"; prefect_port="${2:?prefect port}"
[ -f "$prefect_dir/server.pid" ] || die "no Prefect started in $prefect_dir (scripts/prefect.sh start)"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo RUST_LOG=warn
serve_fresh flowdeck_e2e_prefect

say "Playwright with Prefect (end2end/prefect)"
cd "$ROOT/end2end"
if ! FLOWDECK_URL="$url" FLOWDECK_ADMIN_KEY="$key" FLOWDECK_PREFECT_URL="$PREFECT_API_URL" \
  npx playwright test --config playwright.prefect.config.ts; then
  echo "---- server log ----"; tail -n 50 "$log"
  echo "---- Prefect worker log ----"; tail -n 20 "$prefect_dir/worker.log" 2>/dev/null || true
  die "end-to-end tests with Prefect failed"
fi
