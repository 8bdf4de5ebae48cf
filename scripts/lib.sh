# Shared helpers for Flowdeck's scripts. Sourced, not run.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools installed for this project outside the clone, so fresh clones reuse them.
TOOLS_DIR="${FLOWDECK_TOOLS_DIR:-$HOME/.cache/flowdeck-tools}"
export PATH="$HOME/.cargo/bin:$TOOLS_DIR/node_modules/.bin:$PATH"
# Builds never need a database: queries are checked against the committed .sqlx data.
export SQLX_OFFLINE=true
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export DB_ADMIN_URL="${DB_ADMIN_URL:-postgres://$PGUSER@$PGHOST:$PGPORT/postgres}"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Runs apt-get as root, or explains what to install when that is not possible.
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    die "missing $*; install it with: sudo apt-get install -y $*"
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null || die "apt-get update failed; cannot install $*"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# The version of a crate pinned in Cargo.lock.
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}
