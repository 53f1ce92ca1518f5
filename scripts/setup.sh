#!/usr/bin/env bash
# Idempotent set-up from the package registries only (npm, PyPI; Debian for Chromium): Anvil, solc-js
# and OpenZeppelin from npm; a `solc` command for py-solc-x and ape-solidity (a native solc 0.8.37 if one is
# installed, else a shim over solc-js); a Python 3.11 virtual environment with the locked set; and
# Slither (static analysis, run by scripts/test.sh) in a virtualenv of its own, .venv-slither.
# Re-running is cheap: each step is skipped while its inputs are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SOLC_VERSION=0.8.37
say() { printf '[setup] %s\n' "$*" >&2; }
fingerprint() { cat "$@" | sha256sum | cut -c1-16; }

# 1. npm packages (exact pins in package.json and package-lock.json). `npm ci` installs exactly the
# lock and never rewrites it, so set-up leaves a clone's tree clean (`npm install` used to add the
# optional per-platform entries of anvil and cast to the lock). After changing package.json, run
# `npm install` once and commit the lock it writes.
command -v npm >/dev/null || { say "npm is required (Node.js 18+)"; exit 1; }
want=$(fingerprint package.json package-lock.json)
if [ "$(cat node_modules/.pmsim-stamp 2>/dev/null)" != "$want" ]; then
  say "installing npm packages (anvil, cast, solc-js, openzeppelin)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > node_modules/.pmsim-stamp
fi

# PMSIM_SETUP_SKIP="home-link python slither" skips the ~/.solcx link and steps 3 and 4 (the
# fresh-clone test does: it checks npm, the compiler and the build in a throw-away clone, reusing
# this checkout's interpreter and leaving the home folder alone).
skip() { case " ${PMSIM_SETUP_SKIP:-} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# 2. the compiler command, where py-solc-x and ape-solidity look for it
mkdir -p .solcx
target=".solcx/solc-v$SOLC_VERSION"
native=$(command -v solc || true)
if [ -n "$native" ] && "$native" --version 2>/dev/null | grep -q "$SOLC_VERSION+" \
   && ! "$native" --version | grep -q Emscripten; then
  ln -sf "$native" "$target"
else
  printf '#!/bin/sh\nexec node "%s/scripts/solc.js" "$@"\n' "$ROOT" > "$target.tmp"
  chmod +x "$target.tmp" && mv "$target.tmp" "$target"
fi
# ape-solidity only looks in $SOLCX_BINARY_PATH or ~/.solcx: offer ours there unless one exists.
mkdir -p "$HOME/.solcx"
# A real compiler someone installed there is kept; a link (ours, perhaps left dangling by a deleted
# clone) is pointed at this checkout.
link="$HOME/.solcx/solc-v$SOLC_VERSION"
if ! skip home-link && { [ -L "$link" ] || [ ! -e "$link" ]; }; then ln -sfn "$ROOT/$target" "$link"; fi
# 2b. headless Chromium for the report test (tests/sim/test_report.py loads the simulator's HTML
# report in it): the Debian packages, installed with apt-get only when missing (never a test tool's
# own browser download). Needs root (or sudo) the first time; skipped with PMSIM_SETUP_SKIP=chromium.
if ! skip chromium && ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    say "installing chromium and chromium-driver (Debian packages, for the report test)"
    $SUDO apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
  else
    say "chromium is missing and apt-get is not available: install Chromium for tests/sim/test_report.py"
  fi
fi
skip python && exit 0

# 3. Python 3.11 virtual environment with the locked dependency set
PY=${PMSIM_PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { say "Python 3.11 is required (set PMSIM_PYTHON)"; exit 1; }
[ -x .venv/bin/python ] || { say "creating .venv"; "$PY" -m venv .venv; }
want=$(fingerprint requirements.lock pyproject.toml)
if [ "$(cat .venv/.pmsim-stamp 2>/dev/null)" != "$want" ]; then
  say "installing Python packages (about a minute the first time)"
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -r requirements.lock >&2
  .venv/bin/python -m pip install -q --no-deps -e . >&2
  echo "$want" > .venv/.pmsim-stamp
fi

skip slither && exit 0

# 4. Slither in its own virtualenv (its web3 and eth-* pins clash with ape's), locked set
want=$(fingerprint requirements-slither.lock)
if [ "$(cat .venv-slither/.pmsim-stamp 2>/dev/null)" != "$want" ]; then
  say "installing slither-analyzer into .venv-slither (about 30 s the first time)"
  [ -x .venv-slither/bin/python ] || "$PY" -m venv .venv-slither
  .venv-slither/bin/python -m pip install -q -r requirements-slither.lock >&2
  echo "$want" > .venv-slither/.pmsim-stamp
fi
