#!/usr/bin/env bash
# Installs what the perf peers need, from the npm registry, PyPI and Debian only:
#   perf/peers/node_modules   bun and ws, pinned in package.json / package-lock.json (npm ci)
#   perf/peers/.venv          socketify and websockets, pinned in requirements.txt
#   Debian packages           libuv1 (socketify's native library needs libuv.so.1) and
#                             nats-server, each only if missing
# Idempotent: a second run checks, finds everything in place and prints nothing.
# Usage: perf/peers/install.sh        then: perf/peers/.venv/bin/python perf/peers/smoke.py
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

say() { echo "install.sh: $*"; }
# run a command with its output in $LOG; show the output only if it fails
quietly() {
  if ! "$@" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    say "failed: $*" >&2
    exit 1
  fi
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
  say "apt-get install $*"
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$LOG" 2>&1; then
    quietly $SUDO apt-get update -q
    quietly $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
  fi
}

# --- Debian packages -------------------------------------------------------------------------
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  apt_install nats-server
fi
case "$(/sbin/ldconfig -p 2>/dev/null)" in
  *"libuv.so.1 "*) ;;
  *) apt_install libuv1 ;;
esac

# --- npm: bun and ws --------------------------------------------------------------------------
npm_stamp="$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)"
bun_want="$(sed -n 's/.*"bun": *"\([0-9][^"]*\)".*/\1/p' package.json)"
if [ "$(cat node_modules/.tickwire-stamp 2>/dev/null)" != "$npm_stamp" ] \
   || [ "$(node_modules/.bin/bun --version 2>/dev/null)" != "$bun_want" ] \
   || [ ! -f node_modules/ws/package.json ]; then
  if [ -f package-lock.json ]; then
    say "npm ci (bun $bun_want, ws)"
    quietly npm ci --no-audit --no-fund --loglevel=error
  else
    say "npm install (bun $bun_want, ws)"
    quietly npm install --no-audit --no-fund --loglevel=error
  fi
  if [ "$(node_modules/.bin/bun --version 2>/dev/null)" != "$bun_want" ]; then
    # bun's postinstall links its platform binary into place; run it if npm skipped it
    quietly node node_modules/bun/install.js
  fi
  got="$(node_modules/.bin/bun --version 2>/dev/null || true)"
  [ "$got" = "$bun_want" ] || { say "bun binary not working (got '$got', want $bun_want)" >&2; exit 1; }
  cat package.json package-lock.json | sha256sum | cut -d' ' -f1 > node_modules/.tickwire-stamp
fi

# --- PyPI: socketify and websockets in .venv ----------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  PY="${PYTHON:-python3}"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { say "$PY is older than 3.10 (websockets needs 3.10+); set PYTHON=" >&2; exit 1; }
  say "python venv at perf/peers/.venv ($("$PY" --version 2>&1))"
  if ! "$PY" -m venv .venv >"$LOG" 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    quietly "$PY" -m venv .venv
  fi
fi
pins_ok() {
  .venv/bin/python - requirements.txt <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}
if ! pins_ok; then
  say "pip install -r requirements.txt ($(grep -v '^#' requirements.txt | tr '\n' ' '))"
  quietly .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
fi
quietly .venv/bin/python -c 'import socketify, websockets'
