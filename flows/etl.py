"""Flowdeck's demo pipeline: the seed's five-stage ETL as a light Prefect flow.

Each stage reports `running`, then `completed` (with records processed) or `failed`, to
Flowdeck's status endpoint with the run's own callback credential, the trigger's request
id (`X-Request-ID`) and its trace context (`traceparent`). Callbacks use only the
standard library; each carries an `event_id` kept across retries, so Flowdeck ignores
repeats, and the time the change happened, so Flowdeck applies them in order.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

from prefect import flow, get_run_logger

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
) -> dict:
    logger = get_run_logger()
    traceparent = trace_parent()

    def send(payload):
        report(flowdeck_callback_url, flowdeck_token, flowdeck_request_id,
               dict(payload, run_id=flowdeck_run_id), logger, traceparent)

    processed = {}
    for name in STAGES:
        send({"stage_name": name, "status": "running"})
        time.sleep(max(0.0, stage_seconds))
        if fail_stage == name:
            message = f"simulated failure in stage '{name}'"
            send({"stage_name": name, "status": "failed", "error_message": message})
            raise StageFailed(message)
        processed[name] = int(rows * KEPT[name])
        send({"stage_name": name, "status": "completed", "records_processed": processed[name]})
        logger.info("%s: %d records", name, processed[name])
    return processed
