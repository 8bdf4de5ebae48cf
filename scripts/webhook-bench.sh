#!/usr/bin/env bash
# Webhook figures for `make bench`: deliveries a second to a fast local receiver (one
# replica, 5,000 events queued by one statement), and the delay from a run's failure to
# its delivery (p50/p99 of delivered_at - the event's commit time, 300 failures reported
# one by one). Writes DIR/webhooks.md. Needs the release build.
# Usage: scripts/webhook-bench.sh DIR
source "$(dirname "$0")/lib.sh"
dir="${1:?output directory}"; mkdir -p "$dir"
EVENTS="${WEBHOOK_BENCH_EVENTS:-5000}"
FAILURES="${WEBHOOK_BENCH_FAILURES:-300}"

# The receiver answers 204 at once and checks nothing (signatures are checked in make
# test): what is measured is Flowdeck's side.
receiver_port="$(free_port)"
python3 - "$receiver_port" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Fast(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Fast).serve_forever()
PY
receiver_pid=$!
trap 'kill "$receiver_pid" 2>/dev/null' EXIT
export FLOWDECK_WEBHOOK_ALLOW=127.0.0.0/8 RUST_LOG=warn
serve_fresh flowdeck_webhook_bench
trap 'kill "$receiver_pid" 2>/dev/null; serve_fresh_cleanup' EXIT
api() { curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
sql() { psql -qAt -v ON_ERROR_STOP=1 -d "$owner_url" -c "$1"; }

api -X POST "$url/api/webhooks/" \
  -d "{\"url\": \"http://127.0.0.1:$receiver_port/hook\", \"event_types\": [\"pipeline.created\", \"run.failed\"]}" >/dev/null

say "webhooks: $EVENTS events queued at once"
start="$(date +%s.%N)"
sql "INSERT INTO pipelines (slug, name, stage_names) SELECT 'bench-' || n, 'bench ' || n, '{extract}' FROM generate_series(1, $EVENTS) n"
for _ in $(seq 1 600); do
  [ "$(sql "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")" -ge "$EVENTS" ] && break
  sleep 0.1
done
end="$(date +%s.%N)"
delivered="$(sql "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")"
[ "$delivered" -ge "$EVENTS" ] || die "only $delivered of $EVENTS deliveries were made in a minute"
rate="$(python3 -c "print(round($EVENTS / ($end - $start)))")"

say "webhooks: $FAILURES runs failed one by one"
pipeline="$(sql "SELECT min(id) FROM pipelines")"
sql "INSERT INTO runs (pipeline_id, actor, source) SELECT $pipeline, 'bench', 'api' FROM generate_series(1, $FAILURES)"
for run in $(sql "SELECT id FROM runs ORDER BY id"); do
  api -X POST "$url/api/status-update/" -d "{\"run_id\": $run, \"status\": \"failed\", \"error_message\": \"boom\"}" >/dev/null
  sleep 0.02
done
for _ in $(seq 1 300); do
  [ "$(sql "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'run.failed' AND state = 'delivered'")" -ge "$FAILURES" ] && break
  sleep 0.1
done
read -r p50 p99 n <<<"$(sql "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)), count(*)
  FROM (SELECT extract(epoch FROM delivered_at - created_at) * 1000 AS ms FROM webhook_deliveries
        WHERE event_type = 'run.failed' AND state = 'delivered') d" | tr '|' ' ')"
[ "$n" -ge "$FAILURES" ] || die "only $n of $FAILURES run.failed deliveries were made"

cat >"$dir/webhooks.md" <<MD

## Webhooks

| figure | value |
| --- | --- |
| deliveries a second, one replica, to a local receiver ($EVENTS queued at once) | $rate/s |
| a run's failure to its delivery, p50 / p99 ($FAILURES failures, one every ~20 ms) | $p50 ms / $p99 ms |
MD
cat "$dir/webhooks.md"
