"""Checks that every run became exactly one Prefect flow run, and no two runs the same one.

Usage: flow_runs.py PREFECT_API_URL DATABASE_URL EXPECTED_RUNS
Looks each run up in Prefect by its request tag (flowdeck-request:<id>); exits 1 unless
there are EXPECTED_RUNS runs and each has exactly its own flow run.
"""

import json
import subprocess
import sys
import urllib.request

api, database_url, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = subprocess.run(
    ["psql", "-qAt", "-F", " ", "-d", database_url, "-c",
     "SELECT request_id, prefect_flow_run_id FROM runs ORDER BY id"],
    check=True, capture_output=True, text=True).stdout.split("\n")
failures, seen = 0, set()
for row in filter(str.strip, rows):
    request_id, flow_run_id = row.split()
    body = json.dumps({"flow_runs": {"tags": {"all_": ["flowdeck-request:" + request_id]}}}).encode()
    request = urllib.request.Request(api + "/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    ids = [r["id"] for r in json.load(urllib.request.urlopen(request, timeout=30))]
    ok = ids == [flow_run_id] and flow_run_id not in seen
    seen.add(flow_run_id)
    failures += not ok
    if not ok:
        print("  BAD " + request_id + ": " + str(len(ids)) + " flow run(s)")
print(f"  {len(seen) - failures} of {expected} runs submitted exactly once, {failures} not")
sys.exit(1 if failures or len(seen) != expected else 0)
