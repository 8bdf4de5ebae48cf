#!/usr/bin/env bash
# make bench: seeds a realistic volume and measures Flowdeck with a real HTTP load
# generator (wrk, a separate process), then writes target/bench/report.md.
# Not part of make test. Needs PostgreSQL (scripts/db.sh) and installs wrk from Debian.
#
#   BENCH_SECONDS   seconds per load measurement [10]
#   BENCH_MAX_RUNS  the largest run count [1000000] (pipelines: a hundredth, events: 5 per run)
source "$(dirname "$0")/lib.sh"
SECONDS_EACH="${BENCH_SECONDS:-10}"
MAX_RUNS="${BENCH_MAX_RUNS:-1000000}"
command -v wrk >/dev/null || apt_install wrk
bench_setup
out="$ROOT/target/bench"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

export RUST_LOG=warn FLOWDECK_TRIGGERS_PER_MIN=100000000 FLOWDECK_AUTH_FAILURES_PER_MIN=100000
# The server keeps the seeded history (a year of it): only the pruning measurement below
# prunes it, with the default retention of 90 days, while the other figures are taken.
export FLOWDECK_RETAIN_RUN_EVENTS_DAYS=36500
serve_fresh flowdeck_bench
operator="$("$bin" api-key create --role operator --name bench-operator | tail -n 1)"

loads=0
# record NAME JSON: one result line.
record() { echo "{\"name\": \"$1\", $2}" >>"$results"; }

# The WAL a write load made: its bytes (from the log positions), and the part of them that
# were full-page images (pg_waldump over the same span, where this user can read the log:
# the first change to a page after a checkpoint writes the whole 8 KiB page).
lsn() { psql -tA -d "$DATABASE_URL" -c 'SELECT pg_current_wal_lsn()'; }
pg_bin="$(pg_bin_dir)"
wal_dir="$(psql -tA -d "$DATABASE_URL" -c 'SHOW data_directory' 2>/dev/null)/pg_wal"
checkpoints() { psql -tA -d "$DATABASE_URL" -c 'SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter'; }
# Autovacuum workers busy now (another writer of the same tables).
autovacuums() {
  psql -tA -d "$DATABASE_URL" -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
}
# wal_between START END CHECKPOINTS_BEFORE AUTOVACUUMS: the JSON of what was written from
# START to END.
wal_between() {
  local bytes fpi
  bytes="$(psql -tA -d "$DATABASE_URL" -c "SELECT pg_wal_lsn_diff('$2', '$1')::bigint")"
  fpi="$("$pg_bin/pg_waldump" --stats -p "$wal_dir" -s "$1" -e "$2" 2>/dev/null \
    | awk '$1 == "Total" { print $5 }')"
  echo "{\"bytes\": $bytes, \"fpi_bytes\": ${fpi:-null}, \"checkpoints\": $(( $(checkpoints) - $3 )), \"autovacuums\": ${4:-null}}"
}

# load NAME MODE CLIENTS [env...]: one wrk measurement, recorded with its client count (and,
# for a write, the WAL it made).
load() {
  local name="$1" mode="$2" clients="$3"; shift 3
  local threads=$(( clients < 2 ? 1 : 2 ))
  local line wal="" start="" ckpt="" sampler=""
  loads=$((loads + 1))
  case "$mode" in status|seed|trigger)
    start="$(lsn)"; ckpt="$(checkpoints)"
    # Halfway through: is autovacuum writing too?
    (sleep "$(( SECONDS_EACH / 2 ))"; autovacuums >"$out/autovacuums") & sampler=$! ;;
  esac
  line="$(env BENCH_MODE="$mode" BENCH_KEY="${BENCH_KEY:-$key}" BENCH_TAG="$loads" "$@" \
    wrk -t"$threads" -c"$clients" -d"${SECONDS_EACH}s" --timeout 10s -s "$ROOT/bench/load.lua" "$url" \
    | sed -n 's/^BENCH //p')"
  [ -n "$line" ] || die "wrk printed no result for $name"
  if [ -n "$start" ]; then
    wait "$sampler"
    wal=", \"wal\": $(wal_between "$start" "$(lsn)" "$ckpt" "$(cat "$out/autovacuums")")"
  fi
  record "$name" "\"mode\": \"$mode\", \"clients\": $clients, \"result\": $line$wal"
  printf '%-44s c=%-3s %s%s\n' "$name" "$clients" "$line" "$wal"
}

# grow RUNS: seeds runs up to RUNS (ids are 1..RUNS), with a pipeline per hundred runs,
# five events per run and stage rows for the newest 10,000 runs.
have_runs=0; have_pipelines=0
grow() {
  local runs="$1" pipelines=$(( $1 / 100 > 10 ? $1 / 100 : 10 ))
  psql -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" <<SQL
SET session_replication_role = replica;
INSERT INTO pipelines (slug, name, stage_names, default_parameters, tags)
  SELECT 'p-' || g, 'Pipeline ' || g,
         ARRAY['Data Generation','Data Ingestion','Spark Processing','DBT Transformation','Data Export'], '{}',
         CASE WHEN g % 3 = 0 THEN ARRAY['etl','nightly'] ELSE ARRAY['ml'] END
  FROM generate_series($have_pipelines + 1, $pipelines) g;
INSERT INTO runs (pipeline_id, status, actor, source, created_at, updated_at, started_at, ended_at)
  SELECT 1 + (g % $pipelines),
         (ARRAY['completed','completed','completed','failed','running','pending'])[1 + g % 6],
         'api-key:bench', 'api',
         now() - make_interval(secs => ($runs - g) * 30),
         now() - make_interval(secs => ($runs - g) * 30),
         now() - make_interval(secs => ($runs - g) * 30 - 5),
         CASE WHEN g % 6 < 4 THEN now() - make_interval(secs => ($runs - g) * 30 - 60) END
  FROM generate_series($have_runs + 1, $runs) g;
INSERT INTO run_events (run_id, event_id, kind, stage_name, status, occurred_at, recorded_at)
  SELECT r.id, 'seed-' || r.id || '-' || s, 'stage_status', p.stage_names[s],
         'completed', r.created_at + make_interval(secs => s), r.created_at + make_interval(secs => s)
  FROM runs r JOIN pipelines p ON p.id = r.pipeline_id, generate_series(1, 5) s WHERE r.id > $have_runs;
DELETE FROM stage_runs;
INSERT INTO stage_runs (run_id, position, name)
  SELECT r.id, s - 1, p.stage_names[s]
  FROM runs r JOIN pipelines p ON p.id = r.pipeline_id, generate_series(1, 5) s WHERE r.id > $runs - 10000;
UPDATE pipelines p SET latest_run_id = (SELECT max(id) FROM runs r WHERE r.pipeline_id = p.id);
SET session_replication_role = origin;
-- Vacuumed, as autovacuum and readers leave a database that grew by traffic: the first
-- writes measured after a bulk load were a fifth slower than the same writes a moment later
-- (5,339/s against 6,467/s at 1M runs, with as many full-page images), and as fast as the
-- second after VACUUM (6,490/s); most likely the first visit to each loaded row (hint bits).
VACUUM (ANALYZE);
-- The seeding's writes are flushed now, not by a checkpoint during the next measurement.
CHECKPOINT;
SQL
  have_runs="$runs"; have_pipelines="$pipelines"
  say "seeded $(psql -tA -d "$DATABASE_URL" -c 'SELECT count(*) FROM runs') runs, $have_pipelines pipelines, $(psql -tA -d "$DATABASE_URL" -c 'SELECT count(*) FROM run_events') events"
}

# forget_triggered RUNS: deletes the runs a trigger measurement added (with their stages,
# outbox rows and events), so the next step's seeded ids follow on from RUNS again.
forget_triggered() {
  psql -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" <<SQL
DELETE FROM runs WHERE id > $1;
SELECT setval(pg_get_serial_sequence('runs', 'id'), $1);
UPDATE pipelines p SET latest_run_id = (SELECT max(id) FROM runs r WHERE r.pipeline_id = p.id)
  WHERE latest_run_id > $1;
SQL
}

say "bench on $(nproc) cores, commit $(git rev-parse --short HEAD), ${SECONDS_EACH}s per measurement"
# How the costs grow: every figure below, from 1k to MAX_RUNS runs.
size=1000
while [ "$size" -le "$MAX_RUNS" ]; do
  grow "$size"
  for mode in list filter; do load "growth $mode @$size" "$mode" 16; done
  load "growth pipeline @$size" pipeline 16 BENCH_PIPELINES=$(( have_pipelines < 100 ? have_pipelines : 100 ))
  load "growth run @$size" run 16 BENCH_FIRST_RUN=$(( size - 99 )) BENCH_RUNS=100
  BENCH_KEY="$operator" load "growth status @$size" status 64 BENCH_FIRST_RUN=$(( size > 10000 ? size - 9999 : 1 )) BENCH_RUNS=$(( size < 10000 ? size : 10000 ))
  BENCH_KEY="$operator" load "growth seed @$size" seed 64 BENCH_PIPELINES="$have_pipelines"
  BENCH_KEY="$operator" load "growth trigger @$size" trigger 16 BENCH_PIPELINES="$have_pipelines"
  forget_triggered "$size"
  size=$(( size * 10 ))
done
size="$have_runs"

# At full size: list and filter at 1, 16 and 64 clients, each path's three in a row (a
# filter load just before the list at 64 clients, as once, made the list pay for it).
list_bytes="$(curl -fsS -H "Authorization: Bearer $key" "$url/api/pipelines/" | wc -c)"
record "list body" "\"bytes\": $list_bytes"
for clients in 1 16 64; do load "GET /api/pipelines/" list "$clients"; done
for clients in 1 16 64; do load "POST /api/runs/filter (failed, newest 50)" filter "$clients"; done
# As browsers and most HTTP clients ask: compressed (kept answers are kept compressed).
for clients in 16 64; do load "GET /api/pipelines/ (brotli)" list "$clients" BENCH_ENCODING=br; done
# The machine's floor (no database, no credential), and single reads spread over the
# first 100 pipelines and the newest 100 runs.
load "GET /api/health" health 16
for clients in 16 64; do
  load "GET /api/pipelines/{id}" pipeline "$clients" BENCH_PIPELINES=100
  load "GET /api/runs/{id}" run "$clients" BENCH_FIRST_RUN=$(( size - 99 )) BENCH_RUNS=100
done
# The list and single reads while the data changes 50 times a second (each a stage report,
# announced): kept answers last 20 ms at most, so most reads are read afresh.
python3 "$ROOT/bench/changes.py" "$url" "$operator" $(( size - 9999 )) 10000 50 &
changer=$!
load "GET /api/pipelines/ (data changing 50/s)" list 16
load "GET /api/pipelines/{id} (data changing 50/s)" pipeline 16 BENCH_PIPELINES=100
load "GET /api/runs/{id} (data changing 50/s)" run 16 BENCH_FIRST_RUN=$(( size - 99 )) BENCH_RUNS=100
kill "$changer"; wait "$changer" 2>/dev/null || true
# durable_load NAME MODE RECORD [env...]: a status-report load at 64 clients, each report a
# durable commit; then every acknowledged one is looked for in the database (the report
# compares the two).
durable_load() {
  local name="$1" mode="$2" what="$3" before after acked; shift 3
  before="$(psql -tA -d "$DATABASE_URL" -c "SELECT count(*) FROM run_events WHERE event_id LIKE 'bench-%'")"
  BENCH_KEY="$operator" load "$name" "$mode" 64 "$@"
  after="$(psql -tA -d "$DATABASE_URL" -c "SELECT count(*) FROM run_events WHERE event_id LIKE 'bench-%'")"
  acked="$(tail -n 1 "$results" | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r["requests"]-r["non_2xx"])')"
  record "$what" "\"acknowledged\": $acked, \"recorded\": $(( after - before ))"
  echo "$what: $acked acknowledged, $(( after - before )) recorded"
}
durable_load "POST /api/status-update/ (durable)" status "status updates recorded" \
  BENCH_FIRST_RUN=$(( size - 9999 )) BENCH_RUNS=10000
# The seed's payload names the pipeline only: each report goes to its latest run.
durable_load "POST /api/status-update/ (seed payload, durable)" seed "seed status updates recorded" \
  BENCH_PIPELINES="$have_pipelines"
# Trigger acceptance at 16 clients (no Prefect: accepted runs wait in the outbox).
runs_before="$(psql -tA -d "$DATABASE_URL" -c 'SELECT count(*) FROM runs')"
BENCH_KEY="$operator" load "POST /api/pipelines/{id}/runs (trigger)" trigger 16 BENCH_PIPELINES="$have_pipelines"
runs_after="$(psql -tA -d "$DATABASE_URL" -c 'SELECT count(*) FROM runs')"
record "triggers recorded" "\"recorded\": $(( runs_after - runs_before ))"

# Pruning at full size: one pass with the default retention (90 days) deletes the run
# events recorded before then (about three quarters of the seeded year), from a second
# process, as another replica's pruner would; meanwhile the list is read while the data
# changes 50 times a second (so reads go to the database), measured just before as well.
# Each window also records how many changes were announced in it.
old_events="$(psql -tA -d "$DATABASE_URL" -c "SELECT count(*) FROM run_events WHERE recorded_at < now() - interval '90 days'")"
last_change() { psql -tA -d "$DATABASE_URL" -c 'SELECT coalesce(max(id), 0) FROM changes'; }
python3 "$ROOT/bench/changes.py" "$url" "$operator" $(( size - 9999 )) 10000 50 1000000 &
changer=$!
from="$(last_change)"
load "GET /api/pipelines/ (data changing 50/s, before pruning)" list 16
before_changes=$(( $(last_change) - from ))
FLOWDECK_RETAIN_RUN_EVENTS_DAYS=90 "$bin" prune >"$out/prune.json" 2>"$out/prune.log" &
pruner=$!
from="$(last_change)"
load "GET /api/pipelines/ (data changing 50/s, while pruning)" list 16
while_changes=$(( $(last_change) - from ))
wait "$pruner" || { cat "$out/prune.log"; die "the pruning pass failed"; }
kill "$changer"; wait "$changer" 2>/dev/null || true
record "prune pass" "\"old_events\": $old_events, \"changes_before\": $before_changes, \"changes_while\": $while_changes, \"pass\": $(cat "$out/prune.json")"
echo "prune pass: $(cat "$out/prune.json") ($old_events run events were older than 90 days)"

# SSE fan-out with 1,000 subscribers, dashboard SSR, peak RSS, page weight.
live_figures "$out" 1000 30
record "server peak RSS" "\"kib\": $peak_rss_kib"
wasm_raw="$(cat "$ROOT"/target/site/pkg/*.wasm | wc -c)"
wasm_br="$(cat "$ROOT"/target/site/pkg/*.wasm.br | wc -c)"
record "release wasm" "\"raw_bytes\": $wasm_raw, \"brotli_bytes\": $wasm_br, \"files\": $(ls "$ROOT"/target/site/pkg/*.wasm | wc -l)"

# Webhook deliveries, against a server of their own (scripts/webhook-bench.sh).
"$ROOT/scripts/webhook-bench.sh" "$out" || die "the webhook benchmark failed"
# Live logs on the run page, with a real Prefect and Chromium (scripts/log-bench.sh).
"$ROOT/scripts/log-bench.sh" "$out" || die "the log benchmark failed"
python3 "$ROOT/bench/report.py" "$results" "$out/live.txt" "$out/page-weight.txt" >"$out/report.md"
cat "$out/webhooks.md" >>"$out/report.md"
{ echo; echo "## Live logs on the run page (scripts/log-bench.sh)"; echo; cat "$out/logs.md"; } >>"$out/report.md"
say "report: $out/report.md"
cat "$out/report.md"
