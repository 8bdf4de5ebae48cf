"""Changes the data at a steady rate while a read is measured (scripts/bench.sh).

Usage: changes.py URL KEY FIRST_RUN RUNS PER_SECOND [FIRST_COUNT]. Sends a stage report
with a rising record count (from FIRST_COUNT, default 1000) every 1/PER_SECOND s, each to
the next of RUNS runs from FIRST_RUN, so that every report changes a stage row and is
announced to every replica (a second run needs another FIRST_COUNT, or its first reports
repeat the first run's). Runs until killed.
"""
import http.client
import json
import sys
import time
import urllib.parse

url, key, first_run, runs, per_second = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
first_count = int(sys.argv[6]) if len(sys.argv) > 6 else 1000
target = urllib.parse.urlsplit(url)
connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
interval = 1 / per_second
sent = 0
next_at = time.monotonic()
while True:
    body = json.dumps({"run_id": first_run + sent % runs, "stage_name": "Data Generation",
                       "status": "running", "records_processed": first_count + sent})
    try:
        connection.request("POST", "/api/status-update/", body, headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            print(f"changes.py: status {answer.status}", file=sys.stderr)
    except OSError as error:
        print(f"changes.py: {error}", file=sys.stderr)
        connection.close()
    sent += 1
    next_at += interval
    time.sleep(max(0.0, next_at - time.monotonic()))
