"""Protocol-wide invariants (docs/INVARIANTS.md): the conservation checker itself, and a hypothesis
state machine of random deposits, trades, withdrawals, prices and funding, checked after each step."""

from __future__ import annotations

from typing import ClassVar

import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from offchain import rules
from offchain.chain.actions import bid_action
from offchain.chain.params import OnchainParams
from offchain.chain.units import FUNDING_PERIOD, LOT, TICK, Kind
from offchain.errors import ContractRevertError
from tests.chain.conftest import ALICE, BOB, CAROL, RELAYER, addr
from tests.chain.harness import USDC, Harness, empty_proof, next_nonce, status_leaf
from tests.chain.test_funding_settlement import check_accruals
from tests.chain.test_liquidation import post_leaves, start

U = 10**18
KEYS = (ALICE, BOB, CAROL)
WAD = 10**18


# ---------------------------------------------------------------------- the checker can fail
def test_checker_detects_a_quote_imbalance(h: Harness) -> None:
    """I-1: one quote unit sent to the Vault outside deposit() breaks the equality, and the checker
    says so (it is not vacuous)."""
    h.deposit(ALICE, "USDC", 10 * USDC)
    h.check_settled_conservation()
    h.send(h.token("USDC").functions.transfer(h.p.vault.address, 1), BOB)
    with pytest.raises(AssertionError, match="I-1"):
        h.check_conservation()


def test_checker_detects_a_collateral_imbalance(h: Harness) -> None:
    """I-2: one wei of WETH donated to the Vault breaks Σ collateralOf == balance."""
    h.deposit(ALICE, "WETH", 10**18)
    h.check_conservation()
    h.send(h.token("WETH").functions.transfer(h.p.vault.address, 1), BOB)
    with pytest.raises(AssertionError, match="I-2"):
        h.check_conservation()


def test_known_accounts_cover_every_holder(h: Harness) -> None:
    """The checker's account set (from Vault events) includes deposit-only accounts, traders
    without deposits and the fee collector."""
    h.deposit(ALICE, "WBTC", 1, account=addr(RELAYER))
    h.deposit(BOB, "USDC", 1_000 * USDC)
    h.fill(CAROL, BOB, h.ids["ETH-C3K"], 10**16, 50 * U)  # Carol never deposited
    found = h.known_accounts()
    collector = h.p.vault.functions.feeCollector().call()
    assert {addr(RELAYER), addr(BOB), addr(CAROL), collector} <= found
    h.check_settled_conservation()


def test_every_kind_of_flow_conserves(h: Harness) -> None:
    """I-1, I-2, I-3, I-5, I-6: one scenario touching every flow — deposits of each token, perp,
    future and option trades with fees, funding (partly settled), a withdrawal with an
    attestation, expiry and settlement — keeps the books exact at every step."""
    ids = h.ids
    for key in KEYS:
        h.deposit(key, "USDC", 50_000 * USDC)
        h.deposit(key, "WBTC", 3 * 10**7)
        h.deposit(key, "WETH", 2 * 10**18 + 1)
    h.check_settled_conservation()
    h.fill(ALICE, BOB, ids["BTC-PERP"], 1_234 * 10**15, 55_100 * U)
    h.fill(CAROL, ALICE, ids["ETH-PERP"], 7_777 * 10**15, 2_799_999 * 10**15, maker_buys=False)
    h.fill(BOB, CAROL, ids["BTC-FUT"], 333 * 10**15, 55_555_555 * 10**15)
    h.fill(ALICE, CAROL, ids["BTC-P50K"], 2 * U, 321 * U)
    h.check_settled_conservation()
    h.warp(5_000)
    h.post_raw((54_321 * U, 2_900 * U))
    for perp in (ids["BTC-PERP"], ids["ETH-PERP"]):
        h.send(h.p.instruments.functions.updateFunding(perp), RELAYER)
    h.check_conservation()  # funding owed, nobody settled
    h.send(h.p.vault.functions.settleFunding(addr(ALICE), ids["BTC-PERP"]), RELAYER)
    h.check_conservation()  # half settled
    a, wbtc = addr(ALICE), h.token("WBTC").address
    h.send(h.p.vault.functions.withdraw(wbtc, 10**7, a, h.withdraw_proof(a, wbtc, 10**7)), ALICE)
    h.fill(BOB, ALICE, ids["BTC-PERP"], 234 * 10**15, 54_000 * U)  # settles both sides' funding
    h.check_conservation()
    expiry = h.p.instruments.functions.get(ids["BTC-P50K"]).call()[2]
    h.warp(expiry - h.now())
    h.post_raw((48_000 * U, 2_900 * U), h.price_signers)
    h.send(h.p.instruments.functions.fixSettlement(0, expiry, h.latest_round()), RELAYER)
    h.send(h.p.vault.functions.settleExpired(a, ids["BTC-P50K"]), RELAYER)
    h.check_conservation()  # Carol's short put not settled yet
    h.send(h.p.vault.functions.settleExpired(addr(CAROL), ids["BTC-P50K"]), RELAYER)
    for key in KEYS:
        for perp in (ids["BTC-PERP"], ids["ETH-PERP"]):
            if perp in h.positions(addr(key)):
                h.send(h.p.vault.functions.settleFunding(addr(key), perp), RELAYER)
    h.check_settled_conservation()


def test_known_accounts_include_a_bidder_paid_only_by_a_socialised_loss(h: Harness) -> None:
    """I-1b's account set includes a bidder that never deposited and was paid only through a
    socialised loss (``LossSocialised``): the attacker machine found the books short by that payment."""
    h.deposit(ALICE, "USDC", 10_000 * USDC)
    a, b = addr(CAROL), addr(BOB)
    start(h, a, mtm=-535 * USDC, equity=-600 * USDC, mm=2_594 * USDC, im=3_000 * USDC)
    h.warp(252)
    h.refresh_prices()
    liq = h.p.liquidator.functions
    s0 = liq.auctionOf(a).call()
    f = liq.maxFraction(a).call() * 91 // 100
    worst = int(liq.quote(a, f).call()[0]) + 1_000 * USDC
    rc = h.send(liq.bid(a, f, worst, s0[3], h.proof(h.attestation(b, bid_action(b, a, s0[3], f, worst)))), BOB)
    [ev] = h.events(h.p.liquidator, "Bid", rc)
    assert ev["socialised"] > 0 and ev["fundDraw"] == 0
    assert b in h.known_accounts()
    h.check_conservation()


# ---------------------------------------------------------------------- stateful
INSTRUMENTS = ("BTC-PERP", "ETH-PERP", "BTC-FUT", "BTC-C60K", "BTC-P50K", "ETH-C3K")
TOKENS = {"USDC": (1, 10**11), "WBTC": (1, 2 * 10**8), "WETH": (1, 20 * 10**18)}
# A random reduction may leave dust below the minimum; an account in auction adds no risk.
TOLERATED = {"Vault_PositionTooSmall", "Vault_Frozen"}


class ProtocolMachine(RuleBasedStateMachine):
    """Random protocol activity by three accounts; I-1, I-2, I-3, I-17 after every step, I-7
    (which actions move nonces) and I-12 (fills never exceed orders) inside the rules, and the
    plain form of I-1 once everything is settled at the end."""

    h: ClassVar[Harness]
    #: Machines built and invariant checks made (one after the start, one after every step): their
    #: difference is the number of steps run, which hypothesis draws at or below the step count.
    built: ClassVar[int] = 0
    checks: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).built += 1
        self.snap = self.h.snapshot()

    def teardown(self) -> None:
        h = self.h
        try:
            for key in KEYS:
                for name in ("BTC-PERP", "ETH-PERP"):
                    if h.ids[name] in h.positions(addr(key)):
                        h.send(h.p.vault.functions.settleFunding(addr(key), h.ids[name]), RELAYER)
            h.check_settled_conservation()
        finally:
            h.revert_to(self.snap)

    # ------------------------------------------------------------------ helpers
    def nonces(self) -> tuple[int, ...]:
        return tuple(self.h.nonce(addr(k)) for k in KEYS)

    def price_of(self, name: str, bp: int) -> int:
        h = self.h
        kind, und, _, _ = h.p.instruments.functions.get(h.ids[name]).call()
        index = h.latest_prices()[und]
        if kind in (Kind.PERP, Kind.FUTURE):
            return max(index * (10_000 + bp) // 10_000 // TICK * TICK, TICK)
        premium = (abs(bp) + 1) * index // 10_000 // TICK * TICK + TICK
        return h.in_band(h.ids[name], premium)  # within the Exchange's no-arbitrage bounds

    # ------------------------------------------------------------------ rules
    @rule(payer=st.sampled_from(KEYS), owner=st.sampled_from(KEYS), sym=st.sampled_from(sorted(TOKENS)),
          frac=st.floats(0, 1))  # fmt: skip
    def deposit(self, payer: str, owner: str, sym: str, frac: float) -> None:
        lo, hi = TOKENS[sym]
        amount = lo + int((hi - lo) * frac)
        if self.h.token(sym).functions.balanceOf(addr(payer)).call() < amount:
            self.h.fund(payer, sym, hi)  # many large deposits can outrun the session's funding
        before = self.nonces()
        self.h.deposit(payer, sym, amount, account=addr(owner))
        assert self.nonces() == before, "I-7: a deposit moved a risk nonce"

    @rule(name=st.sampled_from(INSTRUMENTS), pair=st.permutations(KEYS).map(lambda p: p[:2]),
          maker_buys=st.booleans(), lots=st.integers(10, 3_000), extra=st.integers(0, 1_000),
          split=st.booleans(), bp=st.integers(-300, 300))  # fmt: skip
    def trade(self, name: str, pair: tuple[str, str], maker_buys: bool, lots: int, extra: int,
              split: bool, bp: int) -> None:  # fmt: skip
        h = self.h
        maker_key, taker_key = pair
        iid, price = h.ids[name], self.price_of(name, bp)
        size = lots * LOT
        maker = h.order(maker_key, iid, maker_buys, size + extra * LOT, price, nonce=next_nonce(), maker=True)
        taker = h.order(taker_key, iid, not maker_buys, size, price, nonce=next_nonce())
        parts = [size // 2 // LOT * LOT, size - size // 2 // LOT * LOT] if split and lots >= 20 else [size]
        mh = h.p.exchange.functions.orderHash(maker.as_tuple()).call()
        done = 0
        kind = Kind(h.p.instruments.functions.get(iid).call()[0])
        for part in parts:
            before = self.nonces()
            held = {k: h.positions(addr(k)).get(iid, (0, 0, 0)) for k in pair}
            try:
                h.trade(maker_key, maker, taker_key, taker, part)
            except ContractRevertError as exc:
                assert exc.error_name in TOLERATED, exc
                note(f"tolerated {exc}")
                return
            done += part
            after = self.nonces()
            moved = {k for k, x, y in zip(KEYS, before, after, strict=True) if y != x}
            assert moved == {maker_key, taker_key} and all(
                y == x + 1 for x, y in zip(before, after, strict=True) if y != x
            ), "I-7: a fill bumps exactly its two accounts' nonces by one"
            assert h.p.exchange.functions.filled(mh).call() == done <= maker.size, "I-12"
            for k, delta in ((maker_key, part if maker_buys else -part), (taker_key, -part if maker_buys else part)):
                size, cost, _ = held[k]
                want = rules.trade(kind, size, cost, delta, price)[:2]  # I-27: the contract's _trade, to the unit
                assert h.positions(addr(k)).get(iid, (0, 0, 0))[:2] == want, f"I-27: {k} after a fill"

    @rule(key=st.sampled_from(KEYS), sym=st.sampled_from(sorted(TOKENS)), pct=st.integers(1, 100))
    def withdraw(self, key: str, sym: str, pct: int) -> None:
        h = self.h
        a, token = addr(key), h.token(sym).address
        cash = h.cash(a)
        held = max(cash, 0) if sym == "USDC" else h.p.vault.functions.collateralOf(a, token).call()
        amount = held * pct // 100
        if amount == 0:
            return
        proof = h.withdraw_proof(a, token, amount) if h.positions(a) or cash < 0 else empty_proof()
        nonce = h.nonce(a)
        try:
            h.send(h.p.vault.functions.withdraw(token, amount, a, proof), key)
        except ContractRevertError as exc:
            if exc.error_name == "Vault_Frozen":
                assert h.p.liquidator.functions.auctionOf(a).call()[0], "frozen outside an auction"
                return
            # Cash is a claim on the Vault, not on particular tokens: while others' cash is
            # negative (losses not yet paid in), all positive cash cannot leave at once.
            vault_bal = h.token(sym).functions.balanceOf(h.p.vault.address).call()
            assert exc.error_name == "ERC20InsufficientBalance" and amount > vault_bal, exc
            note(f"vault short of {sym}: {exc}")
            return
        assert h.nonce(a) == nonce + 1
        if sym == "USDC":
            assert h.cash(a) >= 0, "I-8"

    @rule(bps=st.tuples(st.integers(-1_500, 1_500), st.integers(-1_500, 1_500)))
    def post_prices(self, bps: tuple[int, int]) -> None:
        h = self.h
        old = h.latest_prices()
        new = tuple(
            max(p * (10_000 + bp) // 10_000 // TICK * TICK, 1_000 * TICK) for p, bp in zip(old, bps, strict=True)
        )
        last = int(h.p.feed.functions.latestRound().call()[1])
        if h.now() <= last:
            h.warp(last - h.now() + 1)
        ts = h.now()
        # F-5: a big move is judged against the previous round and the reference round (the price a window
        # earlier, or the last all-signer round); an all-signer round always goes through.
        ref = int(h.p.feed.functions.referenceRound(ts).call())
        anchor = tuple(int(h.p.feed.functions.priceAt(ref, i).call()) for i in range(len(old)))
        big = any(-(-abs(n - o) * WAD // o) > WAD // 10
                  for base in (old, anchor) for o, n in zip(base, new, strict=True))  # fmt: skip
        before = self.nonces()
        h.post_raw(new, h.price_signers if big else h.price_signers[1:], timestamp=ts)
        assert self.nonces() == before

    @rule(seconds=st.integers(60, 3_000))
    def accrue_funding(self, seconds: int) -> None:
        h = self.h
        before = self.nonces()
        h.warp(seconds)
        h.refresh_prices()
        for name in ("BTC-PERP", "ETH-PERP"):
            h.send(h.p.instruments.functions.updateFunding(h.ids[name]), RELAYER)
        assert self.nonces() == before, "I-7: funding moved a risk nonce"

    @rule(key=st.sampled_from(KEYS), name=st.sampled_from(("BTC-PERP", "ETH-PERP")))
    def settle_funding(self, key: str, name: str) -> None:
        h = self.h
        if h.ids[name] not in h.positions(addr(key)):
            return
        before = self.nonces()
        h.send(h.p.vault.functions.settleFunding(addr(key), h.ids[name]), RELAYER)
        assert self.nonces() == before, "I-7: settling funding moved a risk nonce"

    @rule(victim=st.sampled_from(KEYS), bidder=st.sampled_from(KEYS), mtm=st.integers(-20_000, 60_000),
          gap=st.integers(1, 20_000), mm=st.integers(1_000, 40_000), share=st.integers(1, 100),
          wait=st.integers(0, 20_000))  # fmt: skip
    def liquidate(self, victim: str, bidder: str, mtm: int, gap: int, mm: int, share: int, wait: int) -> None:
        """Start an auction on a (signed) breached status leaf if none runs, then bid a share of the
        largest fraction after ``wait`` seconds: I-20..I-24 checked on every bid."""
        h, a, b = self.h, addr(victim), addr(bidder)
        if a == b:
            return
        liq = h.p.liquidator.functions
        if not liq.auctionOf(a).call()[0]:
            nonce = h.nonce(a)
            start(h, a, mtm=mtm * USDC, equity=(mm - gap) * USDC, mm=mm * USDC, im=mm * USDC * 5 // 4)
            assert h.nonce(a) == nonce + 1, "I-23: a start bumps the nonce"
        h.warp(wait)
        h.refresh_prices()
        if liq.auctionOf(b).call()[0]:  # a bidder in its own auction adds no risk
            return
        if liq.auctionOf(a).call()[5] != h.nonce(a):  # the account reduced a position: refresh first
            leaf = status_leaf(h, a, equity=(mm - gap) * USDC, mm=mm * USDC, im=mm * USDC * 5 // 4,
                               mtm_equity=mtm * USDC)  # fmt: skip
            tree = post_leaves(h, [leaf, status_leaf(h, addr(RELAYER))])
            h.send(liq.refresh(a, leaf.as_tuple(), tree.proof(a)), RELAYER)
        s0 = liq.auctionOf(a).call()
        fmax = liq.maxFraction(a).call()
        if fmax == 0:
            return
        f = max(fmax * share // 100, 1)
        price = int(liq.quote(a, f).call()[0])
        worst = price + 1_000 * USDC
        att = h.attestation(b, bid_action(b, a, s0[3], f, worst))
        rc = h.send(liq.bid(a, f, worst, s0[3], h.proof(att)), bidder)
        [ev] = h.events(h.p.liquidator, "Bid", rc)
        if ev["price"] < 0:
            unrecovered = sum(e["amount"] for e in h.events(h.p.liquidator, "LossUnrecovered", rc))
            assert ev["fundDraw"] + ev["socialised"] + unrecovered == -ev["price"], "I-22: bad debt identity"
        s1 = liq.auctionOf(a).call()
        if s1[0] and not s0[1]:  # still running, solvent: E/M not worse on the snapshot (I-20)
            assert s1[7] * s0[8] >= s0[7] * s1[8], "I-20: a bid worsened the margin ratio"
        note(f"bid {f} of {a} at {ev['price']} (fee {ev['fee']}, draw {ev['fundDraw']}, soc {ev['socialised']})")

    # ------------------------------------------------------------------ invariants
    @invariant()
    def books_balance(self) -> None:
        type(self).checks += 1
        self.h.check_conservation()

    @classmethod
    def steps_run(cls) -> int:
        return cls.checks - cls.built


def _run_machine(h: Harness, examples: int, steps: int, machine: type[ProtocolMachine] = ProtocolMachine) -> None:
    machine.h = h
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]),
    )  # fmt: skip


def test_random_protocol_activity_keeps_invariants(h: Harness) -> None:
    """I-1, I-2, I-3, I-5, I-7, I-8, I-12, I-17 under random deposits, trades (every instrument
    kind, partial fills on the LOT grid), withdrawals with attestations, price rounds (big moves
    with every signer), funding accrual and settlement; each example starts from the session's
    snapshot and is reverted afterwards."""
    _run_machine(h, examples=15, steps=12)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_long_random_protocol_activity_keeps_invariants(h: Harness) -> None:
    """The same invariants over many more and longer random histories (opt-in: PMSIM_SLOW=1;
    about five minutes)."""
    _run_machine(h, examples=80, steps=25)


# ---------------------------------------------------------------------- the attacker's moves (issue 8)
PERPS = ("BTC-PERP", "ETH-PERP")


class AttackerMachine(ProtocolMachine):
    """:class:`ProtocolMachine` with the moves of the issue-8 attacker review mixed into honest
    activity; each move checks that its exploit stays closed, and every invariant of the honest
    machine still holds after it."""

    @rule(name=st.sampled_from(PERPS), blocks=st.integers(2, 20), gap=st.sampled_from((1, 2, 12)))
    def poke_funding_every_block(self, name: str, blocks: int, gap: int) -> None:
        """F-2: accrual poked every block loses nothing: every accrual since listing is exactly
        ``rules.funding_accrual`` of the decaying premium, with the sub-TICK remainder carried."""
        h = self.h
        perp = h.ids[name]
        h.refresh_prices()
        before = self.nonces()
        for _ in range(blocks):
            h.warp(gap)
            h.send(h.p.instruments.functions.updateFunding(perp), RELAYER)
        assert self.nonces() == before, "I-7: funding moved a risk nonce"
        check_accruals(h, perp)

    @rule(steps=st.integers(2, 8), bp=st.integers(200, 1_200), gap=st.integers(1, 20), down=st.booleans(),
          which=st.integers(0, 1))  # fmt: skip
    def stepwise_price_rounds(self, steps: int, bp: int, gap: int, down: bool, which: int) -> None:
        """F-5: a quorum short of every signer walks one underlying in steps of ``bp`` a few seconds apart.
        However many steps land, no accepted price is further than maxMove from the price the burst
        started against (the price a window earlier), and each refusal names the rule."""
        h = self.h
        feed = h.p.feed.functions
        max_move, window = int(feed.maxMove().call()), int(feed.MOVE_WINDOW().call())
        # Start a window after the latest round: it is then the reference of every step of the burst
        # (which lasts less than a window), so all of them answer to one anchor price.
        h.warp(max(int(feed.latestRound().call()[1]) + window + 1 - h.now(), 1))
        anchor = int(h.latest_prices()[which])
        before = self.nonces()
        for _ in range(steps):
            prices = list(h.latest_prices())
            prices[which] = max(prices[which] * (10_000 + (-bp if down else bp)) // 10_000 // TICK * TICK, 1_000 * TICK)
            h.warp(gap)
            try:
                h.post_raw(tuple(prices), h.price_signers[1:], timestamp=h.now())
            except ContractRevertError as exc:
                assert exc.error_name == "PriceFeed_MoveNeedsAllSigners", exc
                event("stepwise rounds: a step refused without every signer")
                break
            moved = abs(prices[which] - anchor) * WAD // anchor
            assert moved <= max_move, f"F-5: a quorum moved the price {moved / WAD:.2%} from a window earlier"
            event("stepwise rounds: a step accepted within maxMove of the window's price")
        assert self.nonces() == before

    def _index(self, iid: int) -> int:
        h = self.h
        und = h.p.instruments.functions.get(iid).call()[1]
        return int(h.latest_prices()[und])

    @rule(name=st.sampled_from(("BTC-PERP", "ETH-PERP", "BTC-FUT")), pair=st.permutations(KEYS).map(lambda p: p[:2]),
          bp=st.integers(-3_000, 3_000), lots=st.integers(10, 200))  # fmt: skip
    def wash_trade(self, name: str, pair: tuple[str, str], bp: int, lots: int) -> None:
        """F-3 and the bands: two accounts of one attacker trade with each other off the index. Beyond the
        linear band the fill is refused; within it, a perp's funding premium is clamped to the cap."""
        h = self.h
        iid = h.ids[name]
        h.refresh_prices()
        index = self._index(iid)
        price = max(index * (10_000 + bp) // 10_000 // TICK * TICK, TICK)
        linear = int(h.p.exchange.functions.bands().call()[0])
        outside = abs(price - index) * WAD > linear * index
        try:
            rc = h.fill(pair[0], pair[1], iid, lots * LOT, price)
        except ContractRevertError as exc:
            if outside:
                assert exc.error_name == "Exchange_PriceOutsideBand", exc
                event("wash trade: refused outside the band")
                return
            assert exc.error_name in TOLERATED, exc
            return
        assert not outside, f"a wash trade {bp} bp off the index filled"
        event("wash trade: filled within the band")
        rate = OnchainParams().max_funding_rate  # the machine never changes the parameters
        for ev in h.events(h.p.instruments, "FundingMarkSet", rc):  # F-3: the mark's premium is clamped
            assert ev["premium"] == rules.clamp_premium(price - ev["indexPrice"], ev["indexPrice"], rate), ev

    @rule(pair=st.permutations(KEYS).map(lambda p: p[:2]), name=st.sampled_from(("BTC-PERP", "BTC-FUT")),
          bp=st.integers(-600, 600), lots=st.integers(10, 1_000), victim_buys=st.booleans())  # fmt: skip
    def operator_off_market(self, pair: tuple[str, str], name: str, bp: int, lots: int, victim_buys: bool) -> None:
        """F-4: an operator fills its principal against its own account off the index. Beyond the operator
        band (to the principal's detriment) the fill is refused; within it the principal loses at most
        band · notional plus its fee, at the index."""
        h = self.h
        victim, operator = pair
        v, o = addr(victim), addr(operator)
        iid = h.ids[name]
        h.refresh_prices()
        index = self._index(iid)
        price = max(index * (10_000 + bp) // 10_000 // TICK * TICK, TICK)
        band = int(h.p.exchange.functions.bands().call()[2])
        worse = (price - index) if victim_buys else (index - price)  # what the principal overpays per unit
        outside = worse * WAD > band * index
        h.send(h.p.exchange.functions.setOperator(o, True), victim)
        size = lots * LOT
        if iid in h.positions(v) and name == "BTC-PERP":  # funding owed so far is not the operator's doing
            h.send(h.p.vault.functions.settleFunding(v, iid), RELAYER)
        before = (h.cash(v), h.positions(v).get(iid, (0, 0, 0)))
        mine = h.order(operator, iid, not victim_buys, size, price, nonce=next_nonce(), maker=True)
        theirs = h.order(operator, iid, victim_buys, size, price, nonce=next_nonce(), account=v)
        try:
            h.trade(operator, mine, operator, theirs, size)
        except ContractRevertError as exc:
            if outside:
                assert exc.error_name == "Exchange_OperatorPriceOutsideBand", exc
                event("operator: refused beyond the operator band")
            else:
                assert exc.error_name in TOLERATED, exc
            return
        finally:
            h.send(h.p.exchange.functions.setOperator(o, False), victim)
        assert not outside, f"an operator filled its principal {bp} bp off the index"
        event("operator: filled within the operator band")
        cash, (size1, cost1, _) = h.cash(v), h.positions(v).get(iid, (0, 0, 0))
        (cash0, (size0, cost0, _)) = before
        at_index = (cash0 + rules.value(size0, index) - cost0) - (cash + rules.value(size1, index) - cost1)
        _, taker_fee = h.fees(size, price)
        # plus the funding of the few seconds between the settlement above and the fill, at the cap
        drift = rules.value(abs(size0) + size, index * OnchainParams().max_funding_rate // WAD * 60 // FUNDING_PERIOD)
        bound = rules.value(size, index) * band // WAD + taker_fee + drift + 1
        assert at_index <= bound, f"F-4: the principal lost {at_index} > {bound} quote units at the index"


def test_attacker_moves_keep_invariants(h: Harness) -> None:
    """The attacker's moves of issue 8 among random honest activity: every exploit stays closed and
    every invariant of the honest machine holds."""
    _run_machine(h, examples=4, steps=10, machine=AttackerMachine)


@pytest.mark.slow
@pytest.mark.timeout(10800)
@pytest.mark.parametrize("half", [1, 2])
def test_long_attacker_activity_keeps_invariants(h: Harness, half: int) -> None:
    """The attacker machine over at least 10,000 steps, counted: two halves of at least 5,000 steps each,
    in batches of 40 histories of up to 25 steps (hypothesis draws each history's length, so batches run
    until the half's count is reached), so that two workers share the run (opt-in: PMSIM_SLOW=1; about
    an hour on two cores). Each half prints the steps and histories it ran (``pytest -rP`` shows it)."""
    start_steps, start_built = AttackerMachine.steps_run(), AttackerMachine.built
    while AttackerMachine.steps_run() - start_steps < LONG_ATTACKER_STEPS // 2:
        _run_machine(h, examples=40, steps=25, machine=AttackerMachine)
    steps, histories = AttackerMachine.steps_run() - start_steps, AttackerMachine.built - start_built
    assert steps >= LONG_ATTACKER_STEPS // 2
    print(f"attacker machine, half {half}: {steps} steps in {histories} histories, every invariant held")


LONG_ATTACKER_STEPS = 10_000
