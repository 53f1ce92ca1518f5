"""End-to-end smoke: deposit, an attested option trade, balances."""

from __future__ import annotations

from offchain.chain.units import value
from tests.chain.conftest import ALICE, BOB, addr
from tests.chain.harness import USDC, Harness


def test_attested_option_trade_moves_premium_and_fees(h: Harness) -> None:
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    call = h.ids["BTC-C60K"]
    size, price = 2 * 10**18, 1_250 * 10**18
    maker = h.order(ALICE, call, False, size, price)  # Alice writes calls
    taker = h.order(BOB, call, True, size, price + 10**18)
    h.trade(ALICE, maker, BOB, taker, size)
    maker_fee, taker_fee = h.fees(size, price)
    premium = value(size, price)
    vault = h.p.vault.functions
    assert vault.cashOf(addr(ALICE)).call() == 100_000 * USDC + premium - maker_fee
    assert vault.cashOf(addr(BOB)).call() == 100_000 * USDC - premium - taker_fee
    assert h.p.lens.functions.getAccount(addr(BOB)).call()[5] == [(call, size, 0, 0)]
    assert vault.riskNonce(addr(ALICE)).call() == 1
