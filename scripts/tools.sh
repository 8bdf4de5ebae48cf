#!/usr/bin/env bash
# Installs what building and testing Flowdeck needs, skipping whatever is already there.
# Usage: scripts/tools.sh [build|test|bench]  (bench: the browser and Playwright, for the page weight)
source "$(dirname "$0")/lib.sh"
want="${1:-build}"

# Prebuilt from npm, into TOOLS_DIR: nothing to compile. (The islands' split and the
# wasm-bindgen glue are made by tools/site, which scripts/build.sh compiles with the project.)
BINARYEN_VERSION=132.0.0      # wasm-opt; Debian's wasm-opt 108 builds a wasm that never hydrates
ESBUILD_VERSION=0.28.2        # minifies the JavaScript glue and the stylesheet

command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
command -v cc >/dev/null || apt_install gcc libc6-dev
command -v pkg-config >/dev/null || apt_install pkg-config

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown || die "rustup could not add the wasm32 target"
fi

command -v npm >/dev/null || apt_install nodejs npm
if [ "$("$TOOLS_DIR/node_modules/.bin/wasm-opt" --version 2>/dev/null | awk '{print $3}')" != "${BINARYEN_VERSION%%.*}" ] \
   || [ "$("$TOOLS_DIR/node_modules/.bin/esbuild" --version 2>/dev/null)" != "$ESBUILD_VERSION" ]; then
  say "installing wasm-opt (binaryen@$BINARYEN_VERSION) and esbuild@$ESBUILD_VERSION from npm into $TOOLS_DIR"
  mkdir -p "$TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --silent \
    "binaryen@$BINARYEN_VERSION" "esbuild@$ESBUILD_VERSION" || die "npm install of the build tools failed"
fi

# python_tool PACKAGE VERSION MODULE: a virtualenv $TOOLS_DIR/PACKAGE-VERSION holding
# PACKAGE==VERSION from PyPI, made unless MODULE already imports there.
python_tool() {
  local dir="$TOOLS_DIR/$1-$2"
  if ! "$dir/bin/python" -c "import $3" >/dev/null 2>&1; then
    say "installing $1 $2 into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir" && "$dir/bin/pip" install -q "$1==$2" || die "pip install $1==$2 failed"
  fi
}
if [ "$want" = test ]; then
  # The contract fuzzer, the official MCP client, the Standard Webhooks reference library.
  python_tool schemathesis "$SCHEMATHESIS_VERSION" schemathesis
  python_tool mcp "$MCP_VERSION" mcp.client.streamable_http
  python_tool standardwebhooks "$STANDARDWEBHOOKS_VERSION" standardwebhooks
  # The client generators scripts/clients-test.sh runs on the live document: Python's here,
  # TypeScript's from end2end's npm packages, and Rust's, progenitor, compiled once into
  # TOOLS_DIR.
  python_tool openapi-python-client "$OPENAPI_PYTHON_CLIENT_VERSION" openapi_python_client
  if [ ! -x "$PROGENITOR" ]; then
    say "installing cargo-progenitor $PROGENITOR_VERSION into $TOOLS_DIR (compiles, once)"
    cargo install --quiet --locked --root "$TOOLS_DIR/progenitor-$PROGENITOR_VERSION" \
      cargo-progenitor --version "$PROGENITOR_VERSION" || die "cargo install cargo-progenitor failed"
  fi
fi

if [ "$want" = test ] || [ "$want" = bench ]; then
  command -v chromium >/dev/null || { say "installing Debian's chromium"; apt_install chromium; }
  if [ ! -d "$ROOT/end2end/node_modules/@playwright/test" ] \
     || [ "$ROOT/end2end/package-lock.json" -nt "$ROOT/end2end/node_modules/.package-lock.json" ]; then
    say "installing Playwright (no browser download: Debian's chromium is used)"
    (cd "$ROOT/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent) \
      || die "npm ci in end2end failed"
  fi
fi
