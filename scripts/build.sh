#!/usr/bin/env bash
# Release build of the server and the wasm with cargo-leptos, using local tools only.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
say "building (cargo leptos build --release --split)"
cargo leptos build --release --split || die "build failed"
# Compressed once here (brotli at its best quality, and gzip for the rest), served as is to
# browsers that accept it. Node's zlib does brotli; node is already a build tool here.
for f in "$ROOT"/target/site/pkg/*.wasm "$ROOT"/target/site/pkg/*.js "$ROOT"/target/site/pkg/*.css; do
  if [ -f "$f" ]; then
    gzip -9 -k -f "$f"
    node -e 'const fs = require("fs"), zlib = require("zlib"); const f = process.argv[1];
      fs.writeFileSync(f + ".br", zlib.brotliCompressSync(fs.readFileSync(f), {
        params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: fs.statSync(f).size } }));' "$f"
  fi
done
