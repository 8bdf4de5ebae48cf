#!/usr/bin/env bash
# Live dashboard budgets (issue 4), printed, not asserted: SSE fan-out latency with 1,000
# subscribers, dashboard SSR with 1,000 pipelines, and the initial page weight.
# Runs a release build against a fresh database; needs PostgreSQL (scripts/db.sh).
source "$(dirname "$0")/lib.sh"
SUBSCRIBERS="${SUBSCRIBERS:-1000}" UPDATES="${UPDATES:-30}" PIPELINES="${PIPELINES:-1000}"
bench_setup
export RUST_LOG=warn
SEED_SQL="INSERT INTO pipelines (slug, name, stage_names, tags)
  SELECT 'bench-' || n, 'Bench pipeline ' || n,
         ARRAY['Data Generation', 'Data Ingestion', 'Spark Processing', 'DBT Transformation', 'Data Export'],
         ARRAY['bench']
  FROM generate_series(1, $PIPELINES) AS n" serve_fresh flowdeck_bench
say "bench on $(nproc) cores, commit $(git rev-parse --short HEAD)"
live_figures "$ROOT/target/bench-live" "$SUBSCRIBERS" "$UPDATES"
