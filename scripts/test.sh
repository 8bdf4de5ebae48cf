#!/usr/bin/env bash
# `make test`: every test. Unit and integration tests (real PostgreSQL, one fresh database
# per test) and the Playwright end-to-end tests in Debian's Chromium.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/tools.sh" test
"$ROOT/scripts/db.sh"
cd "$ROOT"
"$ROOT/scripts/lint.sh"

say "unit and integration tests"
# sqlx::test creates (and drops) one database per test through this admin connection.
DATABASE_URL="$DB_ADMIN_URL" cargo test -p app -p server --no-fail-fast || die "cargo test failed"

say "contract tests against a real Prefect server and worker"
prefect_dir="$(mktemp -d -t flowdeck-prefect.XXXXXX)"
prefect_port="$(free_port)"
trap '"$ROOT/scripts/prefect.sh" stop "$prefect_dir"' EXIT
"$ROOT/scripts/prefect.sh" start "$prefect_dir" "$prefect_port"
DATABASE_URL="$DB_ADMIN_URL" FLOWDECK_TEST_PREFECT_URL="http://127.0.0.1:$prefect_port/api" \
  FLOWDECK_TEST_PREFECT_OUTPUTS="$prefect_dir/outputs" cargo test -p server --test prefect -- --ignored \
  || { tail -n 30 "$prefect_dir/worker.log"; die "Prefect contract tests failed"; }

"$ROOT/scripts/e2e.sh"
"$ROOT/scripts/e2e-prefect.sh" "$prefect_dir" "$prefect_port"

say "the REST API: README examples and schemathesis against the live server"
"$ROOT/scripts/api-check.sh"

say "fault test: Flowdeck killed mid-submission while Prefect hangs"
"$ROOT/scripts/crash-test.sh" "$prefect_dir" "$prefect_port"

say "clients: Python, TypeScript and Rust clients generated from the live document"
"$ROOT/scripts/clients-test.sh"

say "the flowdeck CLI as a CI job uses it, against the real Prefect demo flow"
"$ROOT/scripts/cli-test.sh" "$prefect_dir" "$prefect_port"

say "MCP: a real MCP client (the Python SDK) drives /mcp with scoped keys"
"$ROOT/scripts/mcp-test.sh" "$prefect_dir" "$prefect_port"

say "webhooks: a receiver verifies every delivery with the Standard Webhooks reference library"
"$ROOT/scripts/webhook-test.sh" "$prefect_dir" "$prefect_port"

say "fault tests: PostgreSQL restart and two replicas with Prefect hung, under load"
"$ROOT/scripts/fault-test.sh" "$prefect_dir" "$prefect_port"
