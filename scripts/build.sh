#!/usr/bin/env bash
# Release build of the server and the wasm with cargo-leptos, using local tools only.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
say "building (cargo leptos build --release)"
cargo leptos build --release || die "build failed"
# Compressed once here, served as is (gzip) to browsers that accept it.
for f in "$ROOT"/target/site/pkg/*.wasm "$ROOT"/target/site/pkg/*.js "$ROOT"/target/site/pkg/*.css; do
  if [ -f "$f" ]; then gzip -9 -k -f "$f"; fi
done
