#!/usr/bin/env bash
# Clients generated from the live OpenAPI document, as their users make them: Python
# (openapi-python-client), TypeScript (openapi-typescript with openapi-fetch) and Rust
# (progenitor, from the document's 3.0 form). Each generator must take every operation
# without a warning; the Python and TypeScript programs in end2end/clients then use their
# client against a fresh server, and the Rust client is compiled. Nothing generated is
# committed: a change to the document that breaks a client fails here.
# Needs the release build (scripts/build.sh) and the generators (scripts/tools.sh test).
source "$(dirname "$0")/lib.sh"
PYGEN="$TOOLS_DIR/openapi-python-client-$OPENAPI_PYTHON_CLIENT_VERSION"
[ -x "$PYGEN/bin/openapi-python-client" ] && [ -x "$PROGENITOR" ] || die "the generators are missing: run scripts/tools.sh test"
serve_fresh flowdeck_clients
work="$(mktemp -d -t flowdeck-clients.XXXXXX)"
ts="$ROOT/end2end/clients/typescript"
trap 'serve_fresh_cleanup; [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"; rm -rf "$ts/flowdeck.d.ts" "$ts/build"' EXIT
curl -fsS "$url/api/openapi.json" -o "$work/openapi.json"
curl -fsS "$url/api/openapi-3.0.json" -o "$work/openapi-3.0.json"
operations="$(python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
print(sum(1 for item in doc["paths"].values() for m in item if m in ("get", "post", "put", "patch", "delete")))
' "$work/openapi.json")"
# no_warnings NAME LOG: a generator's output must hold no warning.
no_warnings() {
  if grep -qiE 'warn|unable|could not|skipp|unsupported' "$2"; then
    cat "$2"; die "$1 warned on the document"
  fi
}

say "openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION: $operations operations"
PATH="$PYGEN/bin:$PATH" openapi-python-client generate --path "$work/openapi.json" --meta none \
  --output-path "$work/python/flowdeck_client" --fail-on-warning >"$work/python.log" 2>&1 \
  || { cat "$work/python.log"; die "openapi-python-client failed on the document"; }
no_warnings openapi-python-client "$work/python.log"
generated="$(find "$work/python/flowdeck_client/api" -name '*.py' ! -name '__init__.py' | wc -l)"
[ "$generated" = "$operations" ] || die "openapi-python-client generated $generated of $operations operations"
FLOWDECK_URL="$url" FLOWDECK_API_KEY="$key" "$PYGEN/bin/python" "$ROOT/end2end/clients/python/use_client.py" "$work/python" \
  || die "the generated Python client did not work"

say "openapi-typescript and openapi-fetch"
cd "$ROOT/end2end"
npx openapi-typescript "$work/openapi.json" -o "$ts/flowdeck.d.ts" >"$work/typescript.log" 2>&1 \
  || { cat "$work/typescript.log"; die "openapi-typescript failed on the document"; }
no_warnings openapi-typescript "$work/typescript.log"
generated="$(grep -cE '^        (get|post|put|patch|delete): operations\[' "$ts/flowdeck.d.ts" || true)"
[ "$generated" = "$operations" ] || die "openapi-typescript typed $generated of $operations operations"
npx tsc -p "$ts/tsconfig.json" || die "the TypeScript program does not type-check against the generated client"
FLOWDECK_URL="$url" FLOWDECK_API_KEY="$key" node "$ts/build/use-client.js" || die "the generated TypeScript client did not work"

say "progenitor $PROGENITOR_VERSION (OpenAPI 3.0 form)"
"$PROGENITOR" progenitor --input "$work/openapi-3.0.json" --output "$work/rust" --name flowdeck-client \
  --version 0.1.0 >"$work/rust.log" 2>&1 || { cat "$work/rust.log"; die "progenitor failed on the document"; }
# It prints its type space (lines of a number and a type) as it goes; anything else is said.
grep -v -E '^ *[0-9]+ |^-+$|TYPE SPACE|^$' "$work/rust.log" >"$work/rust-said.log" || true
no_warnings progenitor "$work/rust-said.log"
generated="$(grep -c 'Sends a `' "$work/rust/src/lib.rs" || true)"
[ "$generated" = "$operations" ] || die "progenitor generated $generated of $operations operations"
# Compiled in the shared build directory, against the registry the project's own crates use.
(cd "$work/rust" && cargo check --quiet) || die "the generated Rust client does not compile"
say "clients: $operations operations in Python, TypeScript and Rust"
