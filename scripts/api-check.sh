#!/usr/bin/env bash
# The REST API against a fresh release server: the README's curl examples, run as written
# and checked, then schemathesis with every check against the generated OpenAPI document.
# Needs the release build (scripts/build.sh) and schemathesis (scripts/tools.sh test).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
SCHEMATHESIS="$TOOLS_DIR/schemathesis-$SCHEMATHESIS_VERSION/bin/schemathesis"
[ -x "$SCHEMATHESIS" ] || die "schemathesis is missing: run scripts/tools.sh test"

# Schemathesis sends bad credentials on purpose (the ignored-auth check) and triggers many
# runs: budgets it cannot spend, or the address it fuzzes from would be locked out.
export FLOWDECK_AUTH_FAILURES_PER_MIN=1000000 FLOWDECK_TRIGGERS_PER_MIN=1000000
# The server connects as a role that may read and write rows only, so every operation is
# exercised under least privilege (a privilege it lacks would answer 500).
SERVER_ROLE=flowdeck_app serve_fresh flowdeck_api
export FLOWDECK="$url" KEY="$key"

# --- README examples -------------------------------------------------------------------
blocks="$(mktemp -d -t flowdeck-examples.XXXXXX)"
python3 - "$ROOT/README.md" "$blocks" <<'EOF'
import pathlib, re, sys
text = pathlib.Path(sys.argv[1]).read_text()
section = text.split("<!-- examples:start -->")[1].split("<!-- examples:end -->")[0]
for i, block in enumerate(re.findall(r"```sh\n(.*?)```", section, re.S), 1):
    pathlib.Path(sys.argv[2], f"{i}.sh").write_text(block)
EOF
[ "$(ls "$blocks" | wc -l)" -eq 4 ] || die "README: expected 4 example blocks, found $(ls "$blocks" | wc -l)"
example() { bash -euo pipefail "$blocks/$1.sh"; }

say "README example 1: create a pipeline"
PIPELINE="$(example 1 | field '["id"]')" || die "example 1 did not answer a pipeline"
export PIPELINE

say "README example 2: trigger with an Idempotency-Key, twice"
first="$(example 2 | field '["id"]')" || die "example 2 did not answer a run"
again="$(example 2 | field '["id"]')"
[ "$first" = "$again" ] || die "example 2 sent twice made two runs ($first, $again)"
runs="$(curl -fsS -X POST "$url/api/runs/count" -H "Authorization: Bearer $key")"
[ "$runs" = 1 ] || die "expected 1 run after the repeated trigger, counted $runs"

say "README example 3: failed runs of the last day"
curl -fsS -X POST "$url/api/status-update/" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d "{\"run_id\": $first, \"status\": \"failed\"}" >/dev/null
found="$(example 3 | field '[0]["id"]')" || die "example 3 did not answer a list"
[ "$found" = "$first" ] || die "example 3 did not find the failed run $first (found $found)"

say "README example 4: follow the events"
stream="$(timeout 3 bash "$blocks/4.sh" || true)"
grep -q '^event: hello' <<<"$stream" || die "example 4 did not open an event stream: $stream"
rm -rf "$blocks"

# --- schemathesis ----------------------------------------------------------------------
say "schemathesis $SCHEMATHESIS_VERSION: its default checks (all of them), every operation"
# Everything is fuzzed with an admin key (which cannot revoke or rotate itself away),
# positive and negative data, with schemathesis' default checks (every one), the event
# streams included: each of their events is checked against its schema (`StreamEvent`).
# A loaded CI machine may answer slowly: the time-out (10 s by default) is raised in
# scripts/schemathesis.toml, so that only wrong answers fail. Its report is written to a file and, on failure, printed last (after the server's warnings),
# so that a CI log cut to its tail still shows which check failed and how to reproduce it.
# scripts/schemathesis.toml holds the two answers the document alone cannot tell it.
report="$(mktemp -t flowdeck-schemathesis.XXXXXX)"
if ! "$SCHEMATHESIS" --config-file "$ROOT/scripts/schemathesis.toml" --no-color run "$url/api/openapi.json" \
    --header "Authorization: Bearer $key" \
    --mode all \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --workers "${SCHEMATHESIS_WORKERS:-2}" \
    --generation-database none >"$report" 2>&1; then
  echo "---- server warnings and errors (last 20) ----"
  grep -E 'WARN|ERROR' "$log" | tail -n 20 || true
  echo "---- schemathesis report ----"
  failures="$(sed -n '/FAILURES/,$p' "$report")"
  if [ -n "$failures" ]; then tail -c 12000 <<<"$failures"; else tail -n 80 "$report"; fi
  die "schemathesis found failures"
fi
grep -E 'Selected|Tested|generated|No issues' "$report" | tail -n 4 || true
# Every operation exercised: none left untested (a 429 or an unreachable precondition would).
selected="$(sed -n 's/^ *Selected: \([0-9]*\)\/.*/\1/p' "$report")"
tested="$(sed -n 's/^ *Tested: \([0-9]*\).*/\1/p' "$report")"
[ -n "$selected" ] && [ "$selected" = "$tested" ] || { cat "$report"; die "schemathesis tested $tested of $selected operations"; }
rm -f "$report"
