#!/usr/bin/env bash
# The flowdeck CLI as a CI job uses it (flowdeck pipelines|run|runs), against a release
# server whose runs go through the real Prefect demo flow: --wait follows a run to its end
# with a line per stage, exit codes 0/1/2 gate a job, an Idempotency-Key makes a re-run
# safe, logs print and follow, a run is cancelled, and the key is never printed.
# Usage: scripts/cli-test.sh PREFECT_STATE_DIR PREFECT_PORT  (a Prefect from prefect.sh start)
source "$(dirname "$0")/lib.sh"
prefect_dir="${1:?prefect state dir}"; prefect_port="${2:?prefect port}"
[ -f "$prefect_dir/server.pid" ] || die "no Prefect started in $prefect_dir (scripts/prefect.sh start)"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo RUST_LOG=warn
serve_fresh flowdeck_cli
admin="$key"
operator="$("$bin" api-key create --role operator --name cli-test | tail -n 1)"
viewer="$("$bin" api-key create --role viewer --name cli-test-viewer | tail -n 1)"
work="$(mktemp -d -t flowdeck-cli.XXXXXX)"
trap 'serve_fresh_cleanup; rm -rf "$work"' EXIT

fail() {
  echo "---- stdout ----"; cat "$work/out" 2>/dev/null
  echo "---- stderr ----"; cat "$work/err" 2>/dev/null
  echo "---- server log (last 20 lines) ----"; tail -n 20 "$log"
  echo "---- Prefect worker log (last 20 lines) ----"; tail -n 20 "$prefect_dir/worker.log" 2>/dev/null || true
  die "CLI test: $*"
}
# expect CODE [VAR=VALUE...] -- ARGS...: runs the CLI as the operator, into $work/out and
# $work/err (appended to $work/all), and checks its exit code.
expect() {
  local code="$1"; shift
  local env=(FLOWDECK_URL="$url" FLOWDECK_API_KEY="$operator")
  while [ "$1" != "--" ]; do env+=("$1"); shift; done; shift
  local got=0
  env "${env[@]}" timeout 600 "$bin" "$@" >"$work/out" 2>"$work/err" || got=$?
  cat "$work/out" "$work/err" >>"$work/all"
  [ "$got" = "$code" ] || fail "flowdeck $* exited $got, not $code"
}
has() { grep -q -- "$2" "$work/$1" || fail "no '$2' in the $1 of the last command"; }

curl -fsS -X POST "$url/api/pipelines/" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name": "CLI demo", "slug": "cli-demo", "default_parameters": {"stage_seconds": 0.2, "rows": 50}}' >/dev/null

say "flowdeck pipelines list"
expect 0 -- pipelines list
has out "cli-demo"; has out "never run"
expect 0 -- pipelines list -o json
[ "$(field '[0]["slug"]' <"$work/out")" = cli-demo ] || fail "pipelines list -o json does not list cli-demo"

say "flowdeck run cli-demo --wait: a line per stage, exit 0 when it completes"
expect 0 -- run cli-demo --wait --timeout 5m --idempotency-key ci-build-1 -o json
run="$(field '["id"]' <"$work/out")"; pipeline="$(field '["pipeline_id"]' <"$work/out")"
[ "$(field '["status"]' <"$work/out")" = completed ] || fail "the waited run is not completed"
for stage in "Data Generation" "Data Ingestion" "Spark Processing" "DBT Transformation" "Data Export"; do
  grep -q "$stage *completed" "$work/err" || fail "no progress line for $stage completed"
done
has err "run #$run completed"

say "the same Idempotency-Key again: the same run; with other parameters: refused (422), exit 2"
expect 0 -- run cli-demo --idempotency-key ci-build-1 -o json
[ "$(field '["id"]' <"$work/out")" = "$run" ] || fail "the same key made another run"
expect 2 -- run cli-demo --idempotency-key ci-build-1 --param rows=5
has err "422 invalid"; has err "Idempotency-Key"
runs="$(curl -fsS -X POST "$url/api/runs/count" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d '{}')"
[ "$runs" = 1 ] || fail "$runs runs after one keyed trigger sent twice"

say "a failing run: exit 1, the reason and its log lines"
expect 1 -- run "$pipeline" --param 'fail_stage=Spark Processing' --param log_lines=3 --wait
has out "failed"; has out "why: Spark Processing: simulated failure"
grep -q "Spark Processing *failed" "$work/err" || fail "no progress line for the failed stage"
failed="$(sed -n 's/^Run #\([0-9]*\) .*/\1/p' "$work/out" | head -n 1)"
expect 0 -- runs get "$failed"
has out "Spark Processing"; has out "Data Export"
# Prefect takes the flow's last lines a moment after the run has ended.
for _ in $(seq 1 20); do
  expect 0 -- runs logs "$failed"
  grep -q "simulated failure" "$work/out" && break
  sleep 0.5
done
has out "simulated failure"; has out "working, line 3 of 3"
expect 0 -- runs logs "$failed" -o json
python3 -c 'import json,sys; [json.loads(l)["message"] for l in open(sys.argv[1])]' "$work/out" \
  || fail "runs logs -o json is not one JSON line per log line"

say "flowdeck runs logs --follow: lines as the flow writes them, until the run ends"
expect 0 -- run cli-demo --param log_lines=8 --param stage_seconds=0.8 -o json
live="$(field '["id"]' <"$work/out")"
expect 0 -- runs logs "$live" --follow
has out "Data Export: working, line 8 of 8"
expect 0 -- runs get "$live" -o json
[ "$(field '["status"]' <"$work/out")" = completed ] || fail "--follow ended before the run did"

say "flowdeck runs cancel"
expect 0 -- run cli-demo --param stage_seconds=30 -o json
slow="$(field '["id"]' <"$work/out")"
expect 0 -- runs cancel "$slow"
for _ in $(seq 1 60); do
  expect 0 -- runs get "$slow" -o json
  [ "$(field '["status"]' <"$work/out")" = cancelled ] && break
  sleep 1
done
[ "$(field '["status"]' <"$work/out")" = cancelled ] || fail "the cancelled run is not cancelled after 60 s"

say "exit codes: a run that does not end in time 1; usage, refusals and connection errors 2"
expect 1 -- run cli-demo --param stage_seconds=5 --wait --timeout 2s
has err "has not ended after 2s"
expect 2 FLOWDECK_URL= -- pipelines list
has err "FLOWDECK_URL"
expect 2 FLOWDECK_API_KEY="$viewer" -- run cli-demo
has err "403 forbidden"
expect 2 -- run no-such-pipeline
has err "no pipeline has the id or slug"
expect 2 FLOWDECK_URL="http://127.0.0.1:$(free_port)" -- runs get 1
has err "cannot reach"
expect 2 -- run cli-demo --param rows
expect 2 -- runs get 999999
has err "404 not_found"

for secret in "$operator" "$viewer" "$admin"; do
  ! grep -qF -- "$secret" "$work/all" || fail "an API key was printed"
done
say "CLI test passed"
