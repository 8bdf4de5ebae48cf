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

export RUST_LOG=warn
SEED_SQL="INSERT INTO pipelines (slug, name, stage_names, tags)
  SELECT 'bench-' || n, 'Bench pipeline ' || n,
         ARRAY['Data Generation', 'Data Ingestion', 'Spark Processing', 'DBT Transformation', 'Data Export'],
         ARRAY['bench']
  FROM generate_series(1, $PIPELINES) AS n" serve_fresh flowdeck_bench
run_id="$(curl -fsS -X POST -H "Authorization: Bearer $key" "$url/api/trigger/1" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')"

say "bench on $(nproc) cores, commit $(git rev-parse --short HEAD)"
"$target/release/examples/bench_live" "$url" "$key" "$run_id" "$SUBSCRIBERS" "$UPDATES" \
  || { tail -n 30 "$log"; die "benchmark failed"; }
rss_kb="$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")"
echo "server peak RSS: $((rss_kb / 1024)) MiB"

# Initial page load: what Chromium fetches for each page (HTML, CSS, JS, wasm and any lazily
# loaded island), as transferred.
(cd "$ROOT/end2end" && node page-weight.mjs "$url" "$key" / /pipelines/1 "/runs/$run_id" /login) \
  || die "cannot measure the page weight"
