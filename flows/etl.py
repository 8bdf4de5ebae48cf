"""Flowdeck's demo pipeline: the seed's five-stage ETL as a light Prefect flow.

Each stage reports `running`, then `completed` (with records processed) or `failed`, to
Flowdeck's status endpoint with the run's own callback credential, the trigger's request
id (`X-Request-ID`) and its trace context (`traceparent`). Callbacks use only the
standard library; each carries an `event_id` kept across retries, so Flowdeck ignores
repeats, and the time the change happened, so Flowdeck applies them in order.

Each stage is a Prefect task run named after the stage. It reads the previous stage's
output and leaves its own as a JSON file under `FLOWDECK_DEMO_OUTPUTS` (one folder per
flow run), so a restart can begin at a later stage: Flowdeck then passes
`flowdeck_resume` = `{"from_stage": name, "outputs": {earlier stage: the flow run whose
output it reuses}}`. The flow checks every reused output is still there before running
anything, and fails at the first stage it would run, saying which output is gone, if one
is not.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run as this_flow_run

STAGES = [
    "Data Generation",
    "Data Ingestion",
    "Spark Processing",
    "DBT Transformation",
    "Data Export",
]
# Share of the generated rows that survives each stage.
KEPT = {
    "Data Generation": 1.0,
    "Data Ingestion": 1.0,
    "Spark Processing": 0.9,
    "DBT Transformation": 0.8,
    "Data Export": 0.8,
}
ATTEMPTS = 4
TIMEOUT_S = 5.0


class StageFailed(RuntimeError):
    """A stage failed on purpose (the `fail_stage` parameter)."""


class OutputGone(RuntimeError):
    """A restart needs an earlier run's stage output that is no longer there."""


def outputs_dir():
    return os.environ.get("FLOWDECK_DEMO_OUTPUTS") or os.path.join(tempfile.gettempdir(), "flowdeck-demo-outputs")


def output_path(flow_run_id, name):
    """Where the stage `name` of flow run `flow_run_id` leaves its output."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    folder = re.sub(r"[^A-Za-z0-9-]", "_", str(flow_run_id))
    return os.path.join(outputs_dir(), folder, f"{slug}.json")


def read_output(flow_run_id, name):
    with open(output_path(flow_run_id, name), encoding="utf-8") as file:
        return json.load(file)


def write_output(flow_run_id, name, output):
    path = output_path(flow_run_id, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staged = path + ".tmp"
    with open(staged, "w", encoding="utf-8") as file:
        json.dump(output, file)
    os.replace(staged, path)


@task(task_run_name="{name}", cache_policy=NONE)
def run_stage(name: str, generated: int, fail: bool, seconds: float, log_lines: int = 0) -> dict:
    """One stage's work: `generated` rows in, the share of them it keeps out; `log_lines`
    lines logged on the way, spread over the stage (for benchmarks)."""
    if log_lines > 0:
        logger = get_run_logger()
        for line in range(1, log_lines + 1):
            logger.info("%s: working, line %d of %d", name, line, log_lines)
            time.sleep(max(0.0, seconds) / log_lines)
    else:
        time.sleep(max(0.0, seconds))
    if fail:
        raise StageFailed(f"simulated failure in stage '{name}'")
    return {"stage": name, "generated": generated, "records": int(generated * KEPT[name])}


def trace_parent():
    """The trace context Flowdeck gave this flow run (label `__OTEL_TRACEPARENT`), if any."""
    try:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        labels = (context.flow_run.labels or {}) if context and context.flow_run else {}
        value = labels.get("__OTEL_TRACEPARENT")
        return value if isinstance(value, str) else None
    except Exception:  # an older Prefect without labels: no trace context
        return None


def report(url, token, request_id, payload, logger, traceparent=None):
    """POST one status report; retry connection errors and 5xx, give up quietly after."""
    if not url:
        return
    # The time of the change itself, so Flowdeck can order reports that arrive out of order.
    body = dict(payload, event_id=str(uuid.uuid4()), timestamp=datetime.now(timezone.utc).isoformat())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if request_id:
        headers["X-Request-ID"] = request_id
    if traceparent:
        headers["traceparent"] = traceparent
    delay = 0.25
    for attempt in range(1, ATTEMPTS + 1):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                response.read()
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                logger.warning("Flowdeck refused the %s report: HTTP %s", body["status"], error.code)
                return
            problem = f"HTTP {error.code}"
        except OSError as error:
            problem = repr(error)
        if attempt < ATTEMPTS:
            time.sleep(delay)
            delay *= 2
    logger.warning("could not report %s to Flowdeck: %s", body["status"], problem)


@flow(name="etl", log_prints=True)
def etl(
    flowdeck_run_id: int | None = None,
    flowdeck_callback_url: str | None = None,
    flowdeck_token: str | None = None,
    flowdeck_request_id: str | None = None,
    rows: int = 1000,
    fail_stage: str | None = None,
    stage_seconds: float = 0.5,
    flowdeck_resume: dict | None = None,
    log_lines: int = 0,
) -> dict:
    logger = get_run_logger()
    traceparent = trace_parent()

    def send(payload):
        report(flowdeck_callback_url, flowdeck_token, flowdeck_request_id,
               dict(payload, run_id=flowdeck_run_id), logger, traceparent)

    resume = flowdeck_resume or {}
    start_at = resume.get("from_stage") or STAGES[0]
    if start_at not in STAGES:
        raise ValueError(f"flowdeck_resume.from_stage must be one of {', '.join(STAGES)}, not {start_at!r}")
    start = STAGES.index(start_at)
    reused = resume.get("outputs") or {}
    generated = rows
    for name in STAGES[:start]:
        source = reused.get(name)
        try:
            generated = read_output(source, name)["generated"]
        except (OSError, ValueError, KeyError, TypeError):
            message = (f"cannot start at '{start_at}': the output of '{name}' from flow run {source} is gone "
                       f"(looked in {output_path(source, name)}); retry every stage instead")
            send({"stage_name": start_at, "status": "failed", "error_message": message})
            raise OutputGone(message)
        logger.info("%s: reusing the output of flow run %s", name, source)

    processed = {}
    for name in STAGES[start:]:
        send({"stage_name": name, "status": "running"})
        try:
            output = run_stage(name, generated, fail_stage == name, stage_seconds, log_lines)
        except StageFailed as error:
            send({"stage_name": name, "status": "failed", "error_message": str(error)})
            raise
        write_output(this_flow_run.id, name, output)
        processed[name] = output["records"]
        send({"stage_name": name, "status": "completed", "records_processed": processed[name]})
        logger.info("%s: %d records", name, processed[name])
    return processed
