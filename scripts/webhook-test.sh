#!/usr/bin/env bash
# Webhook test: the release server sends Standard Webhooks to a receiver
# (scripts/webhook_receiver.py) that verifies every request with the reference library.
#   1. A run that fails at a stage (the demo flow's fail_stage) is delivered once, signed,
#      with its failed stage.
#   2. Answered 503 (Retry-After: 1) three times, a delivery is retried with the same
#      webhook-id until accepted; the deliveries endpoint logs 503,503,503,200.
#   3. Flowdeck is killed (SIGKILL) while a delivery is in flight (the receiver holds the
#      request open): committed but never acknowledged, it is delivered after the restart,
#      with the same webhook-id.
#   4. Two replicas on one database: 10 pipeline.created events, created through both, are
#      delivered exactly once each.
#   5. Without FLOWDECK_WEBHOOK_ALLOW a loopback receiver is refused ("may not reach"), named
#      by address (127.0.0.1) or by name (localhost).
#   6. No request failed verification (and a forged one does).
# Usage: scripts/webhook-test.sh PREFECT_STATE_DIR PREFECT_PORT  (a Prefect from prefect.sh start)
source "$(dirname "$0")/lib.sh"
prefect_dir="${1:?prefect state dir}"; prefect_port="${2:?prefect port}"
[ -f "$prefect_dir/server.pid" ] || die "no Prefect started in $prefect_dir (scripts/prefect.sh start)"
PYTHON="$TOOLS_DIR/standardwebhooks-$STANDARDWEBHOOKS_VERSION/bin/python"
"$PYTHON" -c 'import standardwebhooks' 2>/dev/null \
  || die "the Standard Webhooks library is missing: run scripts/tools.sh test"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
work="$(mktemp -d -t flowdeck-webhooks.XXXXXX)"
db="flowdeck_webhooks_$$"
a_port="$(free_port)"; b_port="$(free_port)"
a_url="http://127.0.0.1:$a_port"; b_url="http://127.0.0.1:$b_port"
a_pid=""; b_pid=""; receiver_pid=""
cleanup() {
  for pid in "$a_pid" "$b_pid" "$receiver_pid"; do
    [ -n "$pid" ] && { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo
export LEPTOS_SITE_ROOT="$ROOT/target/site" RUST_LOG=warn
unset FLOWDECK_WEBHOOK_ALLOW FLOWDECK_PUBLIC_URL
"$bin" migrate >/dev/null
admin="$("$bin" api-key create --role admin --name webhook-test | tail -n 1)"

# fail MESSAGE: the servers' and the receiver's last lines, then dies.
fail() {
  {
    for name in a b; do
      [ -s "$work/$name.log" ] && { echo "---- server $name log (last 15 lines) ----"; tail -n 15 "$work/$name.log"; }
    done
    echo "---- receiver (last 6 requests, cut) ----"
    tail -n 6 "$work/received.jsonl" 2>/dev/null | cut -c 1-400
    [ -s "$work/receiver.log" ] && tail -n 10 "$work/receiver.log"
  } >&2
  die "webhooks: $*"
}
step() { echo "  ok: $*"; }
# serve NAME PORT [ENV=VALUE...]: starts a replica logging to $work/NAME.log; sets NAME_pid.
serve() {
  local name="$1" port="$2"; shift 2
  env FLOWDECK_ADDR="127.0.0.1:$port" "$@" "$bin" serve >>"$work/$name.log" 2>&1 &
  printf -v "${name}_pid" '%s' "$!"
  wait_healthy "http://127.0.0.1:$port" "$work/$name.log"
}
# api URL METHOD PATH [BODY]: one admin call; prints the answer, fails (saying why) on non-2xx.
api() {
  curl -sS --fail-with-body -X "$2" "$1$3" -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/json' ${4:+-d "$4"} || fail "$2 $3 failed"
}
# pipeline URL NAME PARAMETERS: creates a pipeline; prints its id.
pipeline() {
  api "$1" POST /api/pipelines/ "{\"name\": \"$2\", \"default_parameters\": $3}" | field '["id"]'
}
# endpoint NAME EVENT_TYPE [BASE]: subscribes the receiver's /hook/NAME (at BASE, default
# $hook) and gives the receiver its secret; prints the endpoint's id.
endpoint() {
  api "$a_url" POST /api/webhooks/ "{\"url\": \"${3:-$hook}/hook/$1\", \"event_types\": [\"$2\"]}" >"$work/endpoint.json"
  local secret; secret="$(field '["secret"]' <"$work/endpoint.json")"
  [[ "$secret" == whsec_* ]] || fail "the new endpoint's secret is not whsec_...: $secret"
  control "secret/$1" "$secret"
  field '["id"]' <"$work/endpoint.json"
}
control() { curl -fsS -X POST "$hook/control/$1" --data-binary "$2" || fail "the receiver refused /control/$1"; }
trigger() { api "$a_url" POST "/api/pipelines/$1/runs" '{}' | field '["id"]'; }
# summary TYPE [PATH=VALUE...]: one line per webhook-id of the verified requests of TYPE
# ("*": all) whose body matches: `ID ANSWER,ANSWER,...` (a status, or `held`).
summary() { "$PYTHON" "$ROOT/scripts/webhook_receiver.py" summary "$work/received.jsonl" "$@"; }
# within SECONDS CMD...: runs CMD every half second until it succeeds; fails after SECONDS,
# and at once if the receiver could not verify a request.
within() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    if grep -q '"verified": false' "$work/received.jsonl"; then
      fail "the receiver could not verify a request: $(grep -m 1 '"verified": false' "$work/received.jsonl" | cut -c 1-400)"
    fi
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}
run_status() { api "$a_url" GET "/api/runs/$1" | field '["status"]'; }
accepted() { summary run.failed "data.run.id=$1" | grep -qE '[ ,]200$'; }
# delivery ENDPOINT MESSAGE_ID: `STATE STATUS,STATUS,...` of that delivery, from the API.
delivery() {
  api "$a_url" GET "/api/webhooks/$1/deliveries" | python3 -c '
import json, sys
for d in json.load(sys.stdin):
    if d["message_id"] == sys.argv[1]:
        print(d["state"], ",".join(str(a["status_code"] or a["error"]) for a in d["attempt_log"]))' "$2"
}
received() { wc -l <"$work/received.jsonl"; }

say "webhooks: standardwebhooks $STANDARDWEBHOOKS_VERSION verifies what server A ($a_url) sends"
serve a "$a_port" FLOWDECK_WEBHOOK_ALLOW=127.0.0.0/8
: >"$work/received.jsonl"
"$PYTHON" "$ROOT/scripts/webhook_receiver.py" serve "$work/received.jsonl" "$work/receiver.port" \
  >"$work/receiver.log" 2>&1 &
receiver_pid=$!
within 10 test -s "$work/receiver.port" || fail "the receiver did not start"
hook="http://127.0.0.1:$(cat "$work/receiver.port")"

# --- 1 and 2: failed runs, the second's delivery answered 503 three times ----------------
# The demo flow (flows/etl.py) fails at the stage named by its fail_stage parameter. Both
# runs go through Prefect at once; the receiver's rule is bound to the second's pipeline.
failing='{"stage_seconds": 0, "rows": 1, "fail_stage": "Spark Processing"}'
p1="$(pipeline "$a_url" "webhooks fails" "$failing")"
p2="$(pipeline "$a_url" "webhooks fails, retried" "$failing")"
failed_ep="$(endpoint failed run.failed)"
control rule "{\"type\": \"run.failed\", \"where\": {\"data.pipeline.id\": $p2}, \"times\": 3, \"status\": 503, \"retry_after\": 1}"
run1="$(trigger "$p1")"; run2="$(trigger "$p2")"
step "endpoint $failed_ep for run.failed; runs $run1 and $run2 triggered, failing at Spark Processing"

within 90 accepted "$run1" \
  || fail "no run.failed delivery of run $run1 was accepted within 90 s (the run is $(run_status "$run1"))"
seen="$(summary run.failed "data.run.id=$run1")"
[ "$(wc -l <<<"$seen")" = 1 ] || fail "run $run1's failure came with more than one webhook-id: $seen"
[[ "$seen" == *" 200" ]] || fail "run $run1's delivery was answered $seen, not once 200"
[ "$(summary run.failed "data.run.id=$run1" "data.failed_stage.name=Spark Processing")" = "$seen" ] \
  || fail "run $run1's run.failed does not name its failed stage: $(grep "\"id\": $run1," "$work/received.jsonl" | cut -c 1-600)"
step "1. run $run1 failed: one verified run.failed (${seen%% *}), failed_stage Spark Processing"

within 90 accepted "$run2" \
  || fail "no run.failed delivery of run $run2 was accepted within 90 s (the run is $(run_status "$run2"))"
seen="$(summary run.failed "data.run.id=$run2")"
id2="${seen%% *}"
[ "$seen" = "$id2 503,503,503,200" ] \
  || fail "run $run2: wanted one webhook-id answered 503,503,503,200, got: $seen"
logged="$(delivery "$failed_ep" "$id2")"
[ "$logged" = "delivered 503,503,503,200" ] \
  || fail "the deliveries endpoint shows $id2 as '$logged', not 'delivered 503,503,503,200'"
step "2. run $run2: 4 requests with webhook-id $id2, 503 x3 then 200; deliveries: $logged"

# --- 3. SIGKILL while a delivery is in flight --------------------------------------------
p3="$(pipeline "$a_url" "webhooks crash" '{"stage_seconds": 0, "rows": 1}')"
# The receiver holds this delivery's first request open (20 s, longer than the test
# waits), so Flowdeck has sent it but never learns its outcome.
control rule "{\"type\": \"run.failed\", \"where\": {\"data.pipeline.id\": $p3}, \"times\": 1, \"status\": 503, \"hold\": 20}"
run3="$(trigger "$p3")"
ack="$(api "$a_url" POST /api/status-update/ "{\"run_id\": $run3, \"status\": \"failed\", \"error_message\": \"boom\"}")"
[ "$(field '["run_status"]' <<<"$ack")" = failed ] || fail "run $run3 was not marked failed: $ack"
held() { summary run.failed "data.run.id=$run3" | grep -q ' held$'; }
within 10 held || fail "the run.failed of run $run3 did not reach the receiver within 10 s"
id3="$(summary run.failed "data.run.id=$run3" | cut -d' ' -f1)"
row="$(psql -qAt -d "$DATABASE_URL" -c \
  "SELECT state, attempts, locked_until > now() FROM webhook_deliveries WHERE message_id = '$id3'")"
[ "$row" = "pending|0|t" ] || fail "delivery $id3 before the kill: $row, wanted pending|0|t (claimed, no attempt recorded)"
kill -KILL "$a_pid"; wait "$a_pid" 2>/dev/null || true; a_pid=""
serve a "$a_port" FLOWDECK_WEBHOOK_ALLOW=127.0.0.0/8
# The killed replica's claim keeps every deliverer off the delivery until its lease (60 s)
# runs out; end it now instead of waiting, as its running out would.
psql -q -d "$DATABASE_URL" -c "UPDATE webhook_deliveries SET locked_until = now() WHERE message_id = '$id3'"
redelivered() { [ "$(summary run.failed "data.run.id=$run3")" = "$id3 held,200" ]; }
within 15 redelivered \
  || fail "after the restart, run $run3's delivery was not accepted with webhook-id $id3: $(summary run.failed "data.run.id=$run3")"
logged="$(delivery "$failed_ep" "$id3")"
[ "$logged" = "delivered 200" ] || fail "the deliveries endpoint shows $id3 as '$logged', not 'delivered 200'"
step "3. SIGKILL mid-delivery of run $run3's failure: delivered after the restart, same webhook-id $id3"

# --- 4. Two replicas, each event delivered once ------------------------------------------
serve b "$b_port" FLOWDECK_WEBHOOK_ALLOW=127.0.0.0/8
created_ep="$(endpoint created pipeline.created)"
creating=()
for i in $(seq 1 10); do
  if [ $((i % 2)) = 1 ]; then target="$a_url"; else target="$b_url"; fi
  pipeline "$target" "webhooks replica $i" '{}' >"$work/created.$i" &
  creating+=($!)
done
for pid in "${creating[@]}"; do wait "$pid" || fail "creating a pipeline failed"; done
ten() { [ "$(summary pipeline.created | wc -l)" -ge 10 ]; }
within 20 ten || fail "only $(summary pipeline.created | wc -l) of 10 pipeline.created deliveries arrived in 20 s"
sleep 2 # room for a duplicate to show up
seen="$(summary pipeline.created)"
[ "$(wc -l <<<"$seen")" = 10 ] || fail "10 events became $(wc -l <<<"$seen") webhook-ids: $seen"
[ "$(grep -c ' 200$' <<<"$seen")" = 10 ] || fail "a pipeline.created was sent more than once: $seen"
for i in $(seq 1 10); do
  id="$(cat "$work/created.$i")"
  [ "$(summary pipeline.created "data.pipeline.id=$id" | wc -l)" = 1 ] \
    || fail "pipeline $id: not exactly one pipeline.created delivery"
done
step "4. replicas A and B: 10 pipelines, 10 verified pipeline.created, 10 webhook-ids, no duplicate"

# --- 5. Loopback refused without FLOWDECK_WEBHOOK_ALLOW ----------------------------------
kill -KILL "$b_pid"; wait "$b_pid" 2>/dev/null || true; b_pid=""
kill -TERM "$a_pid"; wait "$a_pid" 2>/dev/null || true; a_pid=""
serve a "$a_port"
# Besides the endpoint at 127.0.0.1 (an address, checked before sending), one at localhost
# (a name, checked as it resolves).
named_ep="$(endpoint named pipeline.created "http://localhost:${hook##*:}")"
before="$(received)"
created_at=$SECONDS
p5="$(pipeline "$a_url" "webhooks refused" '{}')"
# refused ENDPOINT COUNT: the endpoint has COUNT deliveries, the newest pending with an
# attempt logged, whose error is then in $work/refused.txt.
refused() {
  api "$a_url" GET "/api/webhooks/$1/deliveries" >"$work/deliveries.json"
  python3 - "$work/deliveries.json" "$2" "$work/refused.txt" <<'EOF'
import json, sys
deliveries = json.load(open(sys.argv[1]))
newest = deliveries[0] if deliveries else {"attempt_log": [], "state": None}
done = len(deliveries) == int(sys.argv[2]) and newest["attempt_log"] and newest["state"] == "pending"
if done:
    open(sys.argv[3], "w").write(str(newest["attempt_log"][0]["error"]))
sys.exit(not done)
EOF
}
errors=()
for expected in "$created_ep:11" "$named_ep:1"; do
  ep="${expected%:*}"
  within 10 refused "$ep" "${expected#*:}" \
    || fail "endpoint $ep: no refused attempt for pipeline $p5's pipeline.created: $(cut -c 1-600 "$work/deliveries.json")"
  error="$(cat "$work/refused.txt")"
  [[ "$error" == *"may not reach"* ]] || fail "endpoint $ep: the refused attempt's error does not say 'may not reach': $error"
  errors+=("$error")
done
while [ $((SECONDS - created_at)) -lt 3 ]; do sleep 0.5; done
[ "$(received)" = "$before" ] || fail "the receiver got a request from a server without FLOWDECK_WEBHOOK_ALLOW"
step "5. without FLOWDECK_WEBHOOK_ALLOW nothing reached the receiver in 3 s; refused: '${errors[0]}' (127.0.0.1), '${errors[1]}' (localhost)"

# --- 6. Every request verified ------------------------------------------------------------
stats="$(curl -fsS "$hook/control/stats")"
[ "$(field '["unverified"]' <<<"$stats")" = 0 ] || fail "requests failed verification: $stats"
all="$(summary '*')"
[ "$(wc -l <<<"$all")" = 13 ] || fail "wanted 13 webhook-ids (3 run.failed, 10 pipeline.created), got: $all"
bad="$(grep -vE '^msg_[0-9a-f]+ ((503|held),)*200$' <<<"$all" || true)"
[ -z "$bad" ] || fail "a delivery was not accepted exactly once: $bad"
for run in "$run1" "$run2" "$run3"; do
  seen="$(summary run.failed "data.run.id=$run")"
  [ "$(wc -l <<<"$seen")" = 1 ] || fail "run $run's failure came with more than one webhook-id: $seen"
done
# The check is live: a request with a forged signature is refused and counted.
forged="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$hook/hook/created" -d '{"type": "pipeline.created"}' \
  -H 'webhook-id: msg_forged' -H "webhook-timestamp: $(date +%s)" \
  -H 'webhook-signature: v1,bm90IGEgc2lnbmF0dXJlIG9mIHRoaXMgYm9keSwgb3IgYW55Cg==')"
[ "$forged" = 401 ] && [ "$(curl -fsS "$hook/control/stats" | field '["unverified"]')" = 1 ] \
  || fail "the receiver did not refuse a forged signature (answered $forged)"
step "6. $(field '["verified"]' <<<"$stats") requests, all verified by the reference library; 13 deliveries, each accepted once; a forged signature refused"
say "webhooks passed in $((SECONDS - started)) s"
