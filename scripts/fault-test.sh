#!/usr/bin/env bash
# Fault tests under load, against the release server (part of make test):
#   1. PostgreSQL stopped and restarted under load: Flowdeck answers 503 with Retry-After
#      (never 500, never no answer) while it is down, succeeds again within seconds, and no write it acknowledged
#      is lost. The database is a private cluster started here, so nothing else is hit.
#   2. Two replicas on one database while Prefect hangs (SIGSTOP): 20 triggers through
#      both, and 5 Idempotency-Keys sent to both at once, each become exactly one flow run
#      once Prefect resumes.
# Draining (what SIGTERM starts) and what two replicas share without Prefect are tested in
# process: server/tests/replicas.rs and server/tests/events.rs.
# Usage: scripts/fault-test.sh PREFECT_STATE_DIR PREFECT_PORT  (a Prefect from prefect.sh start)
source "$(dirname "$0")/lib.sh"
prefect_dir="${1:?prefect state dir}"; prefect_port="${2:?prefect port}"
prefect_url="http://127.0.0.1:$prefect_port/api"
prefect_pid="$(cat "$prefect_dir/server.pid")"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
work="$(mktemp -d -t flowdeck-fault.XXXXXX)"
export LEPTOS_SITE_ROOT="$ROOT/target/site" RUST_LOG=warn
export FLOWDECK_TRIGGERS_PER_MIN=1000000 FLOWDECK_AUTH_FAILURES_PER_MIN=1000000
servers=(); databases=(); pg_data=""; background=()

# Runs a PostgreSQL server binary as the postgres user when we are root (it refuses root).
pg_bin="$(pg_bin_dir)"
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
  kill -CONT -- "-$prefect_pid" 2>/dev/null || true
  for pid in "${servers[@]}" "${background[@]}"; do
    { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  [ -n "$pg_data" ] && as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1
  [ -n "$pg_data" ] && rm -rf "$pg_data"
  for db in "${databases[@]}"; do
    psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# fresh_db NAME: a new database on the shared server; sets DATABASE_URL.
fresh_db() {
  local db="flowdeck_fault_$1_$$"
  psql -q -d "$DB_ADMIN_URL" -c "CREATE DATABASE $db"
  databases+=("$db")
  export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
}
# setup: migrates DATABASE_URL, makes an admin key ($admin), a pipeline ($pipeline) and
# triggers a run of it ($run) through a server that is then stopped.
setup() {
  "$bin" migrate >/dev/null
  admin="$("$bin" api-key create --role admin --name fault-admin | tail -n 1)"
  serve setup
  api "$setup_url" POST /api/pipelines/ \
    '{"name": "fault", "default_parameters": {"stage_seconds": 0, "rows": 1}}' >"$work/p.json"
  pipeline="$(field '["id"]' <"$work/p.json")"
  run="$(api "$setup_url" POST "/api/pipelines/$pipeline/runs" '{}' | field '["id"]')"
  stop_server "$setup_pid"
}
# serve NAME [ENV=VALUE...]: starts the server on a free port with its log in $work;
# sets NAME_url and NAME_pid.
serve() {
  local name="$1" port; shift
  port="$(free_port)"
  env FLOWDECK_ADDR="127.0.0.1:$port" "$@" "$bin" serve >>"$work/$name.log" 2>&1 &
  servers+=($!)
  printf -v "${name}_pid" '%s' "$!"
  printf -v "${name}_url" '%s' "http://127.0.0.1:$port"
  wait_healthy "http://127.0.0.1:$port" "$work/$name.log"
}
stop_server() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }
# api URL METHOD PATH [BODY [HEADER]]: one admin call; prints the body, fails on non-2xx.
api() {
  curl -fsS -X "$2" "$1$3" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    ${5:+-H "$5"} ${4:+-d "$4"}
}
now() { date +%s.%N; }
# load URL NAME: starts scripts/fault/load.py; stop_load NAME ends it.
load() {
  rm -f "$work/$2.stop"
  python3 "$ROOT/scripts/fault/load.py" "$1" "$admin" "$run" "$pipeline" "$work/$2.jsonl" \
    "$work/$2.stop" 4 &
  background+=($!)
  load_pid=$!
}
stop_load() { touch "$work/$1.stop"; wait "$load_pid"; }

# --- 1. PostgreSQL restart under load ----------------------------------------------------
say "fault: PostgreSQL stopped for 3 s and restarted under load"
[ -x "$pg_bin/initdb" ] || die "PostgreSQL's server binaries are missing (apt-get install postgresql)"
pg_data="$(mktemp -d -t flowdeck-pg.XXXXXX)"
[ "$(id -u)" = 0 ] && chown postgres "$pg_data"
pg_port="$(free_port)"
as_postgres "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust --no-sync >/dev/null \
  || die "initdb failed"
pg_ctl() {
  as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" \
    -o "-p $pg_port -k $pg_data -c listen_addresses=127.0.0.1" "$@" >/dev/null
}
pg_ctl -w start || die "the private PostgreSQL did not start"
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
setup
serve restart
load "$restart_url" restart
sleep 3
down="$(now)"
pg_ctl -m fast -w stop || die "cannot stop the private PostgreSQL"
sleep 3
pg_ctl -w start || die "the private PostgreSQL did not start again"
up="$(now)"
sleep 8
stop_load restart
kill -0 "$restart_pid" 2>/dev/null || { tail -n 20 "$work/restart.log"; die "flowdeck died with the database"; }
python3 "$ROOT/scripts/fault/acked.py" "$work/restart.jsonl" "$DATABASE_URL" "$down" "$up" \
  || { grep -E 'WARN|ERROR' "$work/restart.log" | tail -n 10; die "the database restart lost or failed requests"; }
stop_server "$restart_pid"
pg_ctl -m fast -w stop; rm -rf "$pg_data"; pg_data=""

# --- 2. Two replicas on one database, Prefect hung ---------------------------------------
say "fault: two replicas on one database, Prefect hung (SIGSTOP) during 20 triggers"
fresh_db replicas
setup
prefect_env=(PREFECT_API_URL="$prefect_url" FLOWDECK_DEFAULT_DEPLOYMENT=etl/demo FLOWDECK_DISPATCH_LEASE_S=3)
serve one "${prefect_env[@]}"
serve two "${prefect_env[@]}"
kill -STOP -- "-$prefect_pid"
: >"$work/triggers.txt"; : >"$work/keyed.txt"; triggering=()
for i in $(seq 1 20); do
  if [ $((i % 2)) = 1 ]; then target="$one_url"; else target="$two_url"; fi
  (api "$target" POST "/api/pipelines/$pipeline/runs" '{}' | field '["id"]' | sed "s|^|$target |" >>"$work/triggers.txt") &
  background+=($!); triggering+=($!)
done
for k in $(seq 1 5); do
  for target in "$one_url" "$two_url"; do
    # A key still in use on the other replica answers 409: sent again, as a client would.
    (for _ in $(seq 1 100); do
       api "$target" POST "/api/pipelines/$pipeline/runs" '{}' "Idempotency-Key: both-$k" >"$work/keyed-$k-${target##*:}.json" && break
       sleep 0.1
     done; field '["id"]' <"$work/keyed-$k-${target##*:}.json" | sed "s|^|$target key-$k |" >>"$work/keyed.txt") &
    background+=($!); triggering+=($!)
  done
done
sleep 3
kill -CONT -- "-$prefect_pid"
for pid in "${triggering[@]}"; do wait "$pid" || true; done
[ "$(wc -l <"$work/triggers.txt")" = 20 ] || die "not every trigger was accepted: $(cat "$work/triggers.txt")"
[ "$(wc -l <"$work/keyed.txt")" = 10 ] || die "not every keyed trigger was accepted"
distinct="$(awk '{print $2, $3}' "$work/keyed.txt" | sort -u | wc -l)"
[ "$distinct" = 5 ] || die "an Idempotency-Key sent to both replicas made two runs: $(cat "$work/keyed.txt")"
expected=$((1 + 20 + 5))
each_submitted_once "$prefect_url" "$expected" || die "a trigger through two replicas did not become exactly one flow run"
say "fault tests passed"
