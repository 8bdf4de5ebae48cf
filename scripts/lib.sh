# Shared helpers for Flowdeck's scripts. Sourced, not run.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools installed for this project outside the clone, so fresh clones reuse them.
TOOLS_DIR="${FLOWDECK_TOOLS_DIR:-$HOME/.cache/flowdeck-tools}"
export PATH="$HOME/.cargo/bin:$TOOLS_DIR/node_modules/.bin:$PATH"
# Builds never need a database: queries are checked against the committed .sqlx data.
export SQLX_OFFLINE=true
# Contract fuzzer run by scripts/api-check.sh, in its own virtualenv under TOOLS_DIR.
SCHEMATHESIS_VERSION=4.32.5
# The official MCP Python SDK, whose client drives /mcp in scripts/mcp-test.sh; own virtualenv too.
MCP_VERSION=2.3.0
# The Standard Webhooks reference library (Python), with which scripts/webhook_receiver.py
# verifies every delivery in scripts/webhook-test.sh; own virtualenv too.
STANDARDWEBHOOKS_VERSION=1.1.0
# Client generators scripts/clients-test.sh proves the document with: openapi-python-client
# in a virtualenv, cargo-progenitor installed into TOOLS_DIR.
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
PROGENITOR_VERSION=0.15.1
PROGENITOR="$TOOLS_DIR/progenitor-$PROGENITOR_VERSION/bin/cargo-progenitor"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export DB_ADMIN_URL="${DB_ADMIN_URL:-postgres://$PGUSER@$PGHOST:$PGPORT/postgres}"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Runs apt-get as root, or explains what to install when that is not possible.
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    die "missing $*; install it with: sudo apt-get install -y $*"
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null || die "apt-get update failed; cannot install $*"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# locked_version CRATE [LOCK]: the version of CRATE pinned in LOCK (default: Cargo.lock).
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "${2:-$ROOT/Cargo.lock}"
}

# field EXPR: prints EXPR (e.g. '["id"]') of the JSON on stdin.
# The newest installed PostgreSQL's server programs (initdb, pg_ctl, pg_waldump), if any.
pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# wait_healthy URL LOG: waits up to 10 s for URL/api/health; else prints LOG and fails.
wait_healthy() {
  for _ in $(seq 1 50); do
    curl -fsS "$1/api/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  cat "$2"
  die "flowdeck at $1 did not start"
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Serves the release build on a fresh database named "$1_$$", dropped again on exit.
# Sets url, key (an admin API key), server_pid and log; SEED_SQL, if set, runs (as the
# owner) before the server starts. With SERVER_ROLE set, $PGUSER owns the schema and
# migrates (FLOWDECK_MIGRATION_DATABASE_URL) and the server connects as SERVER_ROLE
# (DATABASE_URL), which `flowdeck migrate` creates if missing and lets read and write rows
# only; roles are cluster-wide, so it may exist already.
serve_fresh() {
  db="$1_$$"
  port="$(free_port)"
  log="$(mktemp -t "$1.XXXXXX.log")"
  server_pid=""
  trap 'serve_fresh_cleanup' EXIT
  psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"
  owner_url="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
  export DATABASE_URL="$owner_url"
  unset FLOWDECK_MIGRATION_DATABASE_URL
  if [ -n "${SERVER_ROLE:-}" ]; then
    export FLOWDECK_MIGRATION_DATABASE_URL="$owner_url"
    export DATABASE_URL="postgres://$SERVER_ROLE@$PGHOST:$PGPORT/$db"
  fi
  export FLOWDECK_ADDR="127.0.0.1:$port" LEPTOS_SITE_ROOT="$ROOT/target/site"
  bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
  "$bin" migrate >/dev/null
  key="$("$bin" api-key create --role admin --name "$1" | tail -n 1)"
  if [ -n "${SEED_SQL:-}" ]; then psql -q -v ON_ERROR_STOP=1 -d "$owner_url" -c "$SEED_SQL"; fi
  "$bin" serve >"$log" 2>&1 &
  server_pid=$!
  url="http://127.0.0.1:$port"
  wait_healthy "$url" "$log"
}

serve_fresh_cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}

# Builds what the benchmarks run (release server and site, bench_live) and raises the
# open-file limit for their thousands of connections.
bench_setup() {
  "$ROOT/scripts/db.sh"
  # Chromium and Playwright measure the page weight.
  "$ROOT/scripts/tools.sh" bench
  "$ROOT/scripts/build.sh"
  cd "$ROOT"
  cargo build --release -p server --example bench_live --quiet || die "cannot build the benchmark"
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# live_figures DIR SUBSCRIBERS UPDATES: against the server serve_fresh started, SSE fan-out
# and dashboard SSR (server/examples/bench_live.rs), the server's peak RSS, and the initial
# page weight as Chromium fetches it (HTML, CSS, JS, wasm and any lazily loaded island).
# Writes DIR/live.txt and DIR/page-weight.txt; sets peak_rss_kib.
live_figures() {
  local dir="$1" target="${CARGO_TARGET_DIR:-$ROOT/target}" run_id
  mkdir -p "$dir"
  run_id="$(curl -fsS -X POST -H "Authorization: Bearer $key" "$url/api/trigger/1" | field '["run_id"]')"
  "$target/release/examples/bench_live" "$url" "$key" "$run_id" "$2" "$3" | tee "$dir/live.txt" \
    || { tail -n 30 "$log"; die "the live benchmark failed"; }
  peak_rss_kib="$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")"
  echo "server peak RSS: $((peak_rss_kib / 1024)) MiB" | tee -a "$dir/live.txt"
  (cd "$ROOT/end2end" && node page-weight.mjs "$url" "$key" / /pipelines/1 "/runs/$run_id" /login \
    /pipelines/new /admin/api-keys /admin/webhooks /audit) \
    | tee "$dir/page-weight.txt" || die "cannot measure the page weight"
}

# each_submitted_once PREFECT_API_URL RUNS: waits (up to 60 s) until every run of
# DATABASE_URL has its flow run, then checks that there are RUNS runs and that each is
# exactly one flow run of its own in Prefect (scripts/fault/flow_runs.py).
each_submitted_once() {
  local left
  for _ in $(seq 1 120); do
    left="$(psql -qAt -d "$DATABASE_URL" -c "SELECT count(*) FROM runs WHERE prefect_flow_run_id IS NULL")"
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  [ "$left" = 0 ] || { echo "$left run(s) never reached Prefect"; return 1; }
  python3 "$ROOT/scripts/fault/flow_runs.py" "$1" "$DATABASE_URL" "$2"
}
