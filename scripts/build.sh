#!/usr/bin/env bash
# Release build of the server and the browser bundle (target/site), from local tools only:
# cargo for the server and the wasm, tools/site for the islands' split and the JavaScript
# glue, wasm-opt to shrink the wasm, esbuild to minify the glue and the stylesheet. Skipped
# when nothing it is made from changed since the last build.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
target="${CARGO_TARGET_DIR:-$ROOT/target}"
bin="$target/release/flowdeck"
site="$ROOT/target/site"
stamp="$site/.built-from"
# The name Leptos's hydration script loads the bundle by (/pkg/flowdeck.js, .wasm, .css);
# the server's Leptos reads it at compile time.
export LEPTOS_OUTPUT_NAME=flowdeck
# What the build is made from: the sources as they are in the working tree (tracked,
# changed or new), the lock files and the tools. A build directory shared between checkouts
# may hold another checkout's binary, so the binary itself is part of the stamp too.
inputs() {
  git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 || return 1
  local paths=(app frontend server migrations .sqlx style public tools/site scripts/build.sh Cargo.toml Cargo.lock rust-toolchain.toml)
  { git -C "$ROOT" ls-files -s -- "${paths[@]}"
    git -C "$ROOT" diff HEAD -- "${paths[@]}"
    git -C "$ROOT" ls-files --others --exclude-standard -z -- "${paths[@]}" \
      | (cd "$ROOT" && xargs -0 -r sha256sum)
    wasm-opt --version; esbuild --version; rustc --version; echo "$LEPTOS_OUTPUT_NAME"
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
# The sources as they are now, before building: a file changed during the build makes the
# next build run again rather than pass as built.
sources_at_start="$(inputs 2>/dev/null || true)"
wbg="$(locked_version wasm-bindgen)"
[ "$(locked_version wasm-bindgen-cli-support "$ROOT/tools/site/Cargo.lock")" = "$wbg" ] \
  || die "tools/site must use wasm-bindgen-cli-support $wbg, the wasm-bindgen of Cargo.lock"

say "building the server (cargo build --release)"
cargo build --release -p server --bin flowdeck --no-default-features \
  || die "server build failed"
say "building the site tool (tools/site)"
cargo build --release --manifest-path tools/site/Cargo.toml --target-dir "$target" \
  || die "site tool build failed"
say "building the wasm (cargo build --target wasm32-unknown-unknown --profile wasm-release)"
# The linker keeps its relocations, which the islands' split needs.
RUSTFLAGS="-Clink-args=--emit-relocs" cargo build -p frontend --lib \
  --target wasm32-unknown-unknown --profile wasm-release --no-default-features \
  || die "wasm build failed"

rm -rf "$site/pkg"
mkdir -p "$site/pkg"
cp -R "$ROOT"/public/. "$site/"
mapfile -t wasm < <("$target/release/flowdeck-site" \
  "$target/wasm32-unknown-unknown/wasm-release/frontend.wasm" "$site/pkg" "$LEPTOS_OUTPUT_NAME") \
  || die "splitting and binding the wasm failed"
say "optimising ${#wasm[@]} wasm modules (wasm-opt -Oz)"
# (wasm-opt warns about name subsections it does not know: its output is shown on failure.)
printf '%s\0' "${wasm[@]}" | xargs -0 -P "$(nproc)" -I{} sh -c \
  'out="$(wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int "$1" -o "$1" 2>&1)" \
     || { printf "%s\n" "$out" >&2; exit 1; }' wasm-opt {} \
  || die "wasm-opt failed"
esbuild "$site/pkg/$LEPTOS_OUTPUT_NAME.js" --minify --format=esm --log-level=warning \
  --log-override:duplicate-object-key=silent \
  --allow-overwrite --outfile="$site/pkg/$LEPTOS_OUTPUT_NAME.js" || die "minifying the JavaScript failed"
esbuild "$ROOT/style/main.css" --minify --log-level=warning \
  --target=chrome109,edge109,firefox115,safari15.6 \
  --outfile="$site/pkg/$LEPTOS_OUTPUT_NAME.css" || die "minifying the stylesheet failed"

# Compressed once here (brotli at its best quality, and gzip for the rest), served as is to
# browsers that accept it. Node's zlib does brotli; node is already a build tool here.
for f in "$site"/pkg/*.wasm "$site"/pkg/*.js "$site"/pkg/*.css; do
  if [ -f "$f" ]; then
    gzip -9 -k -f "$f"
    node -e 'const fs = require("fs"), zlib = require("zlib"); const f = process.argv[1];
      fs.writeFileSync(f + ".br", zlib.brotliCompressSync(fs.readFileSync(f), {
        params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: fs.statSync(f).size } }));' "$f"
  fi
done
if [ -n "$sources_at_start" ] && [ -x "$bin" ]; then
  echo "$sources_at_start $(sha256sum <"$bin" | cut -d' ' -f1)" >"$stamp"
else
  rm -f "$stamp"
fi
