#!/usr/bin/env bash
# A local Prefect 3 server and process worker for the demo and the tests.
#   scripts/prefect.sh install            create/refresh the pinned virtualenv
#   scripts/prefect.sh start DIR PORT     start server + worker (state in DIR), register flows/
#   scripts/prefect.sh stop DIR           stop what `start` started
source "$(dirname "$0")/lib.sh"

PREFECT_VERSION=3.8.8   # 3.9.x pins a certifi newer than PyPI's mirror here holds
CONSTRAINTS="$ROOT/scripts/prefect/constraints.txt"
VENV="$TOOLS_DIR/prefect-$PREFECT_VERSION"

install() {
  local want marker="$VENV/.flowdeck-installed"
  want="$PREFECT_VERSION $(sha256sum "$CONSTRAINTS" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/prefect" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  say "installing Prefect $PREFECT_VERSION into $VENV (about 80 s, once)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "cannot create a virtualenv in $VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" \
    "prefect==$PREFECT_VERSION" || die "pip could not install prefect==$PREFECT_VERSION"
  "$VENV/bin/python" -c 'import prefect.server.api.server' || die "the Prefect install does not import"
  echo "$want" >"$marker"
}

prefect_env() {
  local dir="$1" port="$2"
  export PREFECT_HOME="$dir/home" PREFECT_API_URL="http://127.0.0.1:$port/api"
  # The UI is for people (make run); tests leave it off.
  export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PREFECT_UI_ENABLED="${FLOWDECK_PREFECT_UI:-false}"
  export PREFECT_WORKER_QUERY_SECONDS=1 PREFECT_LOGGING_LEVEL=WARNING
  # Flow and task run logs go to the API at INFO (the run page shows them), though
  # Prefect's own loggers stay at WARNING; the server streams new logs to followers.
  export PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL=INFO PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL=INFO
  export PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true
  # Flows send their lines every 0.3 s instead of every 2 s, so the run page shows them live.
  export PREFECT_LOGGING_TO_API_BATCH_INTERVAL=0.3
  # Where the demo flow's stages leave their outputs, for restarts from a later stage.
  export FLOWDECK_DEMO_OUTPUTS="$dir/outputs"
  mkdir -p "$PREFECT_HOME"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  local dir="${1:?state directory}" port="${2:?port}"
  install
  prefect_env "$dir" "$port"
  echo "$port" >"$dir/port"
  if ! alive "$dir/server.pid"; then
    setsid "$VENV/bin/prefect" server start --host 127.0.0.1 --port "$port" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/server.pid"
  fi
  for _ in $(seq 1 120); do
    curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
    alive "$dir/server.pid" || { tail -20 "$dir/server.log" >&2; die "the Prefect server exited"; }
    sleep 0.5
  done
  curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 || die "the Prefect server did not answer in 60 s"
  "$VENV/bin/python" "$ROOT/flows/register.py" --api "$PREFECT_API_URL" --pool flowdeck >&2
  if ! alive "$dir/worker.pid"; then
    setsid "$VENV/bin/prefect" worker start --pool flowdeck --type process --name "flowdeck-$port" \
      >"$dir/worker.log" 2>&1 &
    echo $! >"$dir/worker.pid"
  fi
  say "Prefect $PREFECT_VERSION on $PREFECT_API_URL (logs in $dir)"
}

stop() {
  local dir="${1:?state directory}"
  for name in worker server; do
    if alive "$dir/$name.pid"; then
      local pid; pid="$(cat "$dir/$name.pid")"
      # setsid made it a process-group leader: stop its children too.
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
  done
  # The process worker starts each flow run in a session of its own; end the ones that
  # belong to this server, which would otherwise retry a dead API for minutes.
  local port api pid
  port="$(cat "$dir/port" 2>/dev/null)" || return 0
  api="PREFECT_API_URL=http://127.0.0.1:$port/api"
  for pid in $(pgrep -f 'prefect\.engine' || true); do
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "$api" && kill -KILL "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" "${3:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: scripts/prefect.sh install | start DIR PORT | stop DIR" ;;
esac
