#!/usr/bin/env bash
# Formatting and clippy gates: the server build and the wasm build are linted separately,
# because a workspace-wide build merges `ssr` and `hydrate` into one that never ships.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
say "module layers (scripts/layers.py)"
python3 scripts/layers.py || die "a module depends on one above it or in a cycle: see ARCHITECTURE.md"
say "cargo fmt --check"
cargo fmt --all --check || die "code is not formatted: run 'make fmt'"
say "clippy (server, all targets)"
cargo clippy -p server --all-targets --quiet -- -D warnings || die "clippy found problems in the server build"
say "clippy (frontend, wasm32)"
cargo clippy -p frontend --target wasm32-unknown-unknown --quiet -- -D warnings \
  || die "clippy found problems in the wasm build"
