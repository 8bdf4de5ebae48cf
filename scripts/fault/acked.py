"""Checks what load.py recorded against the database: nothing acknowledged is lost.

Usage: acked.py OUT DATABASE_URL [DOWN_AT UP_AT]

Every status update answered 200 must be in run_events (by event id) and every trigger
answered 202 must be a run (by Idempotency-Key). No answer may be other than 200, 202 or
503, and every 503 carries Retry-After. With an outage, every request gets an answer.
With DOWN_AT and UP_AT (Unix times the database stopped and started again), there must be
503s while it was down, and a success at most 10 s after it was back.
Prints the counts; exits 1 on any failure.
"""

import collections
import json
import subprocess
import sys

out_path, database_url = sys.argv[1:3]
outage = tuple(float(t) for t in sys.argv[3:5]) if len(sys.argv) > 4 else None
lines = [json.loads(line) for line in open(out_path) if line.strip()]
failures = []


def query(sql):
    rows = subprocess.run(["psql", "-qAt", "-d", database_url, "-c", sql],
                          check=True, capture_output=True, text=True).stdout
    return set(rows.split())


events = query("SELECT event_id FROM run_events WHERE event_id LIKE 'fault-%'")
keys = query("SELECT idempotency_key FROM runs WHERE idempotency_key LIKE 'fault-%'")
acked = {"status": 0, "trigger": 0}
lost = []
for line in lines:
    ok = (line["kind"] == "status" and line["status"] == 200) or \
         (line["kind"] == "trigger" and line["status"] == 202)
    if ok:
        acked[line["kind"]] += 1
        if line["id"] not in (events if line["kind"] == "status" else keys):
            lost.append(line)
by_status = collections.Counter(line["status"] for line in lines)
errors = collections.Counter(line.get("error") for line in lines if line["status"] == 0)
print(f"  {len(lines)} requests; answers {dict(sorted(by_status.items()))}; no answer {dict(errors)}")
print(f"  acknowledged: {acked['status']} status updates, {acked['trigger']} triggers; "
      f"lost: {len(lost)}")
if lost:
    failures.append(f"{len(lost)} acknowledged write(s) missing, e.g. {lost[:3]}")
if acked["status"] == 0 or acked["trigger"] == 0:
    failures.append("the load was never acknowledged")
unexpected = [line for line in lines if line["status"] not in (0, 200, 202, 503)]
if unexpected:
    failures.append(f"unexpected answers, e.g. {unexpected[:3]}")
no_retry_after = [line for line in lines if line["status"] == 503 and not line.get("retry_after")]
if no_retry_after:
    failures.append(f"503 without Retry-After, e.g. {no_retry_after[:3]}")
if outage:
    # The server stays up throughout: every request must get an answer.
    unanswered = [line for line in lines if line["status"] == 0]
    if unanswered:
        failures.append(f"{len(unanswered)} request(s) got no answer, e.g. {unanswered[:3]}")
    down, up = outage
    during = [line for line in lines if down <= line["t"] <= up + 1]
    unavailable = sum(1 for line in during if line["status"] == 503)
    back = [line["t"] for line in lines if line["t"] > up and line["status"] in (200, 202)]
    print(f"  while the database was down ({up - down:.1f} s): {unavailable} answered 503")
    if unavailable == 0:
        failures.append("no 503 while the database was down")
    if not back:
        failures.append("no success after the database came back")
    else:
        print(f"  first success {back[0] - up:.2f} s after the database was back")
        if back[0] - up > 10:
            failures.append(f"took {back[0] - up:.1f} s to recover (limit 10 s)")
for failure in failures:
    print("FAIL " + failure)
sys.exit(1 if failures else 0)
