#!/usr/bin/env bash
# `make run`: installs what is missing, builds, migrates and serves the dashboard, with a
# local Prefect server, worker and demo pipelines unless PREFECT_API_URL names a Prefect.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/tools.sh" build
if [ -z "${DATABASE_URL:-}" ]; then
  "$ROOT/scripts/db.sh" flowdeck
  # Least privilege: $PGUSER owns the schema and migrates; the server runs as flowdeck_app,
  # which `flowdeck migrate` creates and lets read and write rows only. The local
  # PostgreSQL trusts loopback, so neither URL needs a password.
  export FLOWDECK_MIGRATION_DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/flowdeck"
  export DATABASE_URL="postgres://flowdeck_app@$PGHOST:$PGPORT/flowdeck"
fi
# Prefect installs (downloads, mostly) while the build keeps the cores busy.
prefect_install=""
if [ -z "${PREFECT_API_URL:-}" ]; then
  "$ROOT/scripts/prefect.sh" install &
  prefect_install=$!
fi
"$ROOT/scripts/build.sh"
if [ -n "$prefect_install" ]; then wait "$prefect_install" || die "installing Prefect failed"; fi
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
export LEPTOS_SITE_ROOT="${LEPTOS_SITE_ROOT:-$ROOT/target/site}"
export FLOWDECK_ADDR="${FLOWDECK_ADDR:-127.0.0.1:8000}"

local_prefect=""
if [ -z "${PREFECT_API_URL:-}" ]; then
  local_prefect="$ROOT/.flowdeck/prefect"
  mkdir -p "$local_prefect"
  FLOWDECK_PREFECT_UI=true "$ROOT/scripts/prefect.sh" start "$local_prefect" "${PREFECT_PORT:-4200}"
  export PREFECT_API_URL="http://127.0.0.1:${PREFECT_PORT:-4200}/api"
  export FLOWDECK_DEFAULT_DEPLOYMENT="${FLOWDECK_DEFAULT_DEPLOYMENT:-etl/demo}"
fi
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$local_prefect" ] && "$ROOT/scripts/prefect.sh" stop "$local_prefect"
}
trap cleanup EXIT INT TERM

"$bin" migrate >/dev/null
# The demo admin key replaces the one the last 'make run' made, and expires in a week.
key="$("$bin" api-key create --role admin --name make-run --expires-in-days 7 --replace 2>/dev/null | tail -n 1)"
"$bin" serve &
server_pid=$!
url="http://$FLOWDECK_ADDR"
# Ready: the database answers, and Prefect does when one is configured.
for _ in $(seq 1 150); do curl -fsS "$url/api/ready" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$url/api/ready" >/dev/null 2>&1 || die "flowdeck is not ready on $url: $(curl -sS "$url/api/ready" 2>&1)"

if [ -n "$local_prefect" ]; then
  # Demo pipelines bound to the demo deployment; a slug that exists already answers 409.
  seed() {
    curl -sS -o /dev/null -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      "$url/api/pipelines/" -d "$1"
  }
  seed '{"name": "Demo ETL", "slug": "demo-etl", "deployment": "etl/demo", "tags": ["demo"],
         "description": "The seed five-stage ETL running as a Prefect flow", "default_parameters": {"rows": 5000, "stage_seconds": 1}}'
  seed '{"name": "Demo ETL that fails", "slug": "demo-etl-fails", "deployment": "etl/demo", "tags": ["demo"],
         "description": "Fails in Spark Processing, on purpose", "default_parameters": {"fail_stage": "Spark Processing", "stage_seconds": 1}}'
fi

cat <<TXT

  Flowdeck is running on   $url/
  Prefect API              $PREFECT_API_URL
  Prefect UI               ${PREFECT_API_URL%/api}/  (each run page links its flow run)
  Sign in with this admin API key (shown once; each 'make run' replaces it, and it
  expires in 7 days):

  $key

  Stop with Ctrl-C.
TXT
wait "$server_pid"
