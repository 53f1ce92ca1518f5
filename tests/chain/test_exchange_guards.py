"""Exchange guards (issue 8): price bands around the index, option no-arbitrage bounds, band
administration (owner within hard bounds, guardian tighten-only), ownership, ERC-1271 wallets."""

from __future__ import annotations

from typing import Any

import pytest

from offchain.chain.deploy import _deploy
from offchain.chain.eip712 import Order, Signer, sign_order
from offchain.chain.params import ExchangeBands
from tests.chain.conftest import ALICE, BOB, CAROL, RELAYER, addr
from tests.chain.harness import USDC, ZERO_ADDRESS, Harness, key_addr, next_nonce, reverts

U = 10**18
BTC = 55_000 * U
WAD = 10**18


@pytest.fixture
def funded(h: Harness) -> Harness:
    for key in (ALICE, BOB, CAROL):
        h.deposit(key, "USDC", 500_000 * USDC)
    return h


# ---------------------------------------------------------------------- bands on fills
def test_linear_fills_stay_within_the_band_around_the_index(funded: Harness) -> None:
    """Perpetuals and futures fill within ±bands.linear (10 %) of the feed's index, edges included."""
    h = funded
    assert tuple(h.p.exchange.functions.bands().call()) == ExchangeBands().as_tuple()
    low, high = 49_500 * U, 60_500 * U
    for sym in ("BTC-PERP", "BTC-FUT"):
        iid = h.ids[sym]
        h.fill(ALICE, BOB, iid, U, high)
        h.fill(ALICE, BOB, iid, U, low, maker_buys=False)
        with reverts("Exchange_PriceOutsideBand", high + 10**15, low, high):
            h.fill(ALICE, BOB, iid, U, high + 10**15)
        with reverts("Exchange_PriceOutsideBand", low - 10**15, low, high):
            h.fill(ALICE, BOB, iid, U, low - 10**15)
    # the band follows the index
    h.post_raw((60_000 * U, h.latest_prices()[1]))
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, 66_000 * U)


def test_option_fills_stay_within_no_arbitrage_bounds(funded: Harness) -> None:
    """A call fills in [max(0, S(1−b) − K), S(1+b)], a put in [max(0, K − S(1+b)), K] (b = bands.linear):
    the no-arbitrage bounds (r = 0) for any spot within the linear band of the index."""
    h = funded
    call, put = h.ids["BTC-C60K"], h.ids["BTC-P50K"]
    h.post_raw((80_000 * U, h.latest_prices()[1]), h.price_signers)  # a big move: every signer
    low, high = 72_000 * U - 60_000 * U, 88_000 * U
    with reverts("Exchange_PriceOutsideBand", 11_000 * U, low, high):  # below intrinsic: free money
        h.fill(ALICE, BOB, call, U, 11_000 * U)
    with reverts("Exchange_PriceOutsideBand", 88_001 * U, low, high):  # above the spot
        h.fill(ALICE, BOB, call, U, 88_001 * U)
    h.fill(ALICE, BOB, call, U, 20_000 * U)
    h.post_raw((30_000 * U, h.latest_prices()[1]), h.price_signers)
    low, high = 50_000 * U - 33_000 * U, 50_000 * U
    with reverts("Exchange_PriceOutsideBand", 16_000 * U, low, high):
        h.fill(ALICE, BOB, put, U, 16_000 * U)
    with reverts("Exchange_PriceOutsideBand", 50_001 * U, low, high):  # above the strike
        h.fill(ALICE, BOB, put, U, 50_001 * U)
    h.fill(ALICE, BOB, put, U, 20_000 * U)
    # out of the money both bounds are wide: a call at 60K strike with spot 30K trades near zero
    h.fill(ALICE, BOB, call, U, 10**15)


def test_no_attested_fill_without_a_fresh_index(funded: Harness) -> None:
    """Past the feed's heartbeat the band still uses the last posted index (the emergency close is banded
    around it), and the Vault refuses the fill: a stale feed is emergency mode, no new risk (F-6)."""
    h = funded
    heartbeat = 3600
    h.warp(heartbeat + 60)
    with reverts("Exchange_PriceOutsideBand"):
        h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC * 12 // 10)
    with reverts("Vault_Emergency"):
        h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)
    h.refresh_prices()
    h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, BTC)


# ---------------------------------------------------------------------- band administration
def test_owner_sets_bands_within_hard_bounds(funded: Harness) -> None:
    """setBands is the owner's (the timelock's), inside [0.5 %, 50 %] for the linear band, a non-zero
    option band and an operator band no wider than the linear one; each change emits BandsSet."""
    h = funded
    ex = h.p.exchange.functions
    with reverts("OwnableUnauthorizedAccount", addr(ALICE)):
        h.send(ex.setBands((WAD // 20, WAD // 100, WAD // 1000)), ALICE)
    for bad in ((WAD // 1000, WAD // 100, 0), (WAD // 2 + 1, WAD // 100, 0), (WAD // 20, 0, 0),
                (WAD // 20, WAD // 100, WAD // 20 + 1), (WAD // 20, WAD // 2 + 1, 0)):  # fmt: skip
        with reverts("Exchange_BadBands"):
            h.send(ex.setBands(bad))
    rc = h.send(ex.setBands((WAD // 20, WAD // 50, WAD // 1000)))
    expected = {"linear": WAD // 20, "option": WAD // 50, "operator": WAD // 1000}
    assert h.events(h.p.exchange, "BandsSet", rc) == [expected]
    with reverts("Exchange_PriceOutsideBand", 57_750 * U + 10**15, 52_250 * U, 57_750 * U):
        h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, 57_750 * U + 10**15)


def test_guardian_only_tightens_at_once(funded: Harness) -> None:
    """A guardian (never zero) may narrow any band at once, never widen one; others may do neither."""
    h = funded
    ex = h.p.exchange.functions
    with reverts("Exchange_ZeroAddress"):
        h.send(ex.setGuardian(ZERO_ADDRESS))
    rc = h.send(ex.setGuardian(addr(CAROL)))
    assert h.events(h.p.exchange, "GuardianSet", rc) == [{"guardian": addr(CAROL)}]
    linear, option, operator = ex.bands().call()
    with reverts("Exchange_NotAuthorized", addr(BOB)):
        h.send(ex.tightenBands((linear // 2, option, operator)), BOB)
    for wider in ((linear + 1, option, operator), (linear, option + 1, operator), (linear, option, operator + 1)):
        with reverts("Exchange_NotTighter"):
            h.send(ex.tightenBands(wider), CAROL)
    with reverts("Exchange_BadBands"):  # tighter, but below the hard floor
        h.send(ex.tightenBands((WAD // 1000, option, 0)), CAROL)
    h.send(ex.tightenBands((WAD // 50, option // 2, 0)), CAROL)
    assert tuple(ex.bands().call()) == (WAD // 50, option // 2, 0)
    with reverts("OwnableUnauthorizedAccount", addr(CAROL)):  # widening is the owner's, behind the timelock
        h.send(ex.setBands((linear, option, operator)), CAROL)
    with reverts("Exchange_PriceOutsideBand", 56_100 * U + 10**15, 53_900 * U, 56_100 * U):
        h.fill(ALICE, BOB, h.ids["BTC-PERP"], U, 56_100 * U + 10**15)


def test_ownership_is_two_step_and_never_renounced(funded: Harness) -> None:
    """Ownable2Step: a new owner must accept; renounceOwnership is disabled."""
    h = funded
    ex = h.p.exchange.functions
    with reverts("Exchange_RenounceDisabled"):
        h.send(ex.renounceOwnership())
    h.send(ex.transferOwnership(addr(BOB)))
    assert ex.owner().call() == key_addr(h.deployer) and ex.pendingOwner().call() == addr(BOB)
    h.send(ex.acceptOwnership(), BOB)
    assert ex.owner().call() == addr(BOB)
    with reverts("OwnableUnauthorizedAccount", key_addr(h.deployer)):
        h.send(ex.setGuardian(addr(CAROL)))


# ---------------------------------------------------------------------- ERC-1271 contract wallets
def _wallet(h: Harness, owner_key: str, deposit: int) -> Any:
    """A minimal ERC-1271 wallet owned by ``owner_key``, holding ``deposit`` USDC in the Vault."""
    wallet = _deploy(h.p.w3, h.p.artifacts["MockERC1271Wallet"], owner_key, addr(owner_key))
    usdc = h.token("USDC")
    h.send(usdc.functions.mint(wallet.address, deposit))
    h.send(wallet.functions.call(usdc.address, usdc.encode_abi("approve", args=[h.p.vault.address, deposit])),
           owner_key)  # fmt: skip
    data = h.p.vault.encode_abi("deposit", args=[usdc.address, deposit, wallet.address])
    h.send(wallet.functions.call(h.p.vault.address, data), owner_key)
    return wallet


def test_contract_wallet_signs_orders_through_erc1271(funded: Harness) -> None:
    """A contract account signs orders through ERC-1271 (OpenZeppelin SignatureChecker): its owner's
    signature fills; anyone else's is refused."""
    h, perp = funded, funded.ids["BTC-PERP"]
    wallet = _wallet(h, CAROL, 100_000 * USDC)
    w = wallet.address
    order = Order(w, w, perp, True, True, U, BTC, next_nonce(), h.now() + 3600)
    taker = h.order(BOB, perp, False, U, BTC, nonce=next_nonce())
    digest = h.p.exchange.functions.orderHash(order.as_tuple()).call()
    assert wallet.functions.isValidSignature(digest, Signer(CAROL).sign(digest)).call() == bytes.fromhex("1626ba7e")
    proofs = h.trade_proofs(order, taker, U)
    domain = h.p.domain("Exchange")
    forged = (order.as_tuple(), sign_order(domain, order, Signer(ALICE)))  # not the wallet's owner
    with reverts("Exchange_BadSignature", w, w):
        h.send(h.p.exchange.functions.trade(forged, h.signed(taker, BOB), U, *proofs), RELAYER)
    signed = (order.as_tuple(), sign_order(domain, order, Signer(CAROL)))
    h.send(h.p.exchange.functions.trade(signed, h.signed(taker, BOB), U, *proofs), RELAYER)
    assert h.positions(w)[perp][0] == U
