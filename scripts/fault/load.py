"""Steady load for the fault tests: writes whose acknowledgement can be checked later.

Usage: load.py URL KEY RUN_ID PIPELINE_ID OUT STOP_FILE [THREADS]

Each thread alternates a status update with a unique event id (on run RUN_ID) and a
trigger with a unique Idempotency-Key (on pipeline PIPELINE_ID), one new connection per
request, until STOP_FILE exists. Every attempt is written to OUT as one JSON line:
{"t": Unix time of the answer, "kind": "status"|"trigger", "id": event id or key,
 "status": HTTP status or 0 when no answer came, "retry_after": the Retry-After header,
 if any, "error": why, for 0}.
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

url, key, run_id, pipeline_id, out_path, stop_file = sys.argv[1:7]
threads = int(sys.argv[7]) if len(sys.argv) > 7 else 4
target = urllib.parse.urlsplit(url)
lock = threading.Lock()
out = open(out_path, "w", buffering=1)


def send(method, path, body, headers):
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After"), None
    except (OSError, http.client.HTTPException) as error:
        return 0, None, type(error).__name__
    finally:
        conn.close()


def worker(n):
    count = 0
    base = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    while not os.path.exists(stop_file):
        count += 1
        ident = f"fault-{n}-{count}"
        if count % 2:
            kind = "status"
            body = json.dumps({"run_id": int(run_id), "status": "running", "event_id": ident})
            status, retry_after, error = send("POST", "/api/status-update/", body, base)
        else:
            kind = "trigger"
            headers = dict(base, **{"Idempotency-Key": ident})
            status, retry_after, error = send("POST", f"/api/pipelines/{pipeline_id}/runs", "{}", headers)
        line = {"t": round(time.time(), 3), "kind": kind, "id": ident, "status": status}
        if retry_after is not None:
            line["retry_after"] = retry_after
        if error:
            line["error"] = error
            time.sleep(0.05)  # the server is gone: do not spin
        with lock:
            out.write(json.dumps(line) + "\n")


workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
