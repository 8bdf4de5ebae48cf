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
DATABASE_URL="$DB_ADMIN_URL" cargo test -p app -p server --no-fail-fast 2>&1 | tee /tmp/flowdeck-cargo-test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || die "cargo test failed"

"$ROOT/scripts/e2e.sh"
