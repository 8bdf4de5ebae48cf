#!/usr/bin/env bash
# Live log figures for `make bench`: the demo flow in a real Prefect logs at a set rate
# while its run page is open in Chromium (end2end/log-bench.mjs); how many lines a second
# the page kept up with, and the delay from Prefect receiving each line to the page
# showing it. Writes DIR/logs.md. Needs the release build and Chromium.
#   LOG_BENCH_RATES  lines a second to try [200 1000]
# Usage: scripts/log-bench.sh DIR
source "$(dirname "$0")/lib.sh"
dir="${1:?output directory}"; mkdir -p "$dir"
RATES="${LOG_BENCH_RATES:-200 1000}"
SECONDS_PER_STAGE=2
prefect_dir="$(mktemp -d -t flowdeck-log-bench.XXXXXX)"
prefect_port="$(free_port)"
"$ROOT/scripts/prefect.sh" start "$prefect_dir" "$prefect_port"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo RUST_LOG=warn
serve_fresh flowdeck_log_bench
trap 'serve_fresh_cleanup; "$ROOT/scripts/prefect.sh" stop "$prefect_dir"' EXIT
api() { curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
pipeline="$(api -X POST "$url/api/pipelines/" -d '{"name": "Log bench"}' | field '["id"]')"

{
  echo "| asked | written by the flow | lines shown live | page kept up with | Prefect to page |"
  echo "| --- | --- | --- | --- | --- |"
} >"$dir/logs.md"
for rate in $RATES; do
  per_stage=$((rate * SECONDS_PER_STAGE))
  say "logs: $per_stage lines per stage, $rate a second"
  run="$(api -X POST "$url/api/pipelines/$pipeline/runs" \
    -d "{\"parameters\": {\"log_lines\": $per_stage, \"stage_seconds\": $SECONDS_PER_STAGE}}" | field '["id"]')"
  line="$(cd "$ROOT/end2end" && node log-bench.mjs "$url" "$key" "$run")" || die "the log benchmark failed"
  echo "$line"
  echo "$line" | python3 -c '
import re, sys
line = sys.stdin.read()
m = re.search(r"written (\d+) lines in ([\d.]+) s \((\d+) lines/s\); lines shown (\d+) of (\d+) in ([\d.]+) s \((\d+) lines/s\); Prefect to page: (.*)", line)
print(f"| '"$rate"'/s | {m[1]} lines at {m[3]}/s | {m[4]} of {m[5]} | {m[7]} lines/s | {m[8]} |")' >>"$dir/logs.md"
done
say "wrote $dir/logs.md"
