#!/usr/bin/env bash
# Fault test: Flowdeck is killed (SIGKILL) while its dispatcher waits on a hung Prefect
# (SIGSTOP) in the middle of submitting; Prefect is resumed and Flowdeck restarted. Every
# accepted trigger must end up as exactly one Prefect flow run.
# Usage: scripts/crash-test.sh PREFECT_STATE_DIR PREFECT_PORT  (a Prefect from prefect.sh start)
source "$(dirname "$0")/lib.sh"
prefect_dir="${1:?prefect state dir}"; prefect_port="${2:?prefect port}"
prefect_url="http://127.0.0.1:$prefect_port/api"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
db="flowdeck_crash_$$"
port="$(free_port)"
url="http://127.0.0.1:$port"
prefect_pid="$(cat "$prefect_dir/server.pid")"
pid=""
cleanup() {
  kill -CONT -- "-$prefect_pid" 2>/dev/null || true
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" FLOWDECK_ADDR="127.0.0.1:$port"
export PREFECT_API_URL="$prefect_url" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo FLOWDECK_DISPATCH_LEASE_S=3
export LEPTOS_SITE_ROOT="$ROOT/target/site" RUST_LOG=warn
"$bin" migrate >/dev/null
key="$("$bin" api-key create --role operator --name crash-test | tail -n 1)"
admin="$("$bin" api-key create --role admin --name crash-admin | tail -n 1)"
start() {
  "$bin" serve >>"/tmp/flowdeck-crash-$$.log" 2>&1 &
  pid=$!
  wait_healthy "$url" "/tmp/flowdeck-crash-$$.log"
}
start
pipeline="$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  "$url/api/pipelines/" -d '{"name": "crash", "default_parameters": {"stage_seconds": 0, "rows": 1}}' \
  | field '["id"]')"

TRIGGERS=20
say "Prefect hung (SIGSTOP); $TRIGGERS triggers; Flowdeck killed (SIGKILL) mid-submission"
kill -STOP -- "-$prefect_pid"
for _ in $(seq 1 "$TRIGGERS"); do
  curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $key" "$url/api/pipelines/$pipeline/runs"
done
sleep 2
claimed="$(psql -qAt -d "$DATABASE_URL" -c "SELECT count(*) FROM run_outbox WHERE locked_until > now()")"
[ "$claimed" -ge 1 ] || die "the dispatcher had not claimed a run before the kill"
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true; pid=""
kill -CONT -- "-$prefect_pid"

say "Prefect resumed, Flowdeck restarted"
start
each_submitted_once "$prefect_url" "$TRIGGERS" || die "a trigger did not become exactly one flow run"
