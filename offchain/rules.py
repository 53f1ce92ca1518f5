"""One home for the contract rules that move value: exact integer mirrors of the Solidity.

Every function here reproduces, to the unit, a rule the contracts enforce; the engine, the indexer,
the keeper, the tests and the simulator's twin import it from here and nowhere else. Pure Python
integers (no numpy, no chain): a layer below ``risk`` and ``chain``.

Units: quote amounts are 6-decimal integers; sizes and prices 1e18-scaled on the LOT and TICK grids;
fractions and rates WAD (1e18); the socialised-loss index is LOSS_SCALE (1e27) per unit of cash.

Rounding follows the contracts, always in favour of solvency: fees and margins up, what an account
or a bidder receives down.
"""

from __future__ import annotations

from dataclasses import dataclass

from offchain.protocol import FUNDING_DECAY, FUNDING_PERIOD, LOT, TICK, VALUE_DIVISOR, WAD, Kind

LOSS_SCALE = 10**27


# ---------------------------------------------------------------------- integer helpers (Solidity semantics)
def div_trunc(a: int, b: int) -> int:
    """``a / b`` truncated towards zero, as Solidity's signed division."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def mul_div_down(x: int, num: int, den: int) -> int:
    """``floor(x · num / den)`` for x, num ≥ 0 (OpenZeppelin ``Math.mulDiv``)."""
    return x * num // den


def mul_div_up(x: int, num: int, den: int) -> int:
    """``ceil(x · num / den)`` for x, num ≥ 0 (``Math.Rounding.Ceil``)."""
    return -(-x * num // den)


def mul_div_ceil_signed(x: int, num: int, den: int) -> int:
    """``SignedMath.mulDivCeil``: x · num / den rounded towards +infinity."""
    return mul_div_up(x, num, den) if x >= 0 else -mul_div_down(-x, num, den)


def mul_div_floor_signed(x: int, num: int, den: int) -> int:
    """``SignedMath.mulDivFloor``: x · num / den rounded towards −infinity."""
    return mul_div_down(x, num, den) if x >= 0 else -mul_div_up(-x, num, den)


def value(size: int, price: int) -> int:
    """``SignedMath.value``: size · price / 1e30, truncated towards zero (exact on the grids)."""
    return div_trunc(size * price, VALUE_DIVISOR)


# ---------------------------------------------------------------------- trading
def fee(size: int, price: int, rate: int) -> int:
    """A maker or taker fee: ``ceil(|size| · price / 1e30 · rate / WAD)`` (``Exchange``)."""
    return mul_div_up(abs(value(size, price)), rate, WAD)


def fee_split(fees: int, fund_share: int) -> tuple[int, int]:
    """``(to the insurance fund, to the fee collector)``: the fund's share rounds down (``Vault.applyTrade``)."""
    to_fund = mul_div_down(fees, fund_share, WAD)
    return to_fund, fees - to_fund


def trade(kind: Kind, size: int, cost_basis: int, delta: int, price: int) -> tuple[int, int, int]:
    """``Vault._trade``: the position after a fill of ``delta`` at ``price``.

    Returns ``(new size, new cost basis, cash change before fees)``. Options are premium-settled (cost
    basis 0); a reduction removes cost pro rata, rounded towards +infinity (realised cash rounds
    against the account); a flip realises the whole old position.
    """
    v = value(delta, price)
    new_size = size + delta
    if kind in (Kind.CALL, Kind.PUT):
        return new_size, cost_basis, -v
    if size == 0 or (size > 0) == (delta > 0):
        return new_size, cost_basis + v, 0
    if abs(delta) <= abs(size):
        removed = mul_div_ceil_signed(cost_basis, abs(delta), abs(size))
        return new_size, cost_basis - removed, -v - removed
    v_close = value(-size, price)
    return new_size, v - v_close, -v_close - cost_basis


def clamp_premium(premium: int, index: int, max_funding_rate: int) -> int:
    """``Instruments._clamp``: a premium within ±maxFundingRate · index."""
    cap = index * max_funding_rate // WAD
    return max(-cap, min(cap, premium))


def funding_accrual(premium: int, mark_time: int, last_update: int, now: int, carry: int) -> tuple[int, int]:
    """``Instruments._accrue``: ``(cumulative delta, new carry)`` for a clamped ``premium`` traded at
    ``mark_time``, from ``last_update`` to ``now``.

    Notes
    -----
    With d = FUNDING_DECAY, a = min(last_update − mark_time, d), b = min(now − mark_time, d):
    ``acc = premium · (2d(b − a) − (b² − a²)) + carry``; the delta is ``trunc(acc / unit)`` TICKs with
    ``unit = 2d · FUNDING_PERIOD · TICK``, and the rest is carried.
    """
    if now == last_update:
        return 0, carry
    d = FUNDING_DECAY
    a, b = min(last_update - mark_time, d), min(now - mark_time, d)
    acc = premium * (2 * d * (b - a) - (b * b - a * a)) + carry
    unit = 2 * d * FUNDING_PERIOD * TICK
    ticks = div_trunc(acc, unit)
    return ticks * TICK, acc - ticks * unit


def funding_payment(size: int, cumulative: int, snapshot: int) -> int:
    """``Vault._settleFunding``: what the position pays (negative: receives) since its snapshot."""
    return div_trunc(size * (cumulative - snapshot), VALUE_DIVISOR)


def settlement_payoff(kind: Kind, size: int, strike: int, price: int, cost_basis: int) -> int:
    """``Vault._payoff``: the cash an expired future or option settles to at ``price``."""
    if kind == Kind.FUTURE:
        return value(size, price) - cost_basis
    if kind == Kind.CALL:
        return value(size, max(price - strike, 0))
    if kind == Kind.PUT:
        return value(size, max(strike - price, 0))
    raise ValueError("perpetuals do not expire")


# ---------------------------------------------------------------------- attestations and liquidatability
def credited_equity(equity: int, credit_checkpoint: int, credit: int) -> int:
    """``RiskOracle``: an attested or leaf equity plus the deposit credit earned since its checkpoint."""
    return equity + (credit - credit_checkpoint)


def reduces(old: int, delta: int) -> bool:
    """``Vault._requireTradeMargin``: a fill side that only reduces an open position. Only the
    emergency close (no attestation, standard maintenance margin) still judges by position (F-7)."""
    return old != 0 and (old > 0) != (delta > 0) and abs(delta) <= abs(old)


def reduces_im(im_before: int, im_after: int) -> bool:
    """``ActionHash.trade(..., reducesIM)``: the engine flags a fill that lowers the account's portfolio
    initial margin (attested quote units, after < before); the Vault then asks maintenance margin and
    allows it while paused or frozen. Closing the hedge leg of a hedged book raises IM: not flagged."""
    return im_after < im_before


def feed_fresh(fresh_until: int, now: int) -> bool:
    """``RiskOracle._checkPriceRound``: the feed is usable while ``now <= feedFreshUntil`` (latest round
    time + heartbeat); after it no attestation, root or attested fill verifies (F-6)."""
    return now <= fresh_until


# ---------------------------------------------------------------------- amounts (F-10)
MAX_AMOUNT = 2**128 - 1  # ``VaultBase.MAX_AMOUNT``: the largest deposit or withdrawal
WITHDRAW_ALL = 2**256 - 1  # ``VaultBase.WITHDRAW_ALL``: withdraw the whole balance


def whole_quote_balance(effective_cash: int, funding_payments: list[int]) -> int:
    """``Vault._wholeBalance`` for the quote token: what ``withdraw(quote, WITHDRAW_ALL, …)`` takes, the
    cash net of socialised loss after every perpetual's funding is settled (payments: + = owes)."""
    return max(effective_cash - sum(funding_payments), 0)


def check_amount(amount: int) -> bool:
    """``VaultBase._checkAmount``: 0 < amount <= MAX_AMOUNT."""
    return 0 < amount <= MAX_AMOUNT


def covers(margin_equity: int, required: int, credit_checkpoint: int, credit: int) -> bool:
    """``RiskOracle._requireMargin``: the credited margin equity covers ``required`` (IM for what adds
    risk or takes value out, MM for a pure reduction)."""
    return credited_equity(margin_equity, credit_checkpoint, credit) >= required


def liquidatable(margin_equity: int, maintenance_margin: int, credit_checkpoint: int, credit: int) -> bool:
    """``Liquidator._open``: a status result proves the account liquidatable when its credited margin
    equity is below its maintenance margin."""
    return not covers(margin_equity, maintenance_margin, credit_checkpoint, credit)


# ---------------------------------------------------------------------- liquidation auctions
@dataclass(frozen=True)
class AuctionParams:
    """The fields of ``LiquidationParams`` the auction rules read (WAD, seconds, quote units)."""

    start_discount: int
    cutoff_discount: int
    fast_length: int
    slow_length: int
    insolvent_length: int
    buffer_ratio: int
    liquidation_fee: int
    small_portfolio: int


@dataclass(frozen=True)
class AuctionState:
    """An auction's snapshot (``Auction`` in ILiquidator.sol), quote units."""

    started_at: int
    insolvent: bool
    mtm_equity: int
    equity: int
    maintenance_margin: int
    initial_margin: int
    buffer_margin: int


def buffer_margin(equity: int, maintenance_margin: int, buffer_ratio: int) -> int:
    """``B = M + ceil(bufferRatio · max(M − E, 0))``."""
    distance = max(maintenance_margin - equity, 0)
    return maintenance_margin + mul_div_up(distance, buffer_ratio, WAD)


def open_auction(now: int, mtm: int, equity: int, mm: int, im: int, p: AuctionParams) -> AuctionState:
    """The snapshot ``Liquidator._open`` writes (insolvent when mark-to-market equity is negative)."""
    return AuctionState(now, mtm < 0, mtm, equity, mm, im, buffer_margin(equity, mm, p.buffer_ratio))


def refresh_auction(a: AuctionState, now: int, mtm: int, equity: int, mm: int, im: int,
                    p: AuctionParams) -> AuctionState | None:  # fmt: skip
    """The snapshot ``Liquidator.refresh`` writes from a newer status leaf (``_update``): None when the
    account is back at or above maintenance margin (the auction ends); else the new figures, the clock
    kept unless the auction changes between solvent and insolvent (``_snapshot`` without restart)."""
    if equity >= mm:
        return None
    insolvent = mtm < 0
    started = a.started_at if insolvent == a.insolvent else now
    return AuctionState(started, insolvent, mtm, equity, mm, im, buffer_margin(equity, mm, p.buffer_ratio))


def discount(a: AuctionState, now: int, p: AuctionParams) -> int:
    """d(t), the WAD share of mark-to-market a solvent bid pays: start → cutoff over the fast phase,
    then → 0 over the slow phase (integer division as ``Liquidator._discount``)."""
    t = now - a.started_at
    if t < p.fast_length:
        return p.start_discount - (p.start_discount - p.cutoff_discount) * t // p.fast_length
    t -= p.fast_length
    if t >= p.slow_length:
        return 0
    return p.cutoff_discount - p.cutoff_discount * t // p.slow_length


def max_fraction(a: AuctionState, now: int, p: AuctionParams) -> int:
    """``f_max = (B − E) / (B − E + V·d)`` rounded up (whole portfolio when insolvent or small)."""
    if a.insolvent or a.mtm_equity < p.small_portfolio:
        return WAD
    if a.equity >= a.buffer_margin:
        return 0
    gap = a.buffer_margin - a.equity
    den = gap + mul_div_down(a.mtm_equity, discount(a, now, p), WAD)
    return min(WAD, mul_div_up(gap, WAD, den))


def bid_price(a: AuctionState, fraction: int, now: int, p: AuctionParams) -> tuple[int, int]:
    """``(price, fee)`` of a bid for ``fraction`` (``Liquidator._price``).

    Solvent: ``price = ceil(f·V·d)``, ``fee = ceil(rate · (floor(f·V) − price))`` paid to the fund.
    Insolvent: ``price = −floor(f · (|V| + M · min(t, T) / T))``, paid to the bidder by the fund (then
    the loss index).
    """
    if not a.insolvent:
        v = a.mtm_equity
        paid = mul_div_up(v, fraction * discount(a, now, p), WAD * WAD)
        gain = max(mul_div_down(v, fraction, WAD) - paid, 0)
        return paid, mul_div_up(gain, p.liquidation_fee, WAD)
    elapsed = min(now - a.started_at, p.insolvent_length)
    deficit = -a.mtm_equity + mul_div_down(a.maintenance_margin, elapsed, p.insolvent_length)
    return -mul_div_down(deficit, fraction, WAD), 0


def credited_auction(a: AuctionState, extra_credit: int, now: int) -> AuctionState:
    """``Liquidator._credited``: deposits made since the snapshot raise both equities; an insolvent
    auction they make solvent restarts its clock."""
    if extra_credit == 0:
        return a
    mtm, equity = a.mtm_equity + extra_credit, a.equity + extra_credit
    insolvent, started = a.insolvent, a.started_at
    if insolvent and mtm >= 0:
        insolvent, started = False, now
    return AuctionState(started, insolvent, mtm, equity, a.maintenance_margin, a.initial_margin, a.buffer_margin)


def _scale_down(x: int, keep: int) -> int:
    return mul_div_down(x, keep, WAD) if x >= 0 else -mul_div_up(-x, keep, WAD)


def after_bid(a: AuctionState, fraction: int, price: int, took_max: bool = False) -> AuctionState | None:
    """The snapshot after a bid (``Liquidator._afterBid``); None when the auction ends: emptied, or
    solvent and either back above its buffer margin or the bid took the largest fraction."""
    if fraction == WAD:
        return None
    keep = WAD - fraction
    received = max(price, 0)
    nxt = AuctionState(
        a.started_at, a.insolvent,
        _scale_down(a.mtm_equity, keep) + received, _scale_down(a.equity, keep) + received,
        mul_div_up(a.maintenance_margin, keep, WAD), mul_div_up(a.initial_margin, keep, WAD),
        mul_div_up(a.buffer_margin, keep, WAD),
    )  # fmt: skip
    if not nxt.insolvent and (took_max or nxt.equity >= nxt.buffer_margin):
        return None
    return nxt


def moved_size(size: int, fraction: int) -> int:
    """``Vault._movePosition``: the share of a position a bid takes, towards zero on the LOT grid."""
    if fraction == WAD:
        return size
    return div_trunc(div_trunc(size * fraction, WAD), LOT) * LOT


def moved_cost(cost_basis: int, size: int, moved: int, fraction: int) -> int:
    """The cost basis moving with ``moved`` of ``size`` (all of it for the whole position)."""
    if fraction == WAD:
        return cost_basis
    return mul_div_ceil_signed(cost_basis, abs(moved), abs(size))


def moved_collateral(balance: int, fraction: int) -> int:
    """The collateral a bid takes, rounded down."""
    return mul_div_down(balance, fraction, WAD)


def moved_cash(cash: int, fraction: int) -> int:
    """The cash a bid takes, rounded towards −infinity."""
    return mul_div_floor_signed(cash, fraction, WAD)


def fund_draw(fund_cash: int, owed: int) -> tuple[int, int]:
    """``(paid by the fund, left to socialise)`` of an insolvent bid's payment."""
    draw = min(max(fund_cash, 0), owed)
    return draw, owed - draw


# ---------------------------------------------------------------------- socialised loss
def socialise(loss: int, positive_cash: int, pending_loss: int, loss_index: int) -> tuple[int, int]:
    """``Vault.socializeLoss``: ``(amount socialised, new loss index)``.

    Notes
    -----
    The index is the compounded share of positive cash lost, so that a second loss charges each balance on
    what the first one left: with base = positive cash not already owed and s = LOSS_SCALE − index, the
    surviving share becomes ``floor(s · (base − loss) / base)``. At most ``base − 1`` is socialised.
    """
    base = positive_cash - pending_loss
    amount = 0 if base <= 0 else min(loss, base - 1)
    if amount == 0:
        return 0, loss_index
    return amount, LOSS_SCALE - mul_div_down(LOSS_SCALE - loss_index, base - amount, base)


def pending_charge(cash: int, snapshot: int, loss_index: int) -> int:
    """What a positive balance last touched at ``snapshot`` has lost by ``loss_index``
    (``Vault._pendingCharge``): ``cash − floor(cash · (S − index) / (S − snapshot))``."""
    if cash <= 0 or snapshot == loss_index:
        return 0
    return cash - mul_div_down(cash, LOSS_SCALE - loss_index, LOSS_SCALE - snapshot)


def effective_cash(cash: int, snapshot: int, loss_index: int) -> int:
    """Cash net of the socialised loss not yet charged to it (``Vault.cashOf``)."""
    return cash - pending_charge(cash, snapshot, loss_index)


# ---------------------------------------------------------------------- price bands (Exchange._checkBand)
def price_band(kind: Kind, index: int, strike: int, linear_band: int) -> tuple[int, int]:
    """The fill prices ``[low, high]`` the Exchange accepts against the underlying's index.

    Notes
    -----
    With :math:`w = \\lfloor S \\cdot b / 10^{18} \\rfloor` (b = ``bands.linear``): perpetuals and
    futures fill in :math:`[S - w, S + w]`; a call in :math:`[\\max(0, S - w - K), S + w]` and a put in
    :math:`[\\max(0, K - S - w), K]`: the no-arbitrage bounds (r = 0) for any spot in the band.
    """
    width = index * linear_band // WAD
    low, high = index - width, index + width
    if kind == Kind.CALL:
        return (low - strike if low > strike else 0), high
    if kind == Kind.PUT:
        return (strike - high if high < strike else 0), strike
    return low, high



# ---------------------------------------------------------------------- deposits, feed and settlement
def collateral_credit(amount: int, price: int, decimals: int, haircut: int) -> int:
    """``Vault._collateralCredit``: the deposit credit of ``amount`` token units of a volatile collateral
    at the latest ``price`` (1e18), its haircut value in quote units, rounded down.

    Notes
    -----
    ``usd = floor(amount · price / 10^decimals)`` (1e18), then ``floor(floor(usd · (WAD − haircut) / WAD)
    / 1e12)``. Zero while the feed is stale or has no round (the caller passes no price then).
    """
    usd = amount * price // 10**decimals
    return mul_div_down(usd, WAD - haircut, WAD) // 10**12


def rel_move(old: int, new: int) -> int:
    """``PriceFeed._relMove``: ``ceil(|new − old| · WAD / old)``, the relative move of a price (WAD)."""
    return mul_div_up(abs(new - old), WAD, old)


def settlement_price(round_price: int) -> int:
    """``Instruments.fixSettlement``: the first round's price after the expiry, down to the TICK grid."""
    return round_price - round_price % TICK
