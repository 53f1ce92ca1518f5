#!/usr/bin/env bash
# The test command: set-up, lint (ruff), types (mypy --strict on offchain/), a warning-free
# compile of the contracts, the bytecode-size table, static analysis (Slither, gated by slither.triage.toml), the gas
# regression check, then the test suite on a real Anvil.
# The slow tier is opt-in: PMSIM_SLOW=1 scripts/test.sh (or pass pytest args, e.g. -m slow).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
PY=.venv/bin/python
echo "== ruff"; .venv/bin/ruff check offchain tests scripts
echo "== mypy (strict)"; .venv/bin/mypy offchain
echo "== compile (warnings are errors)"
$PY -c "from offchain.chain.build import compile_contracts; a = compile_contracts(strict=True, force=True); print(f'{len(a)} artifacts, no warnings')"
echo "== contract sizes (EIP-170 limit, 2 KB headroom for protocol contracts)"
$PY scripts/size_table.py
echo "== slither (high/medium findings must be fixed or triaged in slither.triage.toml)"
$PY scripts/slither_check.py
if [ "${CI:-}" = "true" ]; then  # a fresh clone: set-up and the compile must have left the tree clean
  echo "== clean tree after set-up"
  dirty=$(git status --porcelain)
  [ -z "$dirty" ] || { echo "set-up or the build changed the tree:"; echo "$dirty"; exit 1; }
fi
markers="not slow"
[ "${PMSIM_SLOW:-0}" = "1" ] && markers=""
echo "== pytest"
exec $PY -m pytest -n 2 -m "$markers" "$@"
