"""On-chain risk parameters and the ``paramsHash`` mirror of ``RiskParams._commit``."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from eth_abi import encode
from eth_utils import keccak

PARAMS_ABI = "(uint64,uint64,uint64,uint64,uint64,uint64,uint128,uint64)"
LIQUIDATION_PARAMS_ABI = "(uint64,uint64,uint32,uint32,uint32,uint32,uint64,uint64,uint128,uint64,uint64,uint64)"
COLLATERALS_ABI = "(address,uint8,uint64)[]"
WAD = 10**18


@dataclass(frozen=True)
class OnchainParams:
    """Mirror of the ``Params`` struct (WAD fractions, seconds, 1e18 sizes)."""

    attestation_max_age: int = 300
    price_tolerance: int = WAD // 100  # 1 %
    maker_fee: int = 2 * WAD // 10_000  # 2 bp
    taker_fee: int = 5 * WAD // 10_000  # 5 bp
    max_funding_rate: int = 75 * WAD // 100_000  # 0.075 % per 8 h
    max_positions: int = 64
    min_position_size: int = 10**16  # 0.01 unit
    fund_fee_share: int = WAD // 4  # 25 % of trading fees feed the insurance fund

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


@dataclass(frozen=True)
class LiquidationParams:
    """Mirror of the ``LiquidationParams`` struct. Defaults: Derive v2's mainnet auction (95 % → 70 % of
    mark-to-market over 15 minutes, then → 0 over 12 hours; insolvent auctions over 60 minutes; 15 %
    buffer; a 10 % fee on the bidder's discount gain), emergency mode after an hour without a root."""

    start_discount: int = 95 * WAD // 100
    cutoff_discount: int = 70 * WAD // 100
    fast_length: int = 15 * 60
    slow_length: int = 12 * 3600
    insolvent_length: int = 60 * 60
    emergency_delay: int = 60 * 60
    buffer_ratio: int = 15 * WAD // 100
    liquidation_fee: int = WAD // 10
    small_portfolio: int = 1_000 * 10**6  # 1,000 USD in quote units
    emergency_linear_rate: int = 20 * WAD // 100
    emergency_option_rate: int = 15 * WAD // 100
    emergency_mm_ratio: int = 80 * WAD // 100

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


@dataclass(frozen=True)
class CollateralParams:
    token: str
    underlying: int
    haircut: int  # WAD

    def as_tuple(self) -> tuple[str, int, int]:
        return (self.token, self.underlying, self.haircut)


def params_hash(
    params: OnchainParams,
    liquidation: LiquidationParams,
    collaterals: list[CollateralParams],
    engine_config_hash: bytes,
) -> bytes:
    """``keccak256(abi.encode(Params, LiquidationParams, Collateral[], engineConfigHash))``, byte for byte."""
    return keccak(
        encode(
            [PARAMS_ABI, LIQUIDATION_PARAMS_ABI, COLLATERALS_ABI, "bytes32"],
            [params.as_tuple(), liquidation.as_tuple(), [c.as_tuple() for c in collaterals], engine_config_hash],
        )
    )


def bound_params_hash(base: bytes, loss_index: int) -> bytes:
    """The hash attestations must carry (``RiskOracle._bindParams``): the RiskParams hash, mixed with the
    socialised-loss index once a loss has been socialised."""
    if loss_index == 0:
        return base
    return keccak(encode(["bytes32", "uint256"], [base, loss_index]))


@dataclass(frozen=True)
class ExchangeBands:
    """Mirror of the Exchange's ``Bands`` (WAD fractions of the underlying's index price).

    Notes
    -----
    A perpetual or future fills at :math:`|p - S| \\le \\text{linear} \\cdot S`; an option within its
    no-arbitrage bounds for any spot :math:`S' \\in [S(1-\\text{linear}), S(1+\\text{linear})]`, and the
    engine attests an option fill only if :math:`|p - \\text{model}| \\le \\text{option} \\cdot S`. An
    operator's linear order fills no worse for the account than :math:`S (1 \\pm \\text{operator})`.
    """

    linear: int = WAD // 10  # 10 %
    option: int = WAD // 100  # 1 % of the spot around the engine's model price
    operator: int = 5 * WAD // 1_000  # 0.5 %

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)
