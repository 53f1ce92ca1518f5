"""The Vault-side rules of issue 8 in ``offchain.rules`` and the engine's checks built on them (F-6 feed
age, F-7 portfolio-level reduce, F-10 amounts, withdraw all); the contracts are checked against the same
functions on Anvil in ``tests/chain/test_vault_hardening.py``."""

from __future__ import annotations

import pytest

from offchain import rules
from offchain.chain.build import merge_abi
from offchain.chain.indexer import AccountState, ProtocolState
from offchain.engine.checks import FeedStaleError, ProtocolPausedError, check_feed, check_risk, check_withdraw
from offchain.errors import InputError

QUOTE = "0x" + "11" * 20


def test_F6_feed_fresh_until_its_deadline_inclusive() -> None:
    """``RiskOracle._checkPriceRound``: stale only once ``now > feedFreshUntil``."""
    assert rules.feed_fresh(1_000, 999) and rules.feed_fresh(1_000, 1_000)
    assert not rules.feed_fresh(1_000, 1_001) and not rules.feed_fresh(0, 1)


def test_F6_engine_refuses_a_stale_feed_naming_it() -> None:
    state = ProtocolState(quote=QUOTE, block=1, timestamp=5_000, feed_fresh_until=4_999)
    with pytest.raises(FeedStaleError, match="price feed is stale"):
        check_feed(state)
    check_feed(ProtocolState(quote=QUOTE, block=1, timestamp=5_000, feed_fresh_until=5_000))


def test_F7_only_a_lower_portfolio_im_is_a_reduction() -> None:
    """The flag is strict: an unchanged IM is not a reduction; paused or frozen, only flagged sides pass."""
    assert rules.reduces_im(100, 99) and not rules.reduces_im(100, 100) and not rules.reduces_im(100, 101)
    paused = ProtocolState(quote=QUOTE, block=1, paused=True)
    check_risk(paused, "0xA", lowers_im=True)
    with pytest.raises(ProtocolPausedError, match="paused"):
        check_risk(paused, "0xA", lowers_im=False)
    frozen = ProtocolState(quote=QUOTE, block=1, accounts={"0xA": AccountState(frozen=True)})
    with pytest.raises(ProtocolPausedError, match="auction"):
        check_risk(frozen, "0xA", lowers_im=False)
    check_risk(frozen, "0xB", lowers_im=False)


def test_F10_amounts_are_bounded_and_named() -> None:
    assert rules.MAX_AMOUNT == 2**128 - 1 and rules.WITHDRAW_ALL == 2**256 - 1
    assert rules.check_amount(1) and rules.check_amount(rules.MAX_AMOUNT)
    assert not rules.check_amount(0) and not rules.check_amount(2**255)
    state = ProtocolState(quote=QUOTE, block=1, accounts={"0xA": AccountState(cash=10)})
    with pytest.raises(InputError) as info:
        check_withdraw(state, "0xA", QUOTE, 2**255)
    assert info.value.field == "amount"


def test_withdraw_all_takes_the_cash_after_funding() -> None:
    """``Vault._wholeBalance``: payments (+ = owes) come off first; never below zero."""
    assert rules.whole_quote_balance(1_000, [30, -5]) == 975
    assert rules.whole_quote_balance(10, [30]) == 0
    assert rules.whole_quote_balance(10, []) == 10


def test_module_abi_is_merged_once() -> None:
    """The Vault's ABI lists its module's functions, events and errors once, never the constructor."""
    host = [{"type": "function", "name": "f", "inputs": []}, {"type": "constructor", "inputs": []}]
    module = [{"type": "function", "name": "f", "inputs": []}, {"type": "function", "name": "g", "inputs": []},
              {"type": "event", "name": "E", "inputs": []}, {"type": "constructor", "inputs": []}]  # fmt: skip
    merged = merge_abi(host, module)
    assert [(i["type"], i.get("name")) for i in merged] == [("function", "f"), ("constructor", None),
                                                             ("function", "g"), ("event", "E")]  # fmt: skip
