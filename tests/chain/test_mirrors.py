"""Python mirrors of on-chain encodings, checked for exact equality with the contracts: EIP-712
digests (also against eth-account's generic encoder), the parameter hash, action hashes and the
fixed-point value of a position."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offchain.chain import eip712
from offchain.chain.actions import trade_action, withdraw_action
from offchain.chain.eip712 import Attestation, Domain, Order, PriceRound, digest
from offchain.chain.merkle import STATUS_ROOT_TYPEHASH
from offchain.chain.params import CollateralParams, LiquidationParams, OnchainParams, params_hash
from offchain.chain.units import LOT, TICK, value
from offchain.risk.config import load_config
from tests.chain.conftest import ALICE, BOB, CAROL, addr
from tests.chain.harness import USDC, Harness, next_nonce, reverts

U = 10**18
HYP = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
ORDER_FIELDS = [
    {"name": "account", "type": "address"},
    {"name": "signer", "type": "address"},
    {"name": "instrument", "type": "uint32"},
    {"name": "isBuy", "type": "bool"},
    {"name": "isMaker", "type": "bool"},
    {"name": "size", "type": "uint128"},
    {"name": "limitPrice", "type": "uint128"},
    {"name": "nonce", "type": "uint64"},
    {"name": "deadline", "type": "uint64"},
    {"name": "grant", "type": "uint64"},
]
PRICE_ROUND_FIELDS = [
    {"name": "round", "type": "uint64"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "prices", "type": "uint256[]"},
]
ATTESTATION_FIELDS = [
    {"name": "account", "type": "address"},
    {"name": "riskNonce", "type": "uint64"},
    {"name": "actionHash", "type": "bytes32"},
    {"name": "marginEquity", "type": "int256"},
    {"name": "mtmEquity", "type": "int256"},
    {"name": "initialMargin", "type": "uint256"},
    {"name": "maintenanceMargin", "type": "uint256"},
    {"name": "creditCheckpoint", "type": "uint256"},
    {"name": "paramsHash", "type": "bytes32"},
    {"name": "priceRound", "type": "uint64"},
    {"name": "issuedAt", "type": "uint64"},
    {"name": "expiry", "type": "uint64"},
]


def generic_digest(domain: Domain, primary: str, fields: list[dict[str, str]], message: dict[str, Any]) -> bytes:
    """The EIP-712 hash as eth-account's generic encoder computes it from the type description."""
    signable = encode_typed_data(full_message={
        "types": {"EIP712Domain": DOMAIN_FIELDS, primary: fields},
        "primaryType": primary,
        "domain": domain.as_dict(),
        "message": message,
    })  # fmt: skip
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address("0x" + b.hex()))
u = lambda bits: st.integers(0, 2**bits - 1)  # noqa: E731
orders = st.builds(Order, addresses, addresses, u(32), st.booleans(), st.booleans(), u(128), u(128), u(64), u(64),
                   u(64))  # fmt: skip
rounds = st.builds(PriceRound, u(64), u(64), st.lists(u(256), max_size=4).map(tuple))
attestations = st.builds(
    Attestation, addresses, u(64), st.binary(min_size=32, max_size=32),
    st.integers(-(2**255), 2**255 - 1), st.integers(-(2**255), 2**255 - 1), u(256), u(256), u(256),
    st.binary(min_size=32, max_size=32), u(64), u(64), u(64),
)  # fmt: skip


# ---------------------------------------------------------------------- EIP-712
def test_typehashes_and_domains(h: Harness) -> None:
    """I-16: the type hashes and the EIP-712 domains (ERC-5267 eip712Domain) match Python's."""
    assert h.p.exchange.functions.ORDER_TYPEHASH().call() == eip712.ORDER_TYPEHASH
    assert h.p.feed.functions.PRICE_ROUND_TYPEHASH().call() == eip712.PRICE_ROUND_TYPEHASH
    probe, _ = h.probe()  # the Vault's typehashes are internal; its test build exposes them
    attestation, status_root = probe.functions.typehashes().call()
    assert (attestation, status_root) == (eip712.ATTESTATION_TYPEHASH, STATUS_ROOT_TYPEHASH)
    for name in ("Exchange", "PriceFeed", "RiskOracle"):
        dom = h.p.domain(name)
        on_chain = h.p.c[name].functions.eip712Domain().call()
        assert tuple(on_chain[1:5]) == (dom.name, dom.version, dom.chain_id, dom.verifying_contract)
        assert on_chain[0] == b"\x0f"  # name, version, chainId, verifyingContract; no salt


@HYP
@given(order=orders)
def test_order_digest(h: Harness, order: Order) -> None:
    """I-16: Exchange.orderHash == the Python digest == eth-account's generic EIP-712 hash."""
    dom = h.p.domain("Exchange")
    ours = digest(dom, order.struct_hash())
    assert h.p.exchange.functions.orderHash(order.as_tuple()).call() == ours
    msg = dict(zip([f["name"] for f in ORDER_FIELDS], order.as_tuple(), strict=True))
    assert generic_digest(dom, "Order", ORDER_FIELDS, msg) == ours


@HYP
@given(pr=rounds)
def test_price_round_digest(h: Harness, pr: PriceRound) -> None:
    """I-16: PriceFeed.roundDigest == the Python digest == eth-account's generic EIP-712 hash."""
    dom = h.p.domain("PriceFeed")
    ours = digest(dom, pr.struct_hash())
    assert h.p.feed.functions.roundDigest(pr.round, pr.timestamp, list(pr.prices)).call() == ours
    msg = {"round": pr.round, "timestamp": pr.timestamp, "prices": list(pr.prices)}
    assert generic_digest(dom, "PriceRound", PRICE_ROUND_FIELDS, msg) == ours


_PROBE: dict[str, Any] = {}  # one probe per session: hypothesis runs many examples per test


@HYP
@given(att=attestations)
def test_attestation_digest(h: Harness, att: Attestation) -> None:
    """I-16: RiskOracle.attestationDigest == the Python digest == eth-account's generic hash."""
    probe, dom = _PROBE.get("c") or _PROBE.setdefault("c", h.probe())
    ours = digest(dom, att.struct_hash())
    assert probe.functions.attestationDigest(att.as_tuple()).call() == ours
    msg = dict(zip([f["name"] for f in ATTESTATION_FIELDS], att.as_tuple(), strict=True))
    assert generic_digest(dom, "Attestation", ATTESTATION_FIELDS, msg) == ours


# ---------------------------------------------------------------------- parameter hash
def chain_collaterals(h: Harness) -> list[CollateralParams]:
    return [CollateralParams(str(t), int(u_), int(hc)) for t, u_, hc in h.p.params.functions.collaterals().call()]


def python_hash(h: Harness, params: OnchainParams, liquidation: LiquidationParams | None = None) -> bytes:
    liq = liquidation or LiquidationParams(*h.p.params.functions.liquidationParams().call())
    return params_hash(params, liq, chain_collaterals(h), h.p.params.functions.engineConfigHash().call())


def test_params_hash_of_the_deployment(h: Harness) -> None:
    """I-16: Python's params_hash of the deployed configuration equals RiskParams.paramsHash()."""
    assert h.p.params.functions.engineConfigHash().call() == load_config().canonical_hash()
    assert tuple(h.p.params.functions.params().call()) == OnchainParams().as_tuple()
    assert python_hash(h, OnchainParams()) == h.p.params.functions.paramsHash().call()


params_strategy = st.builds(
    OnchainParams,
    st.integers(10, 86_400), st.integers(5 * 10**14, 25 * 10**16), st.integers(0, 10**16),
    st.integers(0, 10**16), st.integers(0, 5 * 10**16), st.integers(1, 64),
    st.integers(1, 10**9).map(lambda k: k * LOT),
)  # fmt: skip


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=params_strategy, haircut=st.integers(0, 9 * 10**17), engine=st.binary(min_size=32, max_size=32))
def test_params_hash_after_changes(h: Harness, params: OnchainParams, haircut: int, engine: bytes) -> None:
    """I-16: after setParams, setCollateral (update and new listing) and setEngineConfigHash the
    Python hash still equals the contract's, byte for byte."""
    rp = h.p.params.functions
    with h.isolated():
        h.send(rp.setParams(params.as_tuple()))
        assert python_hash(h, params) == rp.paramsHash().call()
        h.send(rp.setCollateral(h.p.deployment.tokens["WBTC"].address, 0, haircut))
        h.send(rp.setCollateral(addr(CAROL), 1, haircut // 2))
        assert chain_collaterals(h)[0].haircut == haircut and len(chain_collaterals(h)) == 3
        assert python_hash(h, params) == rp.paramsHash().call()
        h.send(rp.setEngineConfigHash(engine))
        assert python_hash(h, params) == rp.paramsHash().call() == h.p.oracle.functions.paramsHash().call()


# ---------------------------------------------------------------------- action hashes
def test_trade_action_hash_is_the_contracts(h: Harness) -> None:
    """I-16: the action hash the Vault computes for each side (reported in RiskOracle_WrongAction)
    is Python's trade_action; any other size, sign, price, fee, instrument or account fails."""
    for key in (ALICE, BOB):
        h.deposit(key, "USDC", 100_000 * USDC)
    perp, a = h.ids["BTC-PERP"], addr(ALICE)
    size, price = 1_234 * 10**15, 55_555 * U
    m = h.order(ALICE, perp, True, size, price, nonce=next_nonce(), maker=True)
    t = h.order(BOB, perp, False, size, price, nonce=next_nonce())
    mp, tp = h.trade_proofs(m, t, size)
    fee = h.fees(size, price)[0]
    right = trade_action(a, perp, size, price, fee)
    assert mp[0][2] == right
    wrongs = [trade_action(a, perp, -size, price, fee), trade_action(a, perp, size + LOT, price, fee),
              trade_action(a, perp, size, price + TICK, fee), trade_action(a, perp, size, price, fee + 1),
              trade_action(a, h.ids["ETH-PERP"], size, price, fee), trade_action(addr(BOB), perp, size, price, fee),
              withdraw_action(a, h.token("USDC").address, size)]  # fmt: skip
    for wrong in wrongs:
        proof = h.proof(h.attestation(a, wrong))
        with reverts("RiskOracle_WrongAction", right, wrong):
            h.trade(ALICE, m, BOB, t, size, proofs=(proof, tp))
    h.trade(ALICE, m, BOB, t, size, proofs=(mp, tp))


def test_withdraw_action_hash_is_the_contracts(h: Harness) -> None:
    """I-16: the Vault's withdrawal action hash is Python's withdraw_action."""
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    h.deposit(ALICE, "WETH", 10**18)
    h.fill(ALICE, BOB, h.ids["ETH-PERP"], U, 2_800 * U)
    a, weth, usdc = addr(ALICE), h.token("WETH").address, h.token("USDC").address
    right = withdraw_action(a, weth, 10**17)
    for wrong in (withdraw_action(a, usdc, 10**17), withdraw_action(a, weth, 10**17 + 1),
                  withdraw_action(addr(BOB), weth, 10**17)):  # fmt: skip
        with reverts("RiskOracle_WrongAction", right, wrong):
            h.send(h.p.vault.functions.withdraw(weth, 10**17, a, h.proof(h.attestation(a, wrong))), ALICE)
    h.send(h.p.vault.functions.withdraw(weth, 10**17, a, h.proof(h.attestation(a, right))), ALICE)


# ---------------------------------------------------------------------- fixed-point value
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lots=st.integers(10, 10**7), ticks=st.integers(1, 10**10))
def test_value_matches_chain(h: Harness, lots: int, ticks: int) -> None:
    """I-16, I-4: units.value(size, price) is what the contracts book: an option premium moves
    exactly value() (plus fees) between the two sides, a future's cost basis is exactly value()."""
    size, price = lots * LOT, ticks * TICK
    v = value(size, price)
    assert v * 10**30 == size * price, "on the grid the value is exact"
    a, b = addr(ALICE), addr(BOB)
    with h.isolated():
        h.post_raw((price, price), h.price_signers)  # both indices at the fill price: inside every band
        call = h.ids["ETH-C3K"]
        rc = h.fill(ALICE, BOB, call, size, price)  # Alice buys (maker), Bob sells
        [ev] = h.events(h.p.exchange, "OrderFilled", rc)
        maker_fee, taker_fee = -(-v * 2 // 10_000), -(-v * 5 // 10_000)
        assert (ev["makerFee"], ev["takerFee"]) == (maker_fee, taker_fee)
        assert (h.cash(a), h.cash(b)) == (-v - maker_fee, v - taker_fee)
        fut = h.ids["BTC-FUT"]
        h.fill(BOB, ALICE, fut, size, price)  # Bob long
        assert h.positions(b)[fut][1] == v and h.positions(a)[fut][1] == value(-size, price) == -v
        h.check_conservation()


def test_domain_mirror_detects_any_field(h: Harness) -> None:
    """The Python digest changes with every domain field (the mirror cannot silently ignore one)."""
    dom = h.p.domain("Exchange")
    order = Order.own(addr(ALICE), 1, True, U, U, 1, 2, maker=True)
    base = digest(dom, order.struct_hash())
    for change in ({"name": "x"}, {"version": "2"}, {"chain_id": 1}, {"verifying_contract": addr(BOB)}):
        assert digest(replace(dom, **change), order.struct_hash()) != base
