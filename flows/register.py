#!/usr/bin/env python3
"""Registers the demo flow with a Prefect server through its REST API, idempotently:
a `process` work pool, the `etl` flow and its `etl/demo` deployment, which runs
`etl.py:etl` from this folder. Standard library only.

Usage: register.py --api http://127.0.0.1:4200/api --pool flowdeck
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = ["Data Generation", "Data Ingestion", "Spark Processing", "DBT Transformation", "Data Export"]

# The process worker's job template (what `prefect work-pool create --type process` stores).
PROCESS_JOB_TEMPLATE = {
    "job_configuration": {
        "command": "{{ command }}", "env": "{{ env }}", "labels": "{{ labels }}", "name": "{{ name }}",
        "stream_output": "{{ stream_output }}", "working_dir": "{{ working_dir }}",
    },
    "variables": {
        "type": "object",
        "properties": {
            "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "env": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "command": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "stream_output": {"type": "boolean", "default": True},
            "working_dir": {"anyOf": [{"type": "string", "format": "path"}, {"type": "null"}], "default": None},
        },
    },
}


def optional(kind, position, title, description):
    return {"anyOf": [{"type": kind}, {"type": "null"}], "default": None, "position": position,
            "title": title, "description": description}


# What Prefect would derive from the flow's signature, closed to unknown parameters so
# that a typo is refused when the flow run is created, not when it starts.
PARAMETERS = {
    "title": "Parameters",
    "type": "object",
    "properties": {
        "flowdeck_run_id": optional("integer", 0, "Flowdeck run", "Set by Flowdeck"),
        "flowdeck_callback_url": optional("string", 1, "Callback URL", "Set by Flowdeck"),
        "flowdeck_token": optional("string", 2, "Callback credential", "Set by Flowdeck"),
        "flowdeck_request_id": optional("string", 3, "Request id", "Set by Flowdeck"),
        "rows": {"type": "integer", "default": 1000, "minimum": 0, "position": 4, "title": "Rows",
                 "description": "Rows to generate"},
        "fail_stage": {"anyOf": [{"type": "string", "enum": STAGES}, {"type": "null"}], "default": None,
                       "position": 5, "title": "Fail at stage", "description": "Make this stage fail"},
        "stage_seconds": {"type": "number", "default": 0.5, "minimum": 0, "position": 6,
                          "title": "Seconds per stage", "description": "Simulated work per stage"},
        "flowdeck_resume": {
            "anyOf": [{"type": "object", "additionalProperties": False, "required": ["from_stage", "outputs"],
                       "properties": {"from_stage": {"type": "string", "enum": STAGES},
                                      "outputs": {"type": "object",
                                                  "additionalProperties": {"anyOf": [{"type": "string"},
                                                                                     {"type": "null"}]}}}},
                      {"type": "null"}],
            "default": None, "position": 7, "title": "Restart", "description": "Set by Flowdeck on a restart"},
        "log_lines": {"type": "integer", "default": 0, "minimum": 0, "maximum": 100000, "position": 8,
                      "title": "Log lines per stage", "description": "Extra lines each stage logs (benchmarks)"},
    },
    "additionalProperties": False,
}


def call(api, method, path, body=None, accept=(200, 201)):
    data = None if body is None else json.dumps(body).encode()
    delay = 0.2
    for attempt in range(10):
        request = urllib.request.Request(api + path, data=data, method=method, headers={
            "Content-Type": "application/json", "X-PREFECT-API-VERSION": "0.8.4"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            payload = error.read().decode(errors="replace")
            if error.code in accept:
                return error.code, payload
            # A SQLite-backed server answers 503 to concurrent writes: retry.
            if error.code != 503 or attempt == 9:
                sys.exit(f"{method} {path}: HTTP {error.code}: {payload}")
        except OSError as error:
            if attempt == 9:
                sys.exit(f"{method} {path}: {error}")
        time.sleep(delay)
        delay = min(delay * 2, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api"))
    parser.add_argument("--pool", default="flowdeck")
    args = parser.parse_args()
    api = args.api.rstrip("/")

    status, _ = call(api, "POST", "/work_pools/", {"name": args.pool, "type": "process",
                                                   "base_job_template": PROCESS_JOB_TEMPLATE},
                     accept=(200, 201, 409))
    _, flow = call(api, "POST", "/flows/", {"name": "etl", "tags": ["flowdeck"]})
    _, deployment = call(api, "POST", "/deployments/", {
        "name": "demo",
        "flow_id": flow["id"],
        "work_pool_name": args.pool,
        "entrypoint": "etl.py:etl",
        "path": HERE,
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": HERE}}],
        "parameters": {},
        "parameter_openapi_schema": PARAMETERS,
        "enforce_parameter_schema": True,
        "tags": ["flowdeck", "demo"],
        "description": "Flowdeck's five-stage demo ETL",
        "paused": False,
    })
    print(f"registered etl/demo as deployment {deployment['id']} (work pool {args.pool})")


if __name__ == "__main__":
    main()
