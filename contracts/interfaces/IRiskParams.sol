// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @notice The on-chain risk parameters. Every field has hard bounds (see RiskParams constants).
struct Params {
    uint64 attestationMaxAge; // seconds an attestation may live (expiry - issuedAt)
    uint64 priceTolerance; // WAD: max relative move of any underlying since the attested round
    uint64 makerFee; // WAD fraction of |size| * price
    uint64 takerFee; // WAD fraction of |size| * price
    uint64 maxFundingRate; // WAD per FUNDING_PERIOD, clamp of the perp premium
    uint64 maxPositions; // open positions per account
    uint128 minPositionSize; // SIZE_SCALE, a multiple of LOT
    uint64 fundFeeShare; // WAD share of trading fees credited to the insurance fund
}

/// @notice Liquidation, insurance-fund and emergency-mode parameters (see docs/liquidation.md).
/// Discounts are WAD fractions of mark-to-market the bidder pays: `startDiscount` at the start,
/// falling linearly to `cutoffDiscount` over `fastLength`, then to zero over `slowLength`.
struct LiquidationParams {
    uint64 startDiscount; // WAD, <= 1e18 (0.95e18)
    uint64 cutoffDiscount; // WAD, <= startDiscount (0.70e18)
    uint32 fastLength; // seconds (15 min)
    uint32 slowLength; // seconds (12 h)
    uint32 insolventLength; // seconds over which an insolvent auction's payment grows (60 min)
    uint32 emergencyDelay; // seconds without a status root before emergency mode (1 h)
    uint64 bufferRatio; // WAD, <= 4e18: a bid restores MM plus this share of the distance (0.15e18)
    uint64 liquidationFee; // WAD, <= 0.1e18: share of the bidder's discount gain paid to the fund (0.1e18)
    uint128 smallPortfolio; // quote units: below this mark-to-market the whole portfolio may be taken
    uint64 emergencyLinearRate; // WAD of notional: on-chain standard margin of perps and futures
    uint64 emergencyOptionRate; // WAD of spot: on-chain standard margin of a short option
    uint64 emergencyMmRatio; // WAD: emergency liquidation below this share of the standard margin
}

/// @notice A volatile collateral token: valued at the feed price of `underlying` less `haircut`.
struct Collateral {
    address token;
    uint8 underlying;
    uint64 haircut; // WAD
}

/// @title RiskParams: bounded on-chain risk parameters and the parameter hash attestations bind to.
/// @notice paramsHash = keccak256(abi.encode(Params, LiquidationParams, Collateral[], engineConfigHash)), where
/// engineConfigHash is the keccak256 of the risk engine's canonical configuration. Every change
/// emits an event and is pushed to the RiskOracle in the same transaction.
interface IRiskParams {
    error RiskParams_OutOfBounds(string field);
    error RiskParams_UnknownCollateral(address token);
    error RiskParams_TooManyCollaterals();
    error RiskParams_OracleAlreadySet();
    error RiskParams_ZeroAddress();

    event ParamsSet(Params params);
    event LiquidationParamsSet(LiquidationParams params);
    event CollateralSet(address indexed token, uint8 underlying, uint64 haircut);
    event EngineConfigHashSet(bytes32 engineConfigHash);
    event ParamsHashChanged(bytes32 paramsHash);
    event OracleSet(address oracle);

    /// @notice Replaces the parameters; each field must lie in its hard bounds. Owner only.
    function setParams(Params calldata p) external;

    /// @notice Replaces the liquidation parameters; each field must lie in its hard bounds. Owner only.
    function setLiquidationParams(LiquidationParams calldata p) external;

    /// @notice Lists or updates a volatile collateral token. Owner only.
    function setCollateral(address token, uint8 underlying, uint64 haircut) external;

    /// @notice Sets the hash of the engine's canonical configuration. Owner only.
    function setEngineConfigHash(bytes32 h) external;

    /// @notice Wires the RiskOracle that receives every change. Once, owner only.
    function setOracle(address oracle) external;

    /// @notice Guardian only, at once: replaces the parameters with stricter ones. Lower is tighter for
    /// `attestationMaxAge`, `priceTolerance` and `maxPositions` (each may only fall); the fees,
    /// `maxFundingRate`, `minPositionSize` and `fundFeeShare` are neither and must stay unchanged.
    /// @dev Reverts with Guarded_Loosens(field) naming the first field that would loosen, and
    /// Guarded_OnlyGuardian for any other caller; bounds as in setParams.
    /// @param p the new parameters
    function tightenParams(Params calldata p) external;

    /// @notice Guardian only, at once: replaces the liquidation parameters with stricter ones.
    /// `emergencyDelay` may only fall (emergency mode sooner); `emergencyLinearRate`,
    /// `emergencyOptionRate` and `emergencyMmRatio` may only rise (a stricter standard margin);
    /// every auction and fee field must stay unchanged.
    /// @dev Reverts with Guarded_Loosens(field) naming the first field that would loosen.
    /// @param l the new liquidation parameters
    function tightenLiquidationParams(LiquidationParams calldata l) external;

    /// @notice Guardian only, at once: raises the haircut of a listed collateral (never lowers it,
    /// never lists a new token).
    /// @dev Reverts with RiskParams_UnknownCollateral for an unlisted token, Guarded_Loosens("haircut")
    /// for a lower haircut, RiskParams_OutOfBounds("haircut") above MAX_HAIRCUT.
    /// @param token a listed collateral token
    /// @param haircut the new haircut (WAD), at least the current one
    function raiseHaircut(address token, uint64 haircut) external;

    function params() external view returns (Params memory);
    function liquidationParams() external view returns (LiquidationParams memory);
    function collaterals() external view returns (Collateral[] memory);
    /// @notice The haircut of a listed volatile collateral, with its underlying.
    function collateral(address token) external view returns (uint8 underlying, uint64 haircut);
    function isCollateral(address token) external view returns (bool);
    function engineConfigHash() external view returns (bytes32);
    function paramsHash() external view returns (bytes32);
}
