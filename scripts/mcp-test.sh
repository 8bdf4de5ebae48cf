#!/usr/bin/env bash
# MCP test: the official MCP Python SDK (scripts/mcp_client.py) drives Flowdeck's MCP server
# (Streamable HTTP at /mcp) with an API key scoped to one team's pipelines, allowed to read
# and trigger, with a budget of triggers per hour; the runs it starts go through Prefect.
# Usage: scripts/mcp-test.sh PREFECT_STATE_DIR PREFECT_PORT  (a Prefect from prefect.sh start)
source "$(dirname "$0")/lib.sh"
prefect_dir="${1:?prefect state dir}"; prefect_port="${2:?prefect port}"
[ -f "$prefect_dir/server.pid" ] || die "no Prefect started in $prefect_dir (scripts/prefect.sh start)"
PYTHON="$TOOLS_DIR/mcp-$MCP_VERSION/bin/python"
[ -x "$PYTHON" ] || die "the MCP Python SDK is missing: run scripts/tools.sh test"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
db="flowdeck_mcp_$$"
port="$(free_port)"
url="http://127.0.0.1:$port"
log="$(mktemp -t flowdeck-mcp.XXXXXX.log)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" FLOWDECK_ADDR="127.0.0.1:$port"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo
export LEPTOS_SITE_ROOT="$ROOT/target/site" RUST_LOG=warn
"$bin" migrate >/dev/null
admin="$("$bin" api-key create --role admin --name mcp-admin | tail -n 1)"
"$bin" serve >"$log" 2>&1 &
pid=$!
wait_healthy "$url" "$log"

say "mcp $MCP_VERSION (Python SDK) against $url/mcp"
if ! FLOWDECK_URL="$url" FLOWDECK_ADMIN_KEY="$admin" "$PYTHON" "$ROOT/scripts/mcp_client.py"; then
  echo "---- server log (last 30 lines) ----"
  tail -n 30 "$log"
  echo "---- Prefect worker log (last 20 lines) ----"
  tail -n 20 "$prefect_dir/worker.log" 2>/dev/null || true
  die "the MCP test failed"
fi
rm -f "$log"
