#!/usr/bin/env python3
"""Trigger-to-flow-run and trigger-to-completed latency of the demo pipeline.

Usage: scripts/trigger-latency.py URL ADMIN_KEY [RUNS]
Against a running stack (`make run`): creates a pipeline on the demo deployment with no
pause between stages, triggers it RUNS times (default 10) one after another, and prints
the median and range of (a) trigger accepted -> flow run created in Prefect and
(b) trigger accepted -> run completed, from the server's own timestamps.
"""
import json
import statistics
import sys
import time
import urllib.request
from datetime import datetime


def call(url, key, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    base, key = sys.argv[1].rstrip("/"), sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    pipeline = call(f"{base}/api/pipelines/", key, "POST", {
        "name": f"latency {int(time.time())}", "deployment": "etl/demo",
        "default_parameters": {"stage_seconds": 0, "rows": 100}})
    submitted, completed = [], []
    for _ in range(runs):
        run = call(f"{base}/api/pipelines/{pipeline['id']}/runs", key, "POST", {})
        deadline = time.monotonic() + 120
        while run["status"] not in ("completed", "failed", "cancelled", "crashed"):
            if time.monotonic() > deadline:
                sys.exit(f"run {run['id']} did not finish in 120 s: {run['status']}")
            time.sleep(0.05)
            run = call(f"{base}/api/runs/{run['id']}", key)
        if run["status"] != "completed":
            sys.exit(f"run {run['id']} ended {run['status']}: {run.get('error_message')}")
        created = at(run["created_at"])
        submitted.append((at(run["submitted_at"]) - created).total_seconds())
        completed.append((at(run["ended_at"]) - created).total_seconds())
    for name, values in (("trigger -> flow run", submitted), ("trigger -> completed", completed)):
        print(f"{name:22} median {statistics.median(values):.3f} s  "
              f"min {min(values):.3f} s  max {max(values):.3f} s  (n={len(values)})")


if __name__ == "__main__":
    main()
