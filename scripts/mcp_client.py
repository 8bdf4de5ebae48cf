#!/usr/bin/env python3
"""End-to-end test of Flowdeck's MCP server (Streamable HTTP at /mcp) with the official MCP
Python SDK (mcp 2.x: `streamable_http_client` over an `httpx2.AsyncClient`, `ClientSession`).

Usage: FLOWDECK_URL=http://127.0.0.1:PORT FLOWDECK_ADMIN_KEY=KEY mcp_client.py
(scripts/mcp-test.sh runs it against a fresh server whose default deployment is etl/demo.)
An admin creates a marketing and a finance pipeline and a key for an agent: operator role,
scoped to the tag `marketing` and to the actions read and trigger, with a budget of 2
triggers an hour. Through MCP the agent must see only the marketing pipeline, run it to
completion, be refused cancel and a third trigger; the audit trail must show its calls.
Exits 1 on the first failed check.
"""
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

BASE = os.environ["FLOWDECK_URL"].rstrip("/")
ADMIN = os.environ["FLOWDECK_ADMIN_KEY"]
TOOLS = {"list_pipelines", "get_pipeline", "trigger_run", "get_run", "wait_for_run",
         "cancel_run", "retry_run", "search_runs"}
PARAMETERS = {"stage_seconds": 0, "rows": 5}  # the demo flow's (flows/etl.py): no pause, few rows


def step(text):
    print(f"  ok: {text}", flush=True)


def rest(method, path, key, body=None):
    """(status, headers, decoded JSON body) of one REST call; an HTTP error is an answer too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, error.headers, json.loads(raw or b"null")
        except ValueError:
            return error.code, error.headers, raw.decode(errors="replace")


def admin(method, path, body=None, expect=(200,)):
    status, _, answer = rest(method, path, ADMIN, body)
    assert status in expect, f"{method} {path} as admin: HTTP {status} (wanted {expect}): {answer}"
    return answer


def text_of(result):
    return " ".join(getattr(block, "text", "") for block in result.content)


async def call(session, name, arguments, **options):
    """A tool call that must succeed: its structured content."""
    try:
        result = await session.call_tool(name, arguments, **options)
    except MCPError as error:
        raise AssertionError(f"{name} {arguments}: JSON-RPC error {error.code}: {error.message}") from error
    assert not result.is_error, f"{name} {arguments} failed: {text_of(result)}"
    content = result.structured_content
    assert isinstance(content, dict), f"{name} {arguments}: no structured content, only {text_of(result)!r}"
    return content


async def refused(session, name, arguments):
    """A tool call that must fail as a tool error (isError, so an agent reads why): its text."""
    try:
        result = await session.call_tool(name, arguments)
    except MCPError as error:
        raise AssertionError(f"{name} {arguments}: answered JSON-RPC error {error.code} ({error.message}),"
                             " not a tool result with isError") from error
    assert result.is_error, f"{name} {arguments} should be refused, answered {result.structured_content}"
    text = text_of(result)
    assert text.strip(), f"{name} {arguments}: refused without saying why"
    return text.lower()


def run_of(content):
    """The run in a tool's answer: `{"run": {...}}`, or the run itself."""
    run = content.get("run", content)
    assert isinstance(run, dict) and "id" in run and "status" in run, f"not a run: {content}"
    return run


def setup():
    """REST, as admin: two pipelines of two teams and the agent's scoped, budgeted key."""
    made = {}
    for team in ("marketing", "finance"):
        made[team] = admin("POST", "/api/pipelines/", {
            "name": f"mcp {team}", "tags": [team], "default_parameters": PARAMETERS}, expect=(201,))
        assert {"id", "slug"} <= made[team].keys(), f"a pipeline without id or slug: {made[team]}"
    step(f"pipelines: marketing {made['marketing']['id']} ({made['marketing']['slug']}), "
         f"finance {made['finance']['id']} ({made['finance']['slug']})")
    key = admin("POST", "/api/api_keys/", {
        "name": "agent", "role": "operator",
        "scope": {"tags": ["marketing"], "actions": ["read", "trigger"]},
        "budget": {"triggers_per_hour": 2}}, expect=(201,))
    assert key.get("secret"), f"the new key has no secret: {key}"
    scope, budget = key.get("scope") or {}, key.get("budget") or {}
    assert scope.get("tags") == ["marketing"] and sorted(scope.get("actions") or []) == ["read", "trigger"], \
        f"the key's scope is not echoed: {scope}"
    assert budget.get("triggers_per_hour") == 2, f"the key's budget is not echoed: {budget}"
    step(f"scoped key 'agent': scope {scope}, budget {budget}")
    return made["marketing"], made["finance"], key["secret"]


async def agent_session(session, market, finance):
    """Everything the agent does through MCP."""
    mslug, fslug = market["slug"], finance["slug"]
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert TOOLS <= tools.keys(), f"tools missing: {sorted(TOOLS - tools.keys())} (listed {sorted(tools)})"
    for tool in tools.values():
        assert tool.input_schema.get("type") == "object", f"{tool.name}: inputSchema is not an object schema"
    trigger_props = tools["trigger_run"].input_schema.get("properties") or {}
    assert {"pipeline", "parameters", "idempotency_key", "dry_run"} <= trigger_props.keys(), \
        f"trigger_run's inputSchema lacks properties: {sorted(trigger_props)}"
    step(f"list_tools: {len(tools)} tools, {', '.join(sorted(TOOLS))} among them")

    listed = (await call(session, "list_pipelines", {})).get("pipelines")
    assert isinstance(listed, list), "list_pipelines: no `pipelines` list"
    assert all({"id", "slug", "tags"} <= p.keys() for p in listed), f"list_pipelines: items lack fields: {listed}"
    ids = {p["id"] for p in listed}
    assert market["id"] in ids, f"list_pipelines: the marketing pipeline is missing ({ids})"
    assert finance["id"] not in ids, "list_pipelines: the finance pipeline is visible out of scope"
    assert all("marketing" in p["tags"] for p in listed), f"list_pipelines: out-of-scope pipelines {listed}"
    step("list_pipelines: only the marketing pipeline")

    text = await refused(session, "get_pipeline", {"pipeline": fslug})
    assert "not found" in text, f"get_pipeline of finance: not 'not found' but {text!r}"
    got = await call(session, "get_pipeline", {"pipeline": mslug})
    assert got.get("pipeline", got).get("id") == market["id"], f"get_pipeline {mslug}: {got}"
    got = await call(session, "get_pipeline", {"pipeline": str(market["id"])})
    assert got.get("pipeline", got).get("id") == market["id"], f"get_pipeline \"{market['id']}\": {got}"
    step("get_pipeline: marketing by slug and by id, finance not found")

    dry = await call(session, "trigger_run", {"pipeline": mslug, "dry_run": True})
    prefect = dry.get("prefect")
    assert dry.get("dry_run") is True and isinstance(prefect, dict), f"dry run: {dry}"
    assert prefect.get("deployment"), f"dry run: no deployment in {prefect}"
    sent = prefect.get("parameters") or {}
    assert all(sent.get(k) == v for k, v in PARAMETERS.items()), f"dry run: parameters {sent}, wanted {PARAMETERS}"
    count = admin("POST", "/api/runs/count", {})
    assert count == 0, f"a dry run created a run: {count} runs"
    step(f"trigger_run dry_run: would send {prefect['deployment']} {sent}; no run made")

    text = await refused(session, "trigger_run", {"pipeline": fslug})
    assert "not found" in text, f"trigger_run of finance: not 'not found' but {text!r}"
    step("trigger_run of the finance pipeline: not found")

    first = run_of(await call(session, "trigger_run", {"pipeline": mslug, "idempotency_key": "mcp-test-1"}))
    again = run_of(await call(session, "trigger_run", {"pipeline": mslug, "idempotency_key": "mcp-test-1"}))
    assert again["id"] == first["id"], f"the same idempotency key made two runs: {first['id']}, {again['id']}"
    step(f"trigger_run: run {first['id']} ({first['status']}), the same again with the same key")

    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    waited = await call(session, "wait_for_run", {"run_id": first["id"], "timeout_seconds": 120},
                        read_timeout_seconds=150, progress_callback=on_progress)
    run = run_of(waited)
    assert waited.get("finished") is True, f"wait_for_run: not finished: {waited}"
    assert run["status"] == "completed", f"wait_for_run: run {run['id']} ended {run['status']}: {run}"
    stages = run.get("stages") or []
    assert stages and all(s["status"] == "completed" for s in stages), f"wait_for_run: stages {stages}"
    assert progress, "wait_for_run sent no progress notification"
    step(f"wait_for_run: completed, {len(stages)} stages, {len(progress)} progress notification(s), "
         f"last {progress[-1]}")

    run = run_of(await call(session, "get_run", {"run_id": first["id"]}))
    assert run["id"] == first["id"] and run["status"] == "completed", f"get_run: {run}"
    assert run.get("stages"), f"get_run: no stages in {run}"
    step("get_run: completed, with its stages")

    text = await refused(session, "cancel_run", {"run_id": first["id"]})
    assert "cancel" in text and any(w in text for w in ("forbidden", "scope", "not allow", "needs")), \
        f"cancel_run: refused, but not for the missing cancel action: {text!r}"
    step(f"cancel_run: refused ({text})")

    second = run_of(await call(session, "trigger_run", {"pipeline": mslug}))
    assert second["id"] != first["id"], "a trigger without a key answered the first run"
    text = await refused(session, "trigger_run", {"pipeline": mslug})
    assert "triggers_per_hour" in text, f"the third trigger: refused, but not for triggers_per_hour: {text!r}"
    step(f"budget: run {second['id']} was the 2nd trigger of the hour, the 3rd refused ({text})")


def rest_as_agent(secret, market, finance):
    status, headers, body = rest("POST", f"/api/pipelines/{market['id']}/runs", secret, {})
    assert status == 429, f"REST trigger over budget: HTTP {status}, wanted 429: {body}"
    assert (headers.get("Retry-After") or "").strip().isdigit(), \
        f"REST 429 without a Retry-After in seconds: {headers.get('Retry-After')!r}"
    assert isinstance(body, dict) and body.get("code") == "over_budget", f"REST 429 body: {body}"
    assert (body.get("budget") or {}).get("name") == "triggers_per_hour", f"REST 429 budget: {body}"
    step(f"REST trigger: 429 over_budget, Retry-After {headers['Retry-After']} s")
    status, _, body = rest("GET", f"/api/pipelines/{finance['id']}", secret)
    assert status == 404, f"REST read of the finance pipeline as the agent: HTTP {status}, wanted 404: {body}"
    step("REST read of the finance pipeline: 404")


def audit():
    events = admin("POST", "/api/audit_events/filter",
                   {"audit_events": {"action": {"like_": "mcp."}}, "limit": 100})
    assert events, "the audit trail has no mcp.* events"
    others = {e["actor"] for e in events} - {"api-key:agent"}
    assert not others, f"mcp.* events by others than api-key:agent: {others}"
    outcomes = {}
    for event in events:
        outcomes.setdefault(event["action"], set()).add(event["outcome"])
    assert "success" in outcomes.get("mcp.trigger_run", set()), f"no successful mcp.trigger_run: {outcomes}"
    cancel = outcomes.get("mcp.cancel_run", set())
    assert cancel and "success" not in cancel, f"mcp.cancel_run should be audited as refused: {outcomes}"
    step("audit: " + ", ".join(f"{a} {'/'.join(sorted(o))}" for a, o in sorted(outcomes.items())))


async def main():
    market, finance, secret = setup()
    timeout = httpx2.Timeout(30, read=300)  # wait_for_run holds its answer for up to 120 s
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=timeout) as http:
        async with streamable_http_client(f"{BASE}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                try:
                    init = await session.initialize()
                except MCPError as error:
                    raise AssertionError(f"initialize at {BASE}/mcp with the agent's key: {error.message} "
                                         f"({error.code}, {error.data})") from error
                step(f"initialize: {init.server_info.name} {init.server_info.version}, "
                     f"protocol {init.protocol_version}")
                await agent_session(session, market, finance)
    rest_as_agent(secret, market, finance)
    audit()


def leaves(error):
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (AssertionError, BaseExceptionGroup) as error:
        failed = [e for e in leaves(error) if isinstance(e, AssertionError)]
        if not failed:
            raise
        for failure in failed:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print("  the MCP server passed", flush=True)
