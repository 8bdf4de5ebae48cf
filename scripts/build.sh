#!/usr/bin/env bash
# Release build of the server and the wasm with cargo-leptos, using local tools only.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/flowdeck"
stamp="$ROOT/target/site/.built-from"
# What the build is made from: the sources as they are in the working tree (tracked,
# changed or new), the lock file and the tools. A build directory shared between checkouts
# may hold another checkout's binary, so the binary itself is part of the stamp too.
inputs() {
  git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 || return 1
  local paths=(app frontend server style public Cargo.toml Cargo.lock rust-toolchain.toml)
  { git -C "$ROOT" ls-files -s -- "${paths[@]}"
    git -C "$ROOT" diff HEAD -- "${paths[@]}"
    git -C "$ROOT" ls-files --others --exclude-standard -z -- "${paths[@]}" \
      | (cd "$ROOT" && xargs -0 -r sha256sum)
    cargo leptos --version; rustc --version
  } | sha256sum | cut -d' ' -f1
}
built_from() {
  local sources
  sources="$(inputs)" && [ -x "$bin" ] || return 1
  echo "$sources $(sha256sum <"$bin" | cut -d' ' -f1)"
}
if [ -f "$stamp" ] && [ "$(built_from 2>/dev/null)" = "$(cat "$stamp")" ]; then
  say "the release build is current (nothing changed since it was made)"
  exit 0
fi
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
built_from >"$stamp" 2>/dev/null || rm -f "$stamp"
