"""On-chain risk parameters and the ``paramsHash`` mirror of ``RiskParams._commit``."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from eth_abi import encode
from eth_utils import keccak

PARAMS_ABI = "(uint64,uint64,uint64,uint64,uint64,uint64,uint128)"
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

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


@dataclass(frozen=True)
class CollateralParams:
    token: str
    underlying: int
    haircut: int  # WAD

    def as_tuple(self) -> tuple[str, int, int]:
        return (self.token, self.underlying, self.haircut)


def params_hash(params: OnchainParams, collaterals: list[CollateralParams], engine_config_hash: bytes) -> bytes:
    """``keccak256(abi.encode(Params, Collateral[], engineConfigHash))``, byte for byte."""
    return keccak(
        encode(
            [PARAMS_ABI, COLLATERALS_ABI, "bytes32"],
            [params.as_tuple(), [c.as_tuple() for c in collaterals], engine_config_hash],
        )
    )
