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
}

/// @notice A volatile collateral token: valued at the feed price of `underlying` less `haircut`.
struct Collateral {
    address token;
    uint8 underlying;
    uint64 haircut; // WAD
}

/// @title RiskParams: bounded on-chain risk parameters and the parameter hash attestations bind to.
/// @notice paramsHash = keccak256(abi.encode(Params, Collateral[], engineConfigHash)), where
/// engineConfigHash is the keccak256 of the risk engine's canonical configuration. Every change
/// emits an event and is pushed to the RiskOracle in the same transaction.
interface IRiskParams {
    error RiskParams_OutOfBounds(string field);
    error RiskParams_UnknownCollateral(address token);
    error RiskParams_TooManyCollaterals();
    error RiskParams_OracleAlreadySet();
    error RiskParams_ZeroAddress();

    event ParamsSet(Params params);
    event CollateralSet(address indexed token, uint8 underlying, uint64 haircut);
    event EngineConfigHashSet(bytes32 engineConfigHash);
    event ParamsHashChanged(bytes32 paramsHash);
    event OracleSet(address oracle);

    /// @notice Replaces the parameters; each field must lie in its hard bounds. Owner only.
    function setParams(Params calldata p) external;

    /// @notice Lists or updates a volatile collateral token. Owner only.
    function setCollateral(address token, uint8 underlying, uint64 haircut) external;

    /// @notice Sets the hash of the engine's canonical configuration. Owner only.
    function setEngineConfigHash(bytes32 h) external;

    /// @notice Wires the RiskOracle that receives every change. Once, owner only.
    function setOracle(address oracle) external;

    function params() external view returns (Params memory);
    function collaterals() external view returns (Collateral[] memory);
    /// @notice The haircut of a listed volatile collateral, with its underlying.
    function collateral(address token) external view returns (uint8 underlying, uint64 haircut);
    function isCollateral(address token) external view returns (bool);
    function engineConfigHash() external view returns (bytes32);
    function paramsHash() external view returns (bytes32);
}
