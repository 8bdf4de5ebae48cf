#!/usr/bin/env bash
# Live dashboard budgets (issue 4), printed, not asserted: SSE fan-out latency with 1,000
# subscribers, dashboard SSR with 1,000 pipelines, and the initial page weight.
# Runs a release build against a fresh database; needs PostgreSQL (scripts/db.sh).
source "$(dirname "$0")/lib.sh"
SUBSCRIBERS="${SUBSCRIBERS:-1000}" UPDATES="${UPDATES:-30}" PIPELINES="${PIPELINES:-1000}"
"$ROOT/scripts/db.sh"
"$ROOT/scripts/build.sh"
cd "$ROOT"
cargo build --release -p server --example bench_live --quiet || die "cannot build the benchmark"
target="${CARGO_TARGET_DIR:-$ROOT/target}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

db="flowdeck_bench_$$"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp -t flowdeck-bench.XXXXXX.log)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
export FLOWDECK_ADDR="127.0.0.1:$port" LEPTOS_SITE_ROOT="$ROOT/target/site" RUST_LOG=warn
"$target/release/flowdeck" migrate >/dev/null
key="$("$target/release/flowdeck" api-key create --role admin --name bench | tail -n 1)"
psql -q -d "$DATABASE_URL" -v ON_ERROR_STOP=1 <<SQL
INSERT INTO pipelines (slug, name, stage_names, tags)
SELECT 'bench-' || n, 'Bench pipeline ' || n,
       ARRAY['Data Generation', 'Data Ingestion', 'Spark Processing', 'DBT Transformation', 'Data Export'],
       ARRAY['bench']
FROM generate_series(1, $PIPELINES) AS n;
SQL
"$target/release/flowdeck" serve >"$log" 2>&1 &
server_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -fsS "$url/api/health" >/dev/null 2>&1 && break; sleep 0.2; done
run_id="$(curl -fsS -X POST -H "Authorization: Bearer $key" "$url/api/trigger/1" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')"

say "bench on $(nproc) cores, commit $(git rev-parse --short HEAD)"
"$target/release/examples/bench_live" "$url" "$key" "$run_id" "$SUBSCRIBERS" "$UPDATES" \
  || { tail -n 30 "$log"; die "benchmark failed"; }
rss_kb="$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")"
echo "server peak RSS: $((rss_kb / 1024)) MiB"

# Initial page load: what a browser fetches for the dashboard, compressed as served.
page_weight() {
  local total=0 name size
  for name in / /pkg/flowdeck.css /pkg/flowdeck.js /pkg/flowdeck.wasm; do
    size="$(curl -fsS -H "Authorization: Bearer $key" -H 'Accept-Encoding: gzip' -o /dev/null \
      -w '%{size_download}' "$url$name")"
    printf '  %-24s %8d bytes (as served)\n' "$name" "$size"
    total=$((total + size))
  done
  echo "initial page load: $total bytes transferred ($((total / 1024)) KiB)"
}
page_weight
