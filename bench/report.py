"""Writes make bench's markdown report from its results (scripts/bench.sh)."""
import json
import os
import platform
import re
import subprocess
import sys

results_path, live_path, weight_path = sys.argv[1:4]
results = [json.loads(line) for line in open(results_path) if line.strip()]
live = open(live_path).read()
weight = open(weight_path).read()


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def find(name, clients=None):
    for r in results:
        if r["name"] == name and (clients is None or r.get("clients") == clients):
            return r
    return None


def wal_per_request(r):
    """A write measurement's WAL bytes per accepted request and the full-page images' share
    of them (None when pg_waldump could not read the log), or None without WAL figures."""
    if not r or "wal" not in r:
        return None
    wal, x = r["wal"], r["result"]
    accepted = max(x["requests"] - x["non_2xx"], 1)
    share = wal["fpi_bytes"] / wal["bytes"] if wal.get("fpi_bytes") is not None and wal["bytes"] else None
    return wal["bytes"] / accepted, share


def ms(value):
    return f"{value:.2f} ms"


cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
pg = sh("psql -tA -d \"$DB_ADMIN_URL\" -c 'SHOW server_version' 2>/dev/null") or "?"
out = []
out.append("# Flowdeck benchmark report\n")
out.append(f"- commit `{sh('git rev-parse --short HEAD')}` ({sh('git log -1 --format=%cI')})")
out.append(f"- machine: {os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}")
wrk = sh("wrk -v 2>&1 | head -1 | cut -d' ' -f2")
out.append(f"- PostgreSQL {pg}; release build; load generator: wrk {wrk} (separate process)")
out.append(f"- each load measurement: {results[0]['result']['seconds']:.0f} s\n")

targets = []
out.append("## Reads at full size\n")
out.append("| call | clients | requests/s | p50 | p99 | max | non-2xx |")
out.append("| --- | --- | --- | --- | --- | --- | --- |")
reads = ["GET /api/pipelines/", "GET /api/pipelines/ (brotli)", "POST /api/runs/filter (failed, newest 50)", "GET /api/pipelines/ (data changing 50/s)",
         "GET /api/health", "GET /api/pipelines/{id}", "GET /api/runs/{id}",
         "GET /api/pipelines/{id} (data changing 50/s)", "GET /api/runs/{id} (data changing 50/s)"]
for name in reads:
    for clients in [1, 16, 64]:
        r = find(name, clients)
        if r:
            x = r["result"]
            out.append(f"| `{name}` | {clients} | {x['rps']:.0f} | {ms(x['p50_ms'])} | {ms(x['p99_ms'])} | {ms(x['max_ms'])} | {x['non_2xx']} |")
        if r and clients == 16 and "changing" not in name and "health" not in name:
            targets.append((f"{name} p99 at 16 clients", "< 10 ms", ms(r["result"]["p99_ms"]), r["result"]["p99_ms"] < 10))
        if r and clients == 16 and name in ("GET /api/pipelines/{id}", "GET /api/runs/{id}"):
            targets.append((f"{name} at 16 clients", ">= 6,000/s", f"{r['result']['rps']:.0f}/s", r["result"]["rps"] >= 6000))

for name in ("GET /api/pipelines/", "GET /api/pipelines/ (brotli)", "POST /api/runs/filter (failed, newest 50)"):
    at16, at64 = find(name, 16), find(name, 64)
    if at16 and at64:
        a, b = at16["result"]["rps"], at64["result"]["rps"]
        targets.append((f"{name}: 64 clients get what 16 get", ">= 16 clients'", f"{b:.0f}/s vs {a:.0f}/s", b >= a))

out.append("\n## Writes\n")
status = find("POST /api/status-update/ (durable)")
trig = find("POST /api/pipelines/{id}/runs (trigger)")
trig_rec = find("triggers recorded")
out.append("| call | clients | requests/s | p50 | p99 | non-2xx | durably recorded |")
out.append("| --- | --- | --- | --- | --- | --- | --- |")
for label, name, rec_name, target in [
        ("status updates", "POST /api/status-update/ (durable)", "status updates recorded",
         "status updates per second, durably recorded"),
        ("status updates, seed payload", "POST /api/status-update/ (seed payload, durable)",
         "seed status updates recorded", "status updates per second with the seed's payload, durably recorded")]:
    r, rec = find(name), find(rec_name)
    if r:
        x = r["result"]
        out.append(f"| {label} | {r['clients']} | {x['rps']:.0f} | {ms(x['p50_ms'])} | {ms(x['p99_ms'])} | {x['non_2xx']} | {rec['recorded']} of {rec['acknowledged']} acknowledged |")
        targets.append((target, ">= 5,000", f"{x['rps']:.0f}/s ({rec['recorded']} of {rec['acknowledged']} in the database)",
                        x["rps"] >= 5000 and rec["recorded"] >= rec["acknowledged"]))
if trig:
    x = trig["result"]
    out.append(f"| triggers | {trig['clients']} | {x['rps']:.0f} | {ms(x['p50_ms'])} | {ms(x['p99_ms'])} | {x['non_2xx']} | {trig_rec['recorded']} runs |")
    accepted = x["requests"] - x["non_2xx"]
    # Answers still in flight when wrk stops (at most one per client) are recorded but not counted.
    targets.append(("triggers accepted per second at 16 clients, each one run", ">= 2,000",
                    f"{x['rps']:.0f}/s ({trig_rec['recorded']} runs for {accepted} accepted, {trig['clients']} in flight at most)",
                    x["rps"] >= 2000 and accepted <= trig_rec["recorded"] <= accepted + trig["clients"]))

prune = find("prune pass")
if prune:
    p = prune["pass"]
    deleted, secs = p["run_events"], p["seconds"]
    out.append("\n## Pruning at full size\n")
    out.append(f"One pass with the default retentions (run events 90 days), run by a second process "
               f"(`flowdeck prune`) as another replica's pruner would: batches of 5,000 rows, each its own "
               f"transaction, each followed by a pause as long as it took. It deleted {deleted:,} run events "
               f"({prune['old_events']:,} were older than 90 days) in {secs:.1f} s: {deleted / max(secs, 1e-9):,.0f} rows/s. "
               f"Meanwhile the list was read at 16 clients while the data changed 50 times a second "
               f"(so most reads go to the database), and just before the pass the same way:\n")
    out.append("| list, data changing 50/s | requests/s | p50 | p99 | max | non-2xx |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    rows = {}
    for when in ["before pruning", "while pruning"]:
        r = find(f"GET /api/pipelines/ (data changing 50/s, {when})")
        if r:
            x = rows[when] = r["result"]
            out.append(f"| {when} | {x['rps']:.0f} | {ms(x['p50_ms'])} | {ms(x['p99_ms'])} | {ms(x['max_ms'])} | {x['non_2xx']} |")
    out.append(f"\nChanges announced during each window: {prune['changes_before']} before, {prune['changes_while']} while "
               f"pruning (the changer aims at 50/s; fewer means its reports waited behind the load).")
    if "while pruning" in rows and secs < rows["while pruning"]["seconds"]:
        out.append(f"\nThe pass ended before the measurement did ({secs:.1f} s of {rows['while pruning']['seconds']:.0f} s).")
    if len(rows) == 2:
        before, during = rows["before pruning"], rows["while pruning"]
        targets.append(("list p99 while a pruning pass runs (16 clients, data changing)", "< 2x without",
                        f"{ms(during['p99_ms'])} (without: {ms(before['p99_ms'])}; {during['non_2xx']} non-2xx)",
                        during["p99_ms"] < 2 * before["p99_ms"] and during["non_2xx"] == 0))
    targets.append(("one pass deletes every run event past its retention", "all", f"{deleted:,} of {prune['old_events']:,}",
                    deleted >= prune["old_events"]))

out.append("\n## Live updates, rendering, memory, download\n")
out.append("```")
out.append(live.strip())
out.append("```")
for line in live.splitlines():
    m = re.search(r"p99=([0-9.]+) ms", line)
    if m and "fan-out" in line.lower():
        targets.append(("SSE fan-out p99, 1,000 subscribers", "< 100 ms", f"{float(m.group(1)):.2f} ms", float(m.group(1)) < 100))
rss = find("server peak RSS")
if rss:
    mib = rss["kib"] / 1024
    targets.append(("server peak RSS under load", "< 100 MB", f"{mib:.0f} MiB", rss["kib"] * 1024 < 100e6))
wasm = find("release wasm")
if wasm:
    out.append(f"\nRelease wasm: {wasm['files']} files, {wasm['raw_bytes']:,} bytes raw, {wasm['brotli_bytes']:,} bytes brotli.\n")
out.append("Initial page load (every file Chromium fetched, as transferred):\n")
out.append("```")
out.append("\n".join(l for l in weight.splitlines() if not l.startswith("  ")))
out.append("```")
out.append("\nThe dashboard's files, largest first:\n")
out.append("```")
listing, lines = False, []
for l in weight.splitlines():
    if not l.startswith("  "):
        listing = l.startswith("/: ")
    elif listing:
        lines.append(l)
out.append("\n".join(lines))
out.append("```")
pages = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(r"^(\S+): (\d+) files, (\d+) bytes", weight, re.M)}
early = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(r"^(\S+): .* (\d+) requests, (\d+) bytes before", weight, re.M)}
if "/" in pages:
    files, size = pages["/"]
    targets.append(("dashboard's first load, compressed as served", "< 150 KB", f"{size:,} bytes in {files} files", size < 150_000))
if "/" in early:
    requests, size = early["/"]
    targets.append(("dashboard: requests before it is interactive", "< 10", f"{requests} ({size:,} bytes)", requests < 10))
if pages:
    largest = max(pages, key=lambda p: pages[p][1])
    targets.append(("largest page's first load, compressed", "< 180 KB", f"{pages[largest][1]:,} bytes (`{largest}`)", pages[largest][1] < 180_000))

out.append("\n## How the costs grow\n")
out.append("Runs grow tenfold each step (a pipeline per hundred runs, five events per run). Each figure is "
           "requests/s with p99 below it, at the client count of its target: reads and triggers at 16, "
           "status reports at 64. The runs a trigger measurement adds are deleted before the next step. "
           "Each step's seeding is vacuumed and checkpointed before it is measured.\n")
growth = [("list", "list"), ("filter", "filter (failed, newest 50)"), ("pipeline", "`GET` pipeline"),
          ("run", "`GET` run"), ("status", "status, `run_id`"), ("seed", "status, seed payload"),
          ("trigger", "triggers")]
out.append("| runs | " + " | ".join(label for _, label in growth) + " |")
out.append("| --- |" + " --- |" * len(growth))
sizes = sorted({int(r["name"].split("@")[1]) for r in results if r["name"].startswith("growth ")})
# What each column must reach (requests/s, p99 ms): the targets of the table below.
growth_targets = {"list": (0, 10), "filter": (0, 10), "pipeline": (6000, 10), "run": (6000, 10),
                  "status": (5000, None), "seed": (5000, None), "trigger": (2000, None)}
growth_misses = []
for size in sizes:
    row = [f"{size:,}"]
    for mode, label in growth:
        r = find(f"growth {mode} @{size}")
        if not r:
            row.append("—")
            continue
        x = r["result"]
        floor, p99 = growth_targets[mode]
        cell = f"{x['rps']:,.0f}/s<br>{ms(x['p99_ms'])}"
        if x["rps"] < floor or (p99 and x["p99_ms"] >= p99):
            cell = f"**{cell}**"
            growth_misses.append((size, mode, label, r))
        row.append(cell)
    out.append("| " + " | ".join(row) + " |")
if growth_misses:
    out.append("\nBelow its target (bold), and why:\n")
for size, mode, label, r in growth_misses:
    x = r["result"]
    pipelines = max(size // 100, 10)
    if mode == "seed" and pipelines < 64:
        why = (f"{pipelines} pipelines: the seed's payload names a pipeline, so the 64 clients report to "
               f"{pipelines} runs, and the reports of one run are applied in order, a group at a time.")
    elif mode in ("status", "seed"):
        steady = find("POST /api/status-update/ (durable)" if mode == "status"
                      else "POST /api/status-update/ (seed payload, durable)")
        here, later = wal_per_request(r), wal_per_request(steady)
        if here and later:
            def images(share):
                return "" if share is None else f" ({share:.0%} full-page images)"
            why = (f"each report wrote {here[0]:,.0f} bytes of WAL{images(here[1])}, against {later[0]:,.0f} bytes"
                   f"{images(later[1])} in the full-size measurement taken later on the same runs")
            busy = r["wal"].get("autovacuums")
            if busy:
                why += f"; {busy} autovacuum worker(s) were writing halfway through it"
            why += (". These are the first writes after the step's seeding was vacuumed and checkpointed; "
                    "what else made them slower was not measured.")
        else:
            why = "the first writes after seeding (the WAL they wrote was not measured: see the table below)."
    elif mode == "trigger":
        why = ("triggers are taken by one writer per replica in groups; each trigger writes nine rows, so its "
               "rate follows the database's share of the two cores.")
    else:
        why = "a read whose p99 follows the machine's noise floor (see `/api/health`)."
    out.append(f"- {label} at {size:,} runs, {x['rps']:,.0f}/s (p99 {ms(x['p99_ms'])}): {why}")

writes = [r for r in results if "wal" in r]
if writes:
    out.append("\n## What the writes cost the database's log\n")
    out.append("Bytes of WAL each accepted write made, and the share of them that were full-page images (pages "
               "changed for the first time since a checkpoint are written whole), from the log positions "
               "before and after each measurement and `pg_waldump --stats` over that span.\n")
    out.append("| measurement | clients | requests/s | WAL per request | full-page images | checkpoints during "
               "| autovacuum workers halfway |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in writes:
        per, fpi = wal_per_request(r)
        share = "—" if fpi is None else f"{fpi:.0%}"
        autovacuums = r["wal"].get("autovacuums")
        out.append(f"| `{r['name']}` | {r['clients']} | {r['result']['rps']:,.0f} | {per:,.0f} B | {share} "
                   f"| {r['wal']['checkpoints']} | {'—' if autovacuums is None else autovacuums} |")

out.append("\n## Where the time goes\n")
cores = os.cpu_count() or 1
body = find("list body")
for name, what in [("GET /api/pipelines/", "list"), ("POST /api/runs/filter (failed, newest 50)", "filter"),
                   ("POST /api/status-update/ (durable)", "status update")]:
    r = find(name, 16) or find(name)
    if r:
        x = r["result"]
        out.append(f"- {what}: {x['rps']:.0f} requests/s at {r['clients']} clients: if they kept all {cores} cores busy "
                   f"(server, PostgreSQL and wrk together; not measured here), one request would cost at most "
                   f"{cores * 1000 / x['rps']:.2f} ms of CPU; a closed-loop client waits "
                   f"{r['clients']} / throughput = {r['clients'] * 1000 / x['rps']:.1f} ms on average.")
if body:
    out.append(f"- the list's first page is {body['bytes']:,} bytes of JSON (100 pipelines, each with its latest "
               "run's stages and its last ten outcomes). Read afresh it takes three statements (the page, its "
               "stages, its outcomes); kept (no change since it was read) it takes none, and neither does the "
               "caller's key once verified (README: kept listings, remembered keys). The row measured while the "
               "data changes 50 times a second shows the cost when most reads are afresh.")
changing = find("GET /api/pipelines/ (data changing 50/s)")
if changing:
    x = changing["result"]
    out.append(f"- list while the data changes: {x['rps']:.0f} requests/s, p99 {ms(x['p99_ms'])} at 16 clients.")
health = find("GET /api/health", 16)
if status and status["result"]["rps"] < 5000:
    out.append("- status reports are below 5,000/s because the two cores are busy, not because of the disk: "
               "reports that arrive together share one commit, and the change triggers already run once per "
               "statement (one insert into `changes` and one NOTIFY per group). Per report the database still "
               "inserts a history row (4 indexes) and an audit row (5 indexes) and rewrites the stage and run "
               "rows with their indexes, and the server parses, authorises and answers it. What would reach "
               "5,000/s: one audit row per group and caller instead of per report, or more cores: PostgreSQL "
               "is the larger share of the CPU, and groups of different runs never wait for each other, so "
               "a larger machine (or replicas on one) scales it.")
if trig and trig["result"]["rps"] < 2000:
    out.append("- triggers are below 2,000/s: a group of triggers is three statements and one commit, but each "
               "trigger still writes nine rows (the run, five stages, an outbox row, its first event, an audit "
               "row) and makes nine foreign-key checks, and one writer per replica takes the groups in turn (a "
               "commit that NOTIFYs holds a database-wide lock through its flush, so a second writer only "
               "halved the groups). What would reach it: stage rows written when a stage first reports rather "
               "than when the run is accepted (five of the nine rows), or more cores.")
if health and health["result"]["p99_ms"] >= 5:
    out.append(f"- p99 figures near 10 ms are the machine's noise floor: `/api/health`, which touches neither the "
               f"database nor a credential, had a p99 of {ms(health['result']['p99_ms'])} in the same run.")
heavy = [p for p in pages if pages[p][1] >= (150_000 if p == "/" else 180_000)]
if heavy:
    # Each heavy page's wasm files as Chromium fetched them, from page-weight.txt.
    files, page = {}, None
    for line in weight.splitlines():
        head = re.match(r"^(\S+): \d+ files", line)
        item = re.match(r"^\s+(\d+)\s+\S+\s+(\S+\.wasm)$", line)
        if head:
            page = head.group(1)
            files[page] = []
        elif item and page:
            files[page].append(f"{item.group(2).removeprefix('/pkg/')} {int(item.group(1)):,} B")
    for p in heavy:
        out.append(f"- `{p}` is over its weight; its wasm: {', '.join(files.get(p, [])) or 'none'}. Pages render "
                   "their data on the server (also when it changes, `ui/regions.rs`) and islands hold only "
                   "controls: an island that renders data or deserializes a struct brings its views and serde "
                   "code into the wasm.")
list16, list64 = find("GET /api/pipelines/", 16), find("GET /api/pipelines/", 64)
if list16 and list64 and list64["result"]["rps"] < list16["result"]["rps"] and body:
    out.append(f"- the uncompressed list at 64 clients ({list64['result']['rps']:.0f}/s) is below 16 clients' "
               f"({list16['result']['rps']:.0f}/s): each answer is {body['bytes']:,} bytes, kept and sent as is, so "
               f"the server copies about {list16['result']['rps'] * body['bytes'] / 1e9:.1f} GB/s through the "
               "loopback to wrk on the same two cores; with 64 connections' buffers in flight, copying is what "
               "grows. The same list compressed (what browsers and most clients ask for) gains with more clients.")

out.append("\n## Targets\n")
out.append("| target | wanted | measured | met |")
out.append("| --- | --- | --- | --- |")
for name, wanted, got, met in targets:
    out.append(f"| {name} | {wanted} | {got} | {'yes' if met else '**no**'} |")
print("\n".join(out))
