"""Bytecode-size table: every deployable contract's runtime size against EIP-170's 24,576-byte limit.

Prints contract, bytes and headroom; exits 1 if any contract exceeds the limit, or if a protocol
contract (not under ``contracts/mocks/``) keeps less than 2 KB of headroom. Last line: JSON.

    .venv/bin/python scripts/size_table.py
"""

from __future__ import annotations

import json
import sys

from offchain.chain.build import load_artifacts

LIMIT = 24_576  # EIP-170
HEADROOM = 2_048  # what every protocol contract keeps spare, so features can still land


def main() -> int:
    rows = []
    for name, art in sorted(load_artifacts().items()):
        size = (len(art.deployed_bytecode) - 2) // 2
        if size == 0 or "/interfaces/" in art.source:
            continue
        mock = "/mocks/" in art.source
        rows.append((name, size, LIMIT - size, mock))
    rows = [r for r in rows if r[1] > 200 or r[0] in ("VaultLens",)]  # libraries are inlined
    print(f"{'contract':<18}{'bytes':>8}{'headroom':>10}  note")
    failed = []
    for name, size, room, mock in sorted(rows, key=lambda r: -r[1]):
        note = "mock (limit only)" if mock else ""
        bad = size > LIMIT or (not mock and room < HEADROOM)
        if bad:
            failed.append(name)
            note = (note + " " if note else "") + "FAILS"
        print(f"{name:<18}{size:>8,}{room:>10,}  {note}")
    if failed:
        print(f"over the limit or under {HEADROOM:,} bytes of headroom: {', '.join(failed)}", file=sys.stderr)
    print(json.dumps({name: size for name, size, _, _ in rows}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
