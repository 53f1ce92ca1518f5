"""Gas of the protocol's everyday operations on a fresh Anvil, with the real compiled contracts.

    .venv/bin/python scripts/gas_report.py            # table, then one JSON line (operation -> gas)

Each figure is a whole transaction's gasUsed. Attested operations carry attestations signed by the
devnet quorum (2 of 3 risk signers); price posts carry 2 of 3 price signatures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account

from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import connect
from offchain.chain.devnet import bootstrap
from tests.chain.harness import USDC, Harness

DEPLOYER, ALICE, BOB = DEFAULT_KEYS[:3]
GENESIS = 1_767_225_600


def measure() -> dict[str, int]:
    gas: dict[str, int] = {}
    with start_anvil(timestamp=GENESIS) as node:
        dev = bootstrap(connect(node.url), DEPLOYER, rpc_url=node.url)
        h = Harness(dev.protocol, DEPLOYER, dev.risk_signers, dev.price_signers, dev.instruments)
        p = h.p
        alice, bob = Account.from_key(ALICE).address, Account.from_key(BOB).address
        for key in (ALICE, BOB):
            h.fund(key, "USDC", 10**12)
            h.fund(key, "WETH", 10**20)
        gas["deposit_usdc_first"] = h.deposit(ALICE, "USDC", 100_000 * USDC)["gasUsed"]
        gas["deposit_usdc"] = h.deposit(ALICE, "USDC", 1_000 * USDC)["gasUsed"]
        gas["deposit_weth"] = h.deposit(ALICE, "WETH", 10**18)["gasUsed"]
        h.deposit(BOB, "USDC", 100_000 * USDC)
        usdc = p.tokens["USDC"].address
        withdraw = p.vault.functions.withdraw(usdc, 10 * USDC, alice, _empty())
        gas["withdraw_no_positions"] = p.send(withdraw, ALICE)["gasUsed"]
        call = h.ids["BTC-C60K"]
        size, price = 10**18, 1_250 * 10**18
        maker, taker = h.order(ALICE, call, False, 5 * size, price), h.order(BOB, call, True, 5 * size, price)
        gas["trade_option_2_attestations"] = h.trade(ALICE, maker, BOB, taker, size)["gasUsed"]
        gas["trade_option_partial_fill"] = h.trade(ALICE, maker, BOB, taker, size)["gasUsed"]
        perp = h.ids["BTC-PERP"]
        pm, pt = h.order(ALICE, perp, True, size, 55_000 * 10**18), h.order(BOB, perp, False, size, 55_000 * 10**18)
        gas["trade_perp_2_attestations"] = h.trade(ALICE, pm, BOB, pt, size)["gasUsed"]
        gas["withdraw_attested"] = p.send(
            p.vault.functions.withdraw(usdc, 10 * USDC, alice, h.withdraw_proof(alice, usdc, 10 * USDC)), ALICE
        )["gasUsed"]
        h.warp(3600)
        gas["price_post_2_signers"] = h.post_prices((55_100.0, 2_810.0))["gasUsed"]
        gas["funding_update"] = p.send(p.instruments.functions.updateFunding(perp), DEPLOYER)["gasUsed"]
        gas["settle_funding"] = p.send(p.vault.functions.settleFunding(bob, perp), DEPLOYER)["gasUsed"]
        h.warp(7 * 86_400)
        h.post_prices((56_000.0, 2_900.0))
        expiry = p.instruments.functions.get(call).call()[2]
        rnd = h.latest_round()
        gas["fix_settlement"] = p.send(p.instruments.functions.fixSettlement(0, expiry, rnd), DEPLOYER)["gasUsed"]
        gas["settle_expired_option"] = p.send(p.vault.functions.settleExpired(bob, call), DEPLOYER)["gasUsed"]
    return gas


def _empty() -> tuple[tuple[object, ...], bytes]:
    """An empty margin proof (accounts with no positions need none)."""
    zero = b"\x00" * 32
    att = ("0x" + "00" * 20, 0, zero, 0, 0, 0, 0, 0, zero, 0, 0, 0)
    return (att, b"")


def main() -> None:
    gas = measure()
    width = max(map(len, gas))
    for name, used in gas.items():
        print(f"{name:<{width}}  {used:>9,}")
    print(json.dumps(gas))


if __name__ == "__main__":
    main()
