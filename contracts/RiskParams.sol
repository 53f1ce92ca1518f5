// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IRiskParams, Params, Collateral} from "./interfaces/IRiskParams.sol";
import {IRiskOracle} from "./interfaces/IRiskOracle.sol";
import {Constants} from "./libraries/Constants.sol";

/// @title RiskParams
contract RiskParams is IRiskParams, Ownable2Step {
    // ---------------------------------------------------------------- bounds
    uint64 public constant MIN_ATTESTATION_AGE = 10;
    uint64 public constant MAX_ATTESTATION_AGE = 1 days;
    uint64 public constant MIN_PRICE_TOLERANCE = 0.0005e18;
    uint64 public constant MAX_PRICE_TOLERANCE = 0.25e18;
    uint64 public constant MAX_FEE = 0.01e18;
    uint64 public constant MAX_FUNDING_RATE = 0.05e18;
    uint128 public constant MAX_MIN_POSITION_SIZE = 1e24;
    uint64 public constant MAX_HAIRCUT = 0.9e18;

    // ---------------------------------------------------------------- storage
    Params internal _params;
    Collateral[] internal _collaterals;
    mapping(address => uint256) internal _collateralSlot; // index + 1
    bytes32 public engineConfigHash;
    bytes32 public paramsHash;
    address public oracle;

    // ---------------------------------------------------------------- constructor
    constructor(address owner_, Params memory p, bytes32 engineConfigHash_) Ownable(owner_) {
        _validate(p);
        _params = p;
        engineConfigHash = engineConfigHash_;
        emit ParamsSet(p);
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
    }

    /// @dev Recomputes the parameter hash and pushes it to the oracle.
    function _commit() internal {
        bytes32 h = keccak256(abi.encode(_params, _collaterals, engineConfigHash));
        paramsHash = h;
        emit ParamsHashChanged(h);
        if (oracle != address(0)) {
            IRiskOracle(oracle).syncParams(h, _params.priceTolerance, _params.attestationMaxAge);
        }
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IRiskParams
    function params() external view returns (Params memory) {
        return _params;
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
