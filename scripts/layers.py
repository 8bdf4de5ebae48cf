#!/usr/bin/env python3
"""Checks that the app crate's top-level modules depend on each other one way.

Reads every `crate::<module>` path in app/src (tests left out) and fails when
  - a foundation uses a capability or the composition root,
  - a capability uses the composition root,
  - or any modules use each other in a cycle.
With --graph it prints who uses whom. Part of `make lint`; ARCHITECTURE.md names the layers.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "app", "src")
FOUNDATIONS = {
    "error", "status", "shutdown", "client_addr", "db_roles", "telemetry", "filter",
    "api", "ui", "prefect", "caller",
}
CAPABILITIES = {
    "auth", "layout", "events", "audit", "api_keys", "runs", "pipelines", "retention", "mcp",
    "webhooks",
}
COMPOSITION = {"routes", "lib"}


def without_tests(source):
    """`source` without its `#[cfg(test)] mod tests { ... }` blocks and line comments."""
    while (start := source.find("#[cfg(test)]\nmod tests")) >= 0:
        depth = 0
        for end in range(source.index("{", start), len(source)):
            depth += {"{": 1, "}": -1}.get(source[end], 0)
            if depth == 0:
                break
        source = source[:start] + source[end + 1:]
    return re.sub(r"//[^\n]*", "", source)


def graph():
    """{module: {used module: [files]}}; `lib` is lib.rs (the page routes, `App`)."""
    uses = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, ROOT)
            module = relative.split(os.sep)[0].removesuffix(".rs")
            source = without_tests(open(path, encoding="utf-8").read())
            used = set(re.findall(r"crate::(\w+)", source))
            for group in re.findall(r"crate::\{([^}]*)\}", source, re.S):
                used |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
            used = {"lib" if u == "App" else u for u in used} - {module, "self"}
            for target in used:
                uses.setdefault(module, {}).setdefault(target, []).append(relative)
            uses.setdefault(module, {})
    return uses


def cycles(uses):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in uses.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(uses):
        if v not in index:
            visit(v)
    return found


def main():
    uses = graph()
    problems = []
    for module, targets in sorted(uses.items()):
        if module not in FOUNDATIONS | CAPABILITIES | COMPOSITION:
            problems.append(f"{module}: not in a layer; add it to scripts/layers.py and ARCHITECTURE.md")
        for target, files in sorted(targets.items()):
            upward = (module in FOUNDATIONS and target in CAPABILITIES | COMPOSITION) or (
                module in CAPABILITIES and target in COMPOSITION
            )
            if upward:
                problems.append(f"{module} -> {target} goes up a layer ({', '.join(sorted(set(files)))})")
    for component in cycles(uses):
        problems.append(f"a cycle: {', '.join(component)}")
    if "--graph" in sys.argv:
        for module, targets in sorted(uses.items()):
            print(f"{module} -> {', '.join(sorted(targets))}")
    for problem in problems:
        print(f"layers: {problem}", file=sys.stderr)
    print(f"layers: {len(uses)} top-level modules, {len(cycles(uses))} cycles, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
