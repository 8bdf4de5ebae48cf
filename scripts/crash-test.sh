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
  for _ in $(seq 1 50); do curl -fsS "$url/api/health" >/dev/null 2>&1 && return; sleep 0.2; done
  die "flowdeck did not start"
}
start
pipeline="$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  "$url/api/pipelines/" -d '{"name": "crash", "default_parameters": {"stage_seconds": 0, "rows": 1}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"

say "Prefect hung (SIGSTOP); 5 triggers; Flowdeck killed (SIGKILL) mid-submission"
kill -STOP -- "-$prefect_pid"
for _ in 1 2 3 4 5; do
  curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $key" "$url/api/pipelines/$pipeline/runs"
done
sleep 2
claimed="$(psql -qAt -d "$DATABASE_URL" -c "SELECT count(*) FROM run_outbox WHERE locked_until > now()")"
[ "$claimed" -ge 1 ] || die "the dispatcher had not claimed a run before the kill"
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true; pid=""
kill -CONT -- "-$prefect_pid"

say "Prefect resumed, Flowdeck restarted"
start
for _ in $(seq 1 120); do
  left="$(psql -qAt -d "$DATABASE_URL" -c "SELECT count(*) FROM runs WHERE prefect_flow_run_id IS NULL")"
  [ "$left" = 0 ] && break
  sleep 0.5
done
[ "$left" = 0 ] || die "$left run(s) never reached Prefect"
psql -qAt -d "$DATABASE_URL" -c "SELECT request_id || ' ' || prefect_flow_run_id FROM runs" | python3 -c '
import json, sys, urllib.request
api = sys.argv[1]
failures, seen = 0, set()
for line in sys.stdin.read().split("\n"):
    if not line.strip():
        continue
    request_id, flow_run_id = line.split()
    body = json.dumps({"flow_runs": {"tags": {"all_": ["flowdeck-request:" + request_id]}}}).encode()
    req = urllib.request.Request(api + "/flow_runs/filter", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    runs = json.load(urllib.request.urlopen(req, timeout=30))
    ids = [r["id"] for r in runs]
    ok = ids == [flow_run_id] and flow_run_id not in seen
    seen.add(flow_run_id)
    failures += not ok
    print(("ok  " if ok else "BAD ") + request_id + ": " + str(len(ids)) + " flow run(s)")
print(f"crash-test: {len(seen) - failures} passed, {failures} failed")
sys.exit(1 if failures or len(seen) != 5 else 0)
' "$prefect_url" || die "a trigger did not become exactly one flow run"
