#!/usr/bin/env bash
# Release build of the server and the wasm with cargo-leptos, using local tools only.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
say "building (cargo leptos build --release)"
cargo leptos build --release || die "build failed"
