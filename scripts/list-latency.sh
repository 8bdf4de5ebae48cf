#!/usr/bin/env bash
# Usage: scripts/list-latency.sh (after scripts/build.sh)
# Not part of make test (issue 8 builds the benchmark suite). The list and filter queries against 10,000 pipelines and 1,000,000 runs: latency of the
# common REST calls, measured with curl on a release server (not a benchmark suite).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
SEED_SQL="
SET session_replication_role = replica;
INSERT INTO pipelines (slug, name, stage_names, default_parameters, tags)
  SELECT 'p-' || g, 'Pipeline ' || g, ARRAY['extract','load'], '{}',
         CASE WHEN g % 3 = 0 THEN ARRAY['etl','nightly'] ELSE ARRAY['ml'] END
  FROM generate_series(1, 10000) g;
INSERT INTO runs (pipeline_id, status, actor, source, created_at, updated_at, ended_at)
  SELECT 1 + (g % 10000),
         (ARRAY['completed','completed','completed','failed','running','pending'])[1 + g % 6],
         'api-key:bench', 'api',
         now() - make_interval(secs => (1000000 - g) * 30),
         now() - make_interval(secs => (1000000 - g) * 30),
         CASE WHEN g % 6 < 4 THEN now() - make_interval(secs => (1000000 - g) * 30 - 60) END
  FROM generate_series(1, 1000000) g;
UPDATE pipelines p SET latest_run_id = (SELECT max(id) FROM runs r WHERE r.pipeline_id = p.id);
SET session_replication_role = origin;
ANALYZE;
"
serve_fresh flowdeck_million
echo "seeded: $(psql -tA -d "$DATABASE_URL" -c 'SELECT count(*) FROM runs') runs, $(psql -tA -d "$DATABASE_URL" -c 'SELECT count(*) FROM pipelines') pipelines"
measure() {
  local name="$1"; shift
  for i in $(seq 1 5); do curl -s -o /dev/null "$@"; done
  local times
  times="$(for i in $(seq 1 30); do curl -s -o /dev/null -w '%{time_total}\n' "$@"; done | sort -n)"
  printf '%-58s p50 %6.1f ms  max %6.1f ms\n' "$name" \
    "$(echo "$times" | sed -n 15p | awk '{print $1*1000}')" "$(echo "$times" | tail -1 | awk '{print $1*1000}')"
}
H=(-H "Authorization: Bearer $key" -H 'Content-Type: application/json')
measure "GET /api/pipelines/ (limit 100)" "${H[@]}" "$url/api/pipelines/"
measure "POST /api/runs/filter {} (newest 50)" "${H[@]}" -X POST "$url/api/runs/filter" -d '{}'
measure "POST /api/runs/filter failed, newest 50" "${H[@]}" -X POST "$url/api/runs/filter" -d '{"runs":{"status":{"any_":["failed"]}}}'
measure "POST /api/runs/filter pipeline name like + failed" "${H[@]}" -X POST "$url/api/runs/filter" -d '{"runs":{"status":{"any_":["failed"]}},"pipelines":{"name":{"like_":"Pipeline 42"}}}'
measure "POST /api/runs/filter tags all_ etl, last day" "${H[@]}" -X POST "$url/api/runs/filter" -d "{\"runs\":{\"created\":{\"after_\":\"$(date -u -d '1 day ago' +%FT%TZ)\"}},\"pipelines\":{\"tags\":{\"all_\":[\"etl\"]}}}"
measure "POST /api/runs/filter ENDED_DESC" "${H[@]}" -X POST "$url/api/runs/filter" -d '{"sort":"ENDED_DESC"}'
measure "POST /api/runs/filter offset 10000" "${H[@]}" -X POST "$url/api/runs/filter" -d '{"offset":10000}'
measure "POST /api/runs/count failed (all 1M scanned by index)" "${H[@]}" -X POST "$url/api/runs/count" -d '{"runs":{"status":{"any_":["failed"]}}}'
measure "POST /api/pipelines/filter NAME_ASC" "${H[@]}" -X POST "$url/api/pipelines/filter" -d '{"sort":"NAME_ASC"}'
measure "POST /api/pipelines/filter status failed, NAME_ASC" "${H[@]}" -X POST "$url/api/pipelines/filter" -d '{"pipelines":{"status":{"any_":["failed"]}},"sort":"NAME_ASC"}'
measure "GET /api/runs/500000" "${H[@]}" "$url/api/runs/500000"
