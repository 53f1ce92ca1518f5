"""PriceFeed: quorum-signed rounds, the all-signer rule for big moves, time rules, config, signers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from offchain.chain.eip712 import PriceRound, digest, sign_price_round
from tests.chain.conftest import ALICE, CAROL, GENESIS, addr
from tests.chain.harness import Harness, reverts, signer_from_seed

U = 10**18
P0 = (55_000 * U, 2_800 * U)  # the session's first round
WAD = 10**18


def post_sigs(h: Harness, prices: tuple[int, ...], sigs: bytes, ts: int | None = None, key: str | None = None):
    ts = h.now() if ts is None else ts
    return h.send(h.p.feed.functions.post(ts, list(prices), sigs), key)


def round_digest(h: Harness, prices: tuple[int, ...], ts: int, rnd: int | None = None) -> bytes:
    pr = PriceRound(rnd or h.latest_round() + 1, ts, prices)
    return digest(h.p.domain("PriceFeed"), pr.struct_hash())


def moved(p: int, pct_bp: int) -> int:
    """``p`` moved by ``pct_bp`` basis points, on the tick grid."""
    return p * (10_000 + pct_bp) // 10_000 // 10**15 * 10**15


# ---------------------------------------------------------------------- quorum
@pytest.mark.parametrize("pair", [(0, 1), (0, 2), (1, 2)])
def test_any_quorum_pair_posts_a_round(h: Harness, pair: tuple[int, int]) -> None:
    """I-15: any two of the three signers post the next round, relayed by anyone."""
    f = h.p.feed.functions
    prices = (56_000 * U, 2_850 * U)
    h.warp(5)
    ts = h.now()
    sigs = sign_price_round(h.p.domain("PriceFeed"), PriceRound(2, ts, prices),
                            [h.price_signers[i] for i in pair])  # fmt: skip
    rc = post_sigs(h, prices, sigs, ts, key=CAROL)
    [ev] = h.events(h.p.feed, "PricesPosted", rc)
    assert (ev["round"], ev["timestamp"], tuple(ev["prices"])) == (2, ts, prices)
    assert f.latestRound().call() == [2, ts]
    assert f.latestPrice(1).call() == [2_850 * U, 2]
    assert (f.priceAt(1, 0).call(), f.priceAt(2, 0).call()) == (P0[0], 56_000 * U)
    assert f.roundTimestamp(2).call() == ts


def test_too_few_unknown_duplicate_and_disordered_signers(h: Harness) -> None:
    """I-15: one signature, an unregistered signer, a repeated or disordered signature are refused."""
    h.warp(5)
    prices, ts = (55_100 * U, 2_801 * U), h.now()
    d = round_digest(h, prices, ts)
    s = sorted(h.price_signers, key=lambda x: int(x.address, 16))
    with reverts("SignerQuorum_TooFewSigners", 1, 2):
        post_sigs(h, prices, s[0].sign(d), ts)
    with reverts("SignerQuorum_TooFewSigners", 0, 2):
        post_sigs(h, prices, b"", ts)
    stranger = signer_from_seed("not a price signer")
    with reverts("SignerQuorum_UnknownSigner", stranger.address):
        post_sigs(h, prices, sign_price_round(h.p.domain("PriceFeed"), PriceRound(2, ts, prices), [s[0], stranger]), ts)
    with reverts("SignerQuorum_DuplicateSigner", s[0].address):
        post_sigs(h, prices, s[0].sign(d) + s[0].sign(d), ts)
    with reverts("SignerQuorum_DuplicateSigner", s[0].address):  # decreasing order
        post_sigs(h, prices, s[1].sign(d) + s[0].sign(d), ts)
    with reverts("SignerQuorum_BadSignatureLength", 131):
        post_sigs(h, prices, s[0].sign(d) + s[1].sign(d) + b"\x00", ts)
    post_sigs(h, prices, s[0].sign(d) + s[1].sign(d), ts)  # the same signatures, in order


def test_signatures_bind_domain_and_round(h: Harness) -> None:
    """I-15: a signature for another chain, another contract or another round number recovers to
    an unregistered address."""
    h.warp(5)
    prices, ts = (55_100 * U, 2_801 * U), h.now()
    dom = h.p.domain("PriceFeed")
    pr = PriceRound(2, ts, prices)
    for wrong in (replace(dom, chain_id=1), replace(dom, verifying_contract=h.p.oracle.address),
                  replace(dom, version="2")):  # fmt: skip
        with reverts("SignerQuorum_UnknownSigner"):
            post_sigs(h, prices, sign_price_round(wrong, pr, h.price_signers[:2]), ts)
    with reverts("SignerQuorum_UnknownSigner"):
        post_sigs(h, prices, sign_price_round(dom, replace(pr, round=3), h.price_signers[:2]), ts)
    with reverts("SignerQuorum_UnknownSigner"):  # signed prices differ from the posted ones
        post_sigs(h, (55_100 * U, 2_802 * U), sign_price_round(dom, pr, h.price_signers[:2]), ts)


# ---------------------------------------------------------------------- big moves
@pytest.mark.parametrize(("idx", "bp"), [(0, 1_001), (0, -1_001), (1, 2_500), (1, -9_000)])
def test_big_move_needs_every_signer(h: Harness, idx: int, bp: int) -> None:
    """I-15: a move beyond maxMove (10%) with the quorum only is refused with
    PriceFeed_MoveNeedsAllSigners, and goes through with all three: a crash is never frozen."""
    prices = tuple(moved(p, bp) if i == idx else p for i, p in enumerate(P0))
    with reverts("PriceFeed_MoveNeedsAllSigners", idx):
        h.post_raw(prices, h.price_signers[:2])
    h.post_raw(prices, h.price_signers)
    assert h.latest_prices() == prices
    assert h.p.feed.functions.moveSince(1).call() >= WAD // 10


def test_move_of_exactly_max_move_needs_only_quorum(h: Harness) -> None:
    """I-15: the bound is strict: exactly +10% and -10% pass with two signers."""
    h.post_raw((60_500 * U, 2_800 * U), h.price_signers[1:])
    assert h.p.feed.functions.moveSince(1).call() == WAD // 10
    h.post_raw((60_500 * U, 2_520 * U), h.price_signers[:2])
    with reverts("PriceFeed_MoveNeedsAllSigners", 0):
        h.post_raw((60_500 * U + 6_050 * U + 10**15, 2_520 * U), h.price_signers[:2])


# ---------------------------------------------------------------------- F-5: big moves over a window
WINDOW = 15 * 60


def test_F5_stepwise_crash_needs_every_signer_from_the_second_step(h: Harness) -> None:
    """F-5: eight rounds of -9 % seconds apart, each signed by the quorum (2 of 3), took BTC down 53 %
    on 8842553 (each round moved less than maxMove from the one before). The rule now holds against
    the reference round, the price a window (15 min) earlier: the first step passes, every later one
    (-17 % and more from the reference) is refused; the same crash signed by every signer goes through,
    so a real crash is never frozen."""
    base = h.latest_prices()
    steps, price = [], base[0]
    for _ in range(8):
        price = moved(price, -900)
        steps.append((price, base[1]))
    h.warp(2)
    h.post_raw(steps[0])  # -9 % from the reference: the quorum suffices
    first = h.latest_round()
    for i, prices in enumerate(steps[1:], start=2):
        h.warp(2)
        assert (1 - prices[0] / base[0]) > 0.10  # the cumulative move is beyond maxMove ...
        with reverts("PriceFeed_MoveNeedsAllSigners", 0):  # ... so step i needs every signer
            h.post_raw(prices)
        assert h.latest_round() == first, f"step {i} was accepted"
    assert h.latest_prices() == steps[0]
    for prices in steps[1:]:  # the real crash, signed by every signer
        h.warp(2)
        h.post_raw(prices, h.price_signers)
    assert h.latest_prices()[0] == steps[-1][0] < base[0] // 2


def test_F5_a_round_signed_by_every_signer_is_the_new_reference(h: Harness) -> None:
    """After an all-signer crash the next rounds need only the quorum again (their reference is the
    crash round, not the pre-crash price), and after a quiet window the reference is the previous
    round: the quorum moves the price at most maxMove per window."""
    f = h.p.feed.functions
    crash = (moved(P0[0], -3_000), P0[1])
    h.post_raw(crash, h.price_signers)
    assert f.referenceRound(h.now() + 1).call() == h.latest_round()
    h.warp(5)
    h.post_raw((moved(crash[0], 500), P0[1]))  # +5 % from the crash round: the quorum suffices
    h.warp(5)
    after = (moved(crash[0], 1_200), P0[1])  # +12 % from the crash round: needs every signer
    with reverts("PriceFeed_MoveNeedsAllSigners", 0):
        h.post_raw(after)
    h.warp(WINDOW)  # quiet for a window: the reference is now the previous round (+5 %), 6.7 % away
    assert f.referenceRound(h.now()).call() == h.latest_round()
    h.post_raw(after)


def _reference(rounds: list[tuple[int, int]], ts: int, stored: int) -> int:
    """The contract's reference round, by brute force: the latest round stamped at or before
    ``ts - WINDOW``, never before ``stored`` (round 1 when none is that old)."""
    old = [r for r, t in rounds if t <= ts - WINDOW]
    return max([stored or 1, *old])


def test_F5_reference_round_search_matches_a_brute_force_scan(h: Harness) -> None:
    """The bounded search (two steps forward, then binary search) finds the round a linear scan finds,
    for a feed posting at irregular intervals, small moves signed by the quorum."""
    rng = np.random.default_rng(5)
    f = h.p.feed.functions
    rounds = [(r, int(f.roundTimestamp(r).call())) for r in range(1, h.latest_round() + 1)]
    stored = 0
    for gap in rng.choice([1, 7, 60, 240, 700, 2_000], size=36):
        h.warp(int(gap))
        ts = h.now()
        want = _reference(rounds, ts, stored)
        assert f.referenceRound(ts).call() == want
        for probe in (ts + 30, ts + 400, ts + WINDOW):  # further ahead: still the brute-force answer
            assert f.referenceRound(probe).call() == _reference(rounds, probe, stored)
        h.post_raw(P0, timestamp=ts)
        rounds.append((h.latest_round(), ts))
        stored = want


def test_move_since(h: Harness) -> None:
    """moveSince is the largest relative move over all underlyings, rounded up."""
    h.post_raw((57_750 * U, 2_744 * U))  # +5 %, -2 %
    f = h.p.feed.functions
    assert f.moveSince(1).call() == WAD // 20
    assert f.moveSince(2).call() == 0
    h.post_raw((57_750 * U + 10**15, 2_744 * U))
    assert f.moveSince(2).call() == -(-(10**15) * WAD // (57_750 * U))  # ceil
    with reverts("PriceFeed_UnknownRound", 4):
        h.p.call(f.moveSince(4))
    with reverts("PriceFeed_UnknownRound", 0):
        h.p.call(f.moveSince(0))


# ---------------------------------------------------------------------- time
def test_timestamps_must_be_newer_recent_and_not_future(h: Harness) -> None:
    """I-15: a round not newer than the latest, from the future or older than maxDelay is refused."""
    first = h.p.feed.functions.roundTimestamp(1).call()
    assert GENESIS <= first <= GENESIS + 60
    with reverts("PriceFeed_NotNewer", first, first):
        h.post_raw(P0, timestamp=first)
    with reverts("PriceFeed_NotNewer", first - 1, first):
        h.post_raw(P0, timestamp=first - 1)
    now = h.now()
    with reverts("PriceFeed_FutureTimestamp"):
        h.post_raw(P0, timestamp=now + 60)
    h.warp(1_000)
    with reverts("PriceFeed_StaleUpdate"):
        h.post_raw(P0, timestamp=h.now() - 700)
    h.post_raw(P0, timestamp=h.now() - 500)  # within maxDelay (600 s)
    with reverts("PriceFeed_NotNewer"):
        h.post_raw(P0, timestamp=h.now() - 550)


def test_latest_price_goes_stale_after_heartbeat(h: Harness) -> None:
    """I-15: latestPrice reverts with PriceFeed_Stale once the heartbeat (1 h) has passed; a new
    round revives it; priceAt of old rounds stays readable."""
    f = h.p.feed.functions
    assert f.latestPrice(0).call() == [P0[0], 1]
    h.warp(3_601)
    with reverts("PriceFeed_Stale"):
        h.p.call(f.latestPrice(0))
    assert f.priceAt(1, 0).call() == P0[0]
    h.refresh_prices()
    assert f.latestPrice(0).call() == [P0[0], 2]


def test_bad_prices_and_rounds(h: Harness) -> None:
    """Wrong length, zero and too-large prices; unknown rounds and underlyings."""
    f = h.p.feed.functions
    with reverts("PriceFeed_WrongLength", 3, 2):
        h.post_raw((*P0, U))
    with reverts("PriceFeed_ZeroPrice", 1):
        h.post_raw((P0[0], 0), h.price_signers)
    with reverts("PriceFeed_PriceTooLarge", 0):
        h.post_raw((10**30 + 10**15, P0[1]), h.price_signers)
    for rnd in (0, 2):
        with reverts("PriceFeed_UnknownRound", rnd):
            h.p.call(f.priceAt(rnd, 0))
        with reverts("PriceFeed_UnknownRound", rnd):
            h.p.call(f.roundTimestamp(rnd))
    with reverts("PriceFeed_UnknownUnderlying", 2):
        h.p.call(f.priceAt(1, 2))
    with reverts("PriceFeed_UnknownUnderlying", 2):
        h.p.call(f.latestPrice(2))


# ---------------------------------------------------------------------- config and signers
@pytest.mark.parametrize(
    "cfg",
    [(59, 600, WAD // 10), (86_401, 600, WAD // 10), (3_600, 0, WAD // 10), (3_600, 3_601, WAD // 10),
     (3_600, 600, WAD // 200 - 1), (3_600, 600, WAD // 2 + 1)],
)  # fmt: skip
def test_config_bounds(h: Harness, cfg: tuple[int, int, int]) -> None:
    """Heartbeat in [1 min, 1 day], 0 < maxDelay <= heartbeat, maxMove in [0.5 %, 50 %]."""
    with reverts("PriceFeed_BadConfig"):
        h.send(h.p.feed.functions.setConfig(*cfg))


def test_config_change_takes_effect(h: Harness) -> None:
    """Owner only; a lower maxMove makes a 6 % move need every signer, a shorter heartbeat makes
    prices stale sooner; bounds themselves are accepted."""
    f = h.p.feed.functions
    with reverts("OwnableUnauthorizedAccount", addr(ALICE)):
        h.send(f.setConfig(600, 60, WAD // 20), ALICE)
    rc = h.send(f.setConfig(60, 60, WAD // 20))
    assert h.events(h.p.feed, "ConfigSet", rc) == [{"heartbeat": 60, "maxDelay": 60, "maxMove": WAD // 20}]
    with reverts("PriceFeed_MoveNeedsAllSigners", 0):
        h.post_raw((moved(P0[0], 600), P0[1]))
    h.post_raw((moved(P0[0], 400), P0[1]))
    h.warp(61)
    with reverts("PriceFeed_Stale"):
        h.p.call(f.latestPrice(0))
    h.send(f.setConfig(86_400, 86_400, WAD // 2))
    h.send(f.setConfig(60, 1, WAD // 200))


def test_signer_admin(h: Harness) -> None:
    """Owner-only signer set; the quorum stays reachable; a removed signer's signature is unknown;
    a big move needs every registered signer, however many there are."""
    f = h.p.feed.functions
    s0, s1, s2 = h.price_signers
    new = signer_from_seed("pmsim-test-price-new")
    with reverts("OwnableUnauthorizedAccount", addr(CAROL)):
        h.send(f.addSigner(new.address), CAROL)
    with reverts("OwnableUnauthorizedAccount", addr(CAROL)):
        h.send(f.setQuorum(1), CAROL)
    with reverts("SignerQuorum_AlreadySigner", s0.address):
        h.send(f.addSigner(s0.address))
    with reverts("SignerQuorum_ZeroAddress"):
        h.send(f.addSigner("0x" + "00" * 20))
    with reverts("SignerQuorum_BadQuorum", 0, 3):
        h.send(f.setQuorum(0))
    with reverts("SignerQuorum_BadQuorum", 4, 3):
        h.send(f.setQuorum(4))
    with reverts("SignerQuorum_NotSigner", new.address):
        h.send(f.removeSigner(new.address))
    h.send(f.setQuorum(3))
    with reverts("SignerQuorum_BadQuorum", 3, 2):
        h.send(f.removeSigner(s2.address))
    h.send(f.setQuorum(2))
    h.send(f.removeSigner(s2.address))
    assert (f.signerCount().call(), f.isSigner(s2.address).call()) == (2, False)
    with reverts("SignerQuorum_UnknownSigner", s2.address):
        h.post_raw((56_000 * U, P0[1]), [s0, s2] if int(s0.address, 16) < int(s2.address, 16) else [s2, s0])
    h.post_raw((moved(P0[0], -3_000), P0[1]), [s0, s1])  # a big move: both remaining signers suffice
    h.send(f.addSigner(new.address))
    big = (moved(h.latest_prices()[0], 2_000), P0[1])
    with reverts("PriceFeed_MoveNeedsAllSigners", 0):
        h.post_raw(big, [s0, s1])
    h.post_raw(big, [s0, s1, new])
    for i in range(13):  # 3 registered, 16 at most
        h.send(f.addSigner(signer_from_seed(f"pmsim-test-price-extra-{i}").address))
    with reverts("SignerQuorum_TooManySigners"):
        h.send(f.addSigner(s2.address))
