"""The engine's liquidation routes on Anvil: ``GET /liquidatable`` lists exactly the accounts
``Liquidator.start`` accepts (credit-aware), and ``POST /attest/bid`` signs a bidder attestation the
Liquidator accepts, with the engine's own margin figures, and refuses (naming the field) what the
contract would refuse.

Real chain, real contracts, real signatures: positions are opened with the suite's permissive trade
attestations, then the engine computes every status result itself after a price crash.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from offchain import rules
from offchain.chain.anvil import DEFAULT_KEYS
from offchain.chain.indexer import Indexer
from offchain.engine.core import EngineCore
from offchain.engine.http import serve_signer
from offchain.engine.liquidation import auction_params, fetch_auction
from offchain.engine.service import Engine
from offchain.engine.signer import RemoteSigner, SignerNode
from offchain.errors import ContractRevertError
from offchain.keeper.attest import HttpAttestor
from offchain.protocol import WAD
from offchain.risk.config import load_config
from tests.chain.conftest import ALICE, BOB, CAROL, addr
from tests.chain.harness import USDC, Harness
from tests.chain.test_engine import http, proof_of

pytestmark = pytest.mark.chain
U = 10**18
BTC = 55_000 * 10**18
DAVE, ERIN = DEFAULT_KEYS[5], DEFAULT_KEYS[6]


def leveraged_book(h: Harness) -> dict[str, str]:
    """Bob (deep pockets) sells BTC perps to three longs of rising leverage and one safe long; Carol
    is a funded bidder with no positions."""
    h.fund(DAVE, "USDC", 10**6 * USDC)
    h.fund(ERIN, "USDC", 10**6 * USDC)
    h.deposit(BOB, "USDC", 500_000 * USDC)
    h.deposit(CAROL, "USDC", 500_000 * USDC)
    longs = {"alice": (ALICE, 26_000), "dave": (DAVE, 24_000), "erin": (ERIN, 100_000)}
    for key, margin in longs.values():
        h.deposit(key, "USDC", margin * USDC)
        h.fill(BOB, key, h.ids["BTC-PERP"], 2 * U, BTC, maker_buys=False)
    return {name: addr(key) for name, (key, _) in longs.items()}


def crash(h: Harness, factor: float) -> None:
    """BTC moves by ``factor``; the feed needs every signer for a big move."""
    prices = h.latest_prices()
    btc = int(prices[0] * factor) // 10**15 * 10**15
    h.post_raw((btc, prices[1]), signers=h.price_signers)


def leaf_tuple(entry: dict[str, Any]) -> tuple[Any, ...]:
    leaf = entry["leaf"]
    return (leaf[0], *(int(x) for x in leaf[1:]))


def proof_bytes(entry: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(p[2:]) for p in entry["proof"]]


def start_call(h: Harness, account: str, leaf: tuple[Any, ...], proof: list[bytes]) -> Any:
    return h.p.liquidator.functions.start(account, leaf, proof)


def accepted(h: Harness, account: str, leaf: tuple[Any, ...], proof: list[bytes]) -> str | None:
    """None if ``Liquidator.start`` accepts the proof now (as a call), else the error's name."""
    try:
        h.p.call(start_call(h, account, leaf, proof), sender=addr(CAROL))
    except ContractRevertError as exc:
        return exc.error_name
    return None


def test_liquidatable_lists_exactly_the_accounts_the_liquidator_accepts(h: Harness, engine: Engine, api: str) -> None:
    """I-19: after a crash every account ``/liquidatable`` lists is accepted by ``Liquidator.start`` with the
    leaf and proof it gives, and every other account of the round is refused as healthy; a deposit after
    the root that covers the shortfall removes an account from the list (and the contract agrees), a
    smaller one only lowers its shortfall; an account in auction is no longer listed."""
    longs = leveraged_book(h)
    crash(h, 0.85)
    result = engine.run_round()
    assert result is not None
    status, doc = http(api + "/liquidatable")
    assert status == 200, doc
    listed = {e["account"]: e for e in doc["accounts"]}
    assert set(listed) == {longs["alice"], longs["dave"]}  # the 100k long survives a 15 % fall
    shortfalls = [int(e["shortfall"]) for e in doc["accounts"]]
    assert shortfalls == sorted(shortfalls, reverse=True) and min(shortfalls) > 0
    for account, e in listed.items():
        leaf = result.tree.leaf(account)
        assert leaf_tuple(e) == leaf.as_tuple() and proof_bytes(e) == result.tree.proof(account)
        assert int(e["shortfall"]) == leaf.maintenance_margin - leaf.margin_equity
        assert accepted(h, account, leaf_tuple(e), proof_bytes(e)) is None
    for leaf in result.tree.leaves:  # no unlisted breached account
        if leaf.account not in listed:
            assert accepted(h, leaf.account, leaf.as_tuple(), result.tree.proof(leaf.account)) == "Liquidator_Healthy"
    # a deposit after the root: credited exactly as the contract credits it
    alice, dave = listed[longs["alice"]], listed[longs["dave"]]
    h.deposit(ALICE, "USDC", int(alice["shortfall"]))  # credited equity == MM: healthy
    h.deposit(DAVE, "USDC", int(dave["shortfall"]) - 1)  # one unit short: still liquidatable
    status, doc = http(api + "/liquidatable")
    assert status == 200 and [e["account"] for e in doc["accounts"]] == [longs["dave"]]
    assert doc["accounts"][0]["shortfall"] == "1"
    assert accepted(h, longs["alice"], leaf_tuple(alice), proof_bytes(alice)) == "Liquidator_Healthy"
    assert accepted(h, longs["dave"], leaf_tuple(dave), proof_bytes(dave)) is None
    # started: no longer listed
    h.send(start_call(h, longs["dave"], leaf_tuple(dave), proof_bytes(dave)), CAROL)
    status, doc = http(api + "/liquidatable")
    assert status == 200 and doc["accounts"] == []


def test_liquidatable_is_empty_while_the_root_would_be_refused(h: Harness, engine: Engine, api: str) -> None:
    """An expired root lists nothing (the contract would refuse every leaf of it)."""
    leveraged_book(h)
    crash(h, 0.85)
    assert engine.run_round() is not None
    assert http(api + "/liquidatable")[1]["accounts"]
    h.warp(engine.lifetime + 1)
    assert http(api + "/liquidatable")[1]["accounts"] == []


def open_auction(h: Harness, engine: Engine) -> str:
    """Alice's 2 BTC long on 26k breaches after a 15 % fall; Carol starts her auction."""
    longs = leveraged_book(h)
    crash(h, 0.85)
    assert engine.run_round() is not None
    [entry] = [e for e in engine.liquidatable() if e["account"] == longs["alice"]]
    h.send(start_call(h, longs["alice"], leaf_tuple(entry), proof_bytes(entry)), CAROL)
    return longs["alice"]


def bid_body(bidder: str, account: str, fraction: int, worst: int) -> dict[str, str]:
    """The HTTP body of a bid: exact decimal strings."""
    return {"bidder": bidder, "account": account, "fraction": f"{Decimal(fraction).scaleb(-18):f}",
            "worst_price": f"{Decimal(worst).scaleb(-6):f}"}  # fmt: skip


def planned_bid(h: Harness, engine: Engine, account: str, share: int) -> tuple[Any, Any, Any, Any, int, int]:
    """The indexed state, the auction, its rules snapshot and parameters, 1/``share`` of the largest
    fraction (on a 1e-6 grid) and its price now."""
    state = engine.refresh()
    auction = fetch_auction(h.p, account, state.block)
    p = auction_params(state.liquidation)  # type: ignore[arg-type]
    s = auction.rules_state()
    f = rules.max_fraction(s, state.timestamp, p) // share // 10**12 * 10**12
    price, _ = rules.bid_price(s, f, state.timestamp, p)
    return state, auction, s, p, f, price


def test_bid_attested_by_the_engine_is_accepted_and_moves_the_fraction(h: Harness, engine: Engine, api: str) -> None:
    """I-24: the engine's bidder attestation (signed by remote signers that recompute the bid) is
    accepted by ``Liquidator.bid``; it binds the auction version, fraction and worst price; its margin
    figures are the engine's for the bidder's portfolio after the bid."""
    alice, carol = open_auction(h, engine), addr(CAROL)
    cfg, domain = load_config(), h.p.domain("RiskOracle")
    nodes = [SignerNode(s._key.to_bytes(), EngineCore(cfg, h.p.deployment), Indexer(h.p), domain)
             for s in h.risk_signers[:2]]  # fmt: skip
    servers = [serve_signer(n) for n in nodes]
    engine.signers = [RemoteSigner(f"http://127.0.0.1:{s.server_address[1]}", n.address)
                      for s, n in zip(servers, nodes, strict=True)]  # fmt: skip
    try:
        state, _, s, p, f, price = planned_bid(h, engine, alice, 2)
        landed = rules.bid_price(s, f, state.timestamp + 1, p)  # the block the bid lands in
        status, doc = http(api + "/attest/bid", bid_body(carol, alice, f, price))
        assert status == 200, doc
        assert doc["version"] == 0 and doc["attestation"]["account"] == carol
        # the engine's figures: the bidder's portfolio after the bid, its IM covered
        a = doc["attestation"]
        assert int(a["margin_equity"]) >= int(a["initial_margin"]) > 0
        perp = h.ids["BTC-PERP"]
        size = h.positions(alice)[perp][0]
        h.p.w3.provider.make_request("evm_setNextBlockTimestamp", [state.timestamp + 1])  # type: ignore[arg-type]
        fn = h.p.liquidator.functions.bid(alice, f, price, doc["version"], proof_of(doc))
        rc = h.p.send(fn, CAROL, gas=3_000_000)
    finally:
        for server in servers:
            server.shutdown()
    [ev] = h.events(h.p.liquidator, "Bid", rc)
    assert ev["fractionWad"] == f and (ev["price"], ev["fee"]) == landed and landed[0] <= price
    assert h.positions(carol)[perp][0] == rules.moved_size(size, f)
    # the same attestation cannot be used twice: the auction's version moved on
    with pytest.raises(ContractRevertError) as err:
        h.send(h.p.liquidator.functions.bid(alice, f, price, doc["version"], proof_of(doc)), CAROL)
    assert err.value.error_name == "Liquidator_VersionChanged"
    h.check_conservation()


def test_bid_requests_the_contract_would_refuse_are_refused_by_field(h: Harness, engine: Engine, api: str) -> None:
    """Each refusal the Liquidator would make is a 4xx naming the field; malformed input too."""
    alice, carol, bob = open_auction(h, engine), addr(CAROL), addr(BOB)
    state = engine.refresh()
    s, p = fetch_auction(h.p, alice, state.block).rules_state(), auction_params(state.liquidation)  # type: ignore[arg-type]
    until = state.timestamp + engine.lifetime
    fmax = rules.max_fraction(s, until, p)
    price, _ = rules.bid_price(s, fmax, until, p)
    cases = [
        (bid_body(alice, alice, fmax, price), "bidder"),  # self-bid
        (bid_body(carol, bob, WAD // 10, 0), "account"),  # no auction
        (bid_body(carol, alice, min(fmax + 10**12, WAD), 10**12), "fraction"),  # above f_max
        (bid_body(carol, alice, fmax, price - 1), "worst_price"),  # below the price
        ({"bidder": carol, "account": alice, "fraction": "0", "worst_price": "1"}, "fraction"),
        ({"bidder": carol, "account": alice, "fraction": "1.5", "worst_price": "1"}, "fraction"),
        ({"bidder": carol, "account": alice, "fraction": "0.1", "worst_price": "1.0000001"}, "worst_price"),
        ({"bidder": "0x12", "account": alice, "fraction": "0.1", "worst_price": "1"}, "bidder"),
        ({"bidder": carol, "fraction": "0.1", "worst_price": "1"}, "account"),
    ]
    for body, field in cases:
        status, doc = http(api + "/attest/bid", body)
        assert (status, doc.get("field")) == (400, field), (body, doc)
    # a bidder whose own margin would not cover the portfolio it takes: refused on the fraction
    h.fund(DEFAULT_KEYS[7], "USDC", 10 * USDC)
    h.deposit(DEFAULT_KEYS[7], "USDC", 10 * USDC)
    status, doc = http(api + "/attest/bid", bid_body(addr(DEFAULT_KEYS[7]), alice, fmax, price))
    assert (status, doc.get("field")) == (400, "fraction") and "initial margin" in doc["error"], doc


def test_the_keepers_attestor_gets_bids_the_contract_accepts(h: Harness, engine: Engine, api: str) -> None:
    """I-24, end to end: the keeper's HttpAttestor speaks the engine's /attest/bid (exact decimal
    strings); the attestation it returns is accepted by Liquidator.bid."""
    alice, carol = open_auction(h, engine), addr(CAROL)
    state, auction, _, _, f, price = planned_bid(h, engine, alice, 3)
    got = HttpAttestor(api).attest_bid(carol, alice, f, price)
    assert got.attestation.account == carol
    h.p.w3.provider.make_request("evm_setNextBlockTimestamp", [state.timestamp + 1])  # type: ignore[arg-type]
    fn = h.p.liquidator.functions.bid(alice, f, price, auction.version, (got.attestation.as_tuple(), got.signatures))
    [ev] = h.events(h.p.liquidator, "Bid", h.p.send(fn, CAROL, gas=3_000_000))
    assert ev["fractionWad"] == f and ev["bidder"] == carol
