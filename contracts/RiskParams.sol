// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Guarded} from "./governance/Guarded.sol";
import {IRiskParams, Params, LiquidationParams, Collateral} from "./interfaces/IRiskParams.sol";
import {IRiskOracle} from "./interfaces/IRiskOracle.sol";
import {Constants} from "./libraries/Constants.sol";

/// @title RiskParams
contract RiskParams is IRiskParams, Guarded {
    // ---------------------------------------------------------------- bounds
    uint64 public constant MIN_ATTESTATION_AGE = 10;
    uint64 public constant MAX_ATTESTATION_AGE = 1 days;
    uint64 public constant MIN_PRICE_TOLERANCE = 0.0005e18;
    uint64 public constant MAX_PRICE_TOLERANCE = 0.25e18;
    uint64 public constant MAX_FEE = 0.01e18;
    uint64 public constant MAX_FUNDING_RATE = 0.05e18;
    uint128 public constant MAX_MIN_POSITION_SIZE = 1e24;
    uint64 public constant MAX_HAIRCUT = 0.9e18;
    uint64 public constant MAX_FUND_FEE_SHARE = 1e18;
    uint64 public constant MAX_START_DISCOUNT = 1e18;
    uint64 public constant MAX_BUFFER_RATIO = 4e18;
    uint64 public constant MAX_LIQUIDATION_FEE = 0.1e18;
    uint32 public constant MAX_AUCTION_LENGTH = 7 days;
    uint32 public constant MIN_EMERGENCY_DELAY = 10 minutes;
    uint32 public constant MAX_EMERGENCY_DELAY = 365 days;
    uint64 public constant MIN_EMERGENCY_RATE = 0.01e18;
    uint64 public constant MAX_EMERGENCY_RATE = 1e18;

    // ---------------------------------------------------------------- storage
    Params internal _params;
    LiquidationParams internal _liq;
    Collateral[] internal _collaterals;
    mapping(address => uint256) internal _collateralSlot; // index + 1
    bytes32 public engineConfigHash;
    bytes32 public paramsHash;
    address public oracle;

    // ---------------------------------------------------------------- constructor
    constructor(address owner_, Params memory p, LiquidationParams memory l, bytes32 engineConfigHash_)
        Ownable(owner_)
        Guarded(owner_)
    {
        _validate(p);
        _validateLiquidation(l);
        _params = p;
        _liq = l;
        engineConfigHash = engineConfigHash_;
        emit ParamsSet(p);
        emit LiquidationParamsSet(l);
        emit EngineConfigHashSet(engineConfigHash_);
        _commit();
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IRiskParams
    function setParams(Params calldata p) external onlyOwner {
        _validate(p);
        _params = p;
        emit ParamsSet(p);
        _commit();
    }

    /// @inheritdoc IRiskParams
    function setLiquidationParams(LiquidationParams calldata l) external onlyOwner {
        _validateLiquidation(l);
        _liq = l;
        emit LiquidationParamsSet(l);
        _commit();
    }

    /// @inheritdoc IRiskParams
    function setCollateral(address token, uint8 underlying, uint64 haircut) external onlyOwner {
        if (token == address(0)) revert RiskParams_ZeroAddress();
        if (haircut > MAX_HAIRCUT) revert RiskParams_OutOfBounds("haircut");
        if (underlying >= Constants.MAX_UNDERLYINGS) revert RiskParams_OutOfBounds("underlying");
        uint256 slot = _collateralSlot[token];
        if (slot == 0) {
            if (_collaterals.length >= Constants.MAX_COLLATERALS) revert RiskParams_TooManyCollaterals();
            _collaterals.push(Collateral(token, underlying, haircut));
            _collateralSlot[token] = _collaterals.length;
        } else {
            _collaterals[slot - 1] = Collateral(token, underlying, haircut);
        }
        emit CollateralSet(token, underlying, haircut);
        _commit();
    }

    /// @inheritdoc IRiskParams
    function setEngineConfigHash(bytes32 h) external onlyOwner {
        engineConfigHash = h;
        emit EngineConfigHashSet(h);
        _commit();
    }

    /// @inheritdoc IRiskParams
    function setOracle(address oracle_) external onlyOwner {
        if (oracle != address(0)) revert RiskParams_OracleAlreadySet();
        if (oracle_ == address(0)) revert RiskParams_ZeroAddress();
        oracle = oracle_;
        emit OracleSet(oracle_);
        _commit();
    }

    // ---------------------------------------------------------------- guardian
    /// @inheritdoc IRiskParams
    function tightenParams(Params calldata p) external onlyGuardian {
        _validate(p);
        Params storage o = _params;
        _noLooser(o.attestationMaxAge, p.attestationMaxAge, false, "attestationMaxAge");
        _noLooser(o.priceTolerance, p.priceTolerance, false, "priceTolerance");
        _unchanged(o.makerFee, p.makerFee, "makerFee");
        _unchanged(o.takerFee, p.takerFee, "takerFee");
        _unchanged(o.maxFundingRate, p.maxFundingRate, "maxFundingRate");
        _noLooser(o.maxPositions, p.maxPositions, false, "maxPositions");
        _unchanged(o.minPositionSize, p.minPositionSize, "minPositionSize");
        _unchanged(o.fundFeeShare, p.fundFeeShare, "fundFeeShare");
        _params = p;
        emit ParamsSet(p);
        _commit();
    }

    /// @inheritdoc IRiskParams
    function tightenLiquidationParams(LiquidationParams calldata l) external onlyGuardian {
        _validateLiquidation(l);
        LiquidationParams storage o = _liq;
        _unchanged(o.startDiscount, l.startDiscount, "startDiscount");
        _unchanged(o.cutoffDiscount, l.cutoffDiscount, "cutoffDiscount");
        _unchanged(o.fastLength, l.fastLength, "fastLength");
        _unchanged(o.slowLength, l.slowLength, "slowLength");
        _unchanged(o.insolventLength, l.insolventLength, "insolventLength");
        _noLooser(o.emergencyDelay, l.emergencyDelay, false, "emergencyDelay");
        _unchanged(o.bufferRatio, l.bufferRatio, "bufferRatio");
        _unchanged(o.liquidationFee, l.liquidationFee, "liquidationFee");
        _unchanged(o.smallPortfolio, l.smallPortfolio, "smallPortfolio");
        _noLooser(o.emergencyLinearRate, l.emergencyLinearRate, true, "emergencyLinearRate");
        _noLooser(o.emergencyOptionRate, l.emergencyOptionRate, true, "emergencyOptionRate");
        _noLooser(o.emergencyMmRatio, l.emergencyMmRatio, true, "emergencyMmRatio");
        _liq = l;
        emit LiquidationParamsSet(l);
        _commit();
    }

    /// @inheritdoc IRiskParams
    function raiseHaircut(address token, uint64 haircut) external onlyGuardian {
        uint256 slot = _collateralSlot[token];
        if (slot == 0) revert RiskParams_UnknownCollateral(token);
        if (haircut > MAX_HAIRCUT) revert RiskParams_OutOfBounds("haircut");
        Collateral storage c = _collaterals[slot - 1];
        _noLooser(c.haircut, haircut, true, "haircut");
        c.haircut = haircut;
        emit CollateralSet(token, c.underlying, haircut);
        _commit();
    }

    // ---------------------------------------------------------------- internal
    function _validate(Params memory p) internal pure {
        if (p.attestationMaxAge < MIN_ATTESTATION_AGE || p.attestationMaxAge > MAX_ATTESTATION_AGE) {
            revert RiskParams_OutOfBounds("attestationMaxAge");
        }
        if (p.priceTolerance < MIN_PRICE_TOLERANCE || p.priceTolerance > MAX_PRICE_TOLERANCE) {
            revert RiskParams_OutOfBounds("priceTolerance");
        }
        if (p.makerFee > MAX_FEE) revert RiskParams_OutOfBounds("makerFee");
        if (p.takerFee > MAX_FEE) revert RiskParams_OutOfBounds("takerFee");
        if (p.maxFundingRate > MAX_FUNDING_RATE) revert RiskParams_OutOfBounds("maxFundingRate");
        if (p.maxPositions == 0 || p.maxPositions > Constants.MAX_POSITIONS) revert RiskParams_OutOfBounds("maxPositions");
        if (p.minPositionSize < Constants.LOT || p.minPositionSize > MAX_MIN_POSITION_SIZE || p.minPositionSize % Constants.LOT != 0) {
            revert RiskParams_OutOfBounds("minPositionSize");
        }
        if (p.fundFeeShare > MAX_FUND_FEE_SHARE) revert RiskParams_OutOfBounds("fundFeeShare");
    }

    function _validateLiquidation(LiquidationParams memory l) internal pure {
        if (l.startDiscount > MAX_START_DISCOUNT) revert RiskParams_OutOfBounds("startDiscount");
        if (l.cutoffDiscount > l.startDiscount) revert RiskParams_OutOfBounds("cutoffDiscount");
        if (l.fastLength == 0 || l.fastLength > MAX_AUCTION_LENGTH) revert RiskParams_OutOfBounds("fastLength");
        if (l.slowLength == 0 || l.slowLength > MAX_AUCTION_LENGTH) revert RiskParams_OutOfBounds("slowLength");
        if (l.insolventLength == 0 || l.insolventLength > MAX_AUCTION_LENGTH) {
            revert RiskParams_OutOfBounds("insolventLength");
        }
        if (l.emergencyDelay < MIN_EMERGENCY_DELAY || l.emergencyDelay > MAX_EMERGENCY_DELAY) {
            revert RiskParams_OutOfBounds("emergencyDelay");
        }
        if (l.bufferRatio > MAX_BUFFER_RATIO) revert RiskParams_OutOfBounds("bufferRatio");
        if (l.liquidationFee > MAX_LIQUIDATION_FEE) revert RiskParams_OutOfBounds("liquidationFee");
        if (l.smallPortfolio > 1e15) revert RiskParams_OutOfBounds("smallPortfolio"); // 1e9 USD
        if (l.emergencyLinearRate < MIN_EMERGENCY_RATE || l.emergencyLinearRate > MAX_EMERGENCY_RATE) {
            revert RiskParams_OutOfBounds("emergencyLinearRate");
        }
        if (l.emergencyOptionRate < MIN_EMERGENCY_RATE || l.emergencyOptionRate > MAX_EMERGENCY_RATE) {
            revert RiskParams_OutOfBounds("emergencyOptionRate");
        }
        if (l.emergencyMmRatio < 0.5e18 || l.emergencyMmRatio > 1e18) revert RiskParams_OutOfBounds("emergencyMmRatio");
    }

    /// @dev Recomputes the parameter hash and pushes it to the oracle.
    function _commit() internal {
        bytes32 h = keccak256(abi.encode(_params, _liq, _collaterals, engineConfigHash));
        paramsHash = h;
        emit ParamsHashChanged(h);
        if (oracle != address(0)) {
            IRiskOracle(oracle).syncParams(h, _params.priceTolerance, _params.attestationMaxAge, _liq.emergencyDelay);
        }
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IRiskParams
    function params() external view returns (Params memory) {
        return _params;
    }

    /// @inheritdoc IRiskParams
    function liquidationParams() external view returns (LiquidationParams memory) {
        return _liq;
    }

    /// @inheritdoc IRiskParams
    function collaterals() external view returns (Collateral[] memory) {
        return _collaterals;
    }

    /// @inheritdoc IRiskParams
    function collateral(address token) external view returns (uint8 underlying, uint64 haircut) {
        uint256 slot = _collateralSlot[token];
        if (slot == 0) revert RiskParams_UnknownCollateral(token);
        Collateral storage c = _collaterals[slot - 1];
        return (c.underlying, c.haircut);
    }

    /// @inheritdoc IRiskParams
    function isCollateral(address token) external view returns (bool) {
        return _collateralSlot[token] != 0;
    }
}
