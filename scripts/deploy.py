"""ape script: deploy pmsim (mock tokens, the six core contracts, default instruments, a first price
round) to the connected network and write ``deployments/<network>.json``.

    ape run deploy --network ethereum:local:foundry       # ape starts Anvil
    ape run deploy --network http://127.0.0.1:8545        # any RPC (PMSIM_DEPLOYER_KEY for a key)

The deployment itself is ``offchain.chain.devnet.bootstrap``, the same code the CLI and the
tests use, so every path deploys byte-identical contracts. Every owner role ends with a
TimelockController (docs/governance.md): ``PMSIM_TIMELOCK_DELAY`` seconds (default two days),
``PMSIM_ADMIN`` proposes, executes and cancels (default: the deployer), ``PMSIM_GUARDIAN`` pauses and
tightens at once and may cancel (default: the deployer).
"""

from __future__ import annotations

import os
from pathlib import Path


def main() -> None:
    from ape import accounts, networks

    from offchain.chain.client import connect
    from offchain.chain.deploy import TimelockConfig, write_deployment
    from offchain.chain.devnet import bootstrap

    provider = networks.provider
    url = str(getattr(provider, "http_uri", None) or getattr(provider, "uri", ""))
    key = os.environ.get("PMSIM_DEPLOYER_KEY") or str(accounts.test_accounts[0].private_key)
    delay = int(os.environ.get("PMSIM_TIMELOCK_DELAY", str(2 * 86_400)))
    timelock = TimelockConfig(min_delay=delay, admin=os.environ.get("PMSIM_ADMIN") or None)
    dev = bootstrap(connect(url), key, rpc_url=url, guardian=os.environ.get("PMSIM_GUARDIAN") or None,
                    timelock=timelock)  # fmt: skip
    name = "local" if provider.network.name == "local" else provider.network.name
    out = Path(__file__).resolve().parents[1] / "deployments" / f"{name}.json"
    write_deployment(dev.protocol, out)  # and the plain ABIs beside it
    print(f"deployed pmsim to {url} (chain {dev.protocol.chain_id}); addresses in {out}")
    for contract, address in dev.protocol.deployment.contracts.items():
        print(f"  {contract:12s} {address}")
