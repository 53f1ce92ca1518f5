// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IRiskOracle} from "./interfaces/IRiskOracle.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {SignerQuorum} from "./SignerQuorum.sol";
import {Attestation, MarginProof} from "./libraries/Types.sol";

/// @title RiskOracle
contract RiskOracle is IRiskOracle, SignerQuorum, EIP712 {
    // ---------------------------------------------------------------- constants
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(address account,uint64 riskNonce,bytes32 actionHash,int256 marginEquity,int256 mtmEquity,"
        "uint256 initialMargin,uint256 maintenanceMargin,uint256 creditCheckpoint,bytes32 paramsHash,"
        "uint64 priceRound,uint64 issuedAt,uint64 expiry)"
    );

    // ---------------------------------------------------------------- immutables
    IPriceFeed public immutable feed;
    address public immutable riskParams;

    // ---------------------------------------------------------------- storage
    bytes32 public paramsHash;
    uint64 public priceTolerance;
    uint64 public attestationMaxAge;

    // ---------------------------------------------------------------- constructor
    constructor(address owner_, IPriceFeed feed_, address riskParams_)
        SignerQuorum(owner_)
        EIP712("pmsim RiskOracle", "1")
    {
        feed = feed_;
        riskParams = riskParams_;
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IRiskOracle
    function syncParams(bytes32 paramsHash_, uint64 priceTolerance_, uint64 attestationMaxAge_) external {
        if (msg.sender != riskParams) revert RiskOracle_OnlyRiskParams();
        (paramsHash, priceTolerance, attestationMaxAge) = (paramsHash_, priceTolerance_, attestationMaxAge_);
        emit ParamsSynced(paramsHash_, priceTolerance_, attestationMaxAge_);
    }

    // ---------------------------------------------------------------- core
    /// @inheritdoc IRiskOracle
    function requireMargin(
        MarginProof calldata proof,
        address account,
        uint64 nonce,
        bytes32 actionHash,
        uint256 credit,
        bool useInitial
    ) external view returns (int256 equity) {
        Attestation calldata a = proof.attestation;
        _verify(proof, account, nonce, actionHash, credit);
        equity = a.marginEquity + int256(credit - a.creditCheckpoint);
        uint256 required = useInitial ? a.initialMargin : a.maintenanceMargin;
        if (equity < int256(required)) revert RiskOracle_InsufficientMargin(equity, required);
    }

    /// @inheritdoc IRiskOracle
    function verify(MarginProof calldata proof, address account, uint64 nonce, bytes32 actionHash, uint256 credit)
        external
        view
    {
        _verify(proof, account, nonce, actionHash, credit);
    }

    function _verify(MarginProof calldata proof, address account, uint64 nonce, bytes32 actionHash, uint256 credit)
        internal
        view
    {
        Attestation calldata a = proof.attestation;
        if (a.account != account) revert RiskOracle_WrongAccount(account, a.account);
        if (a.riskNonce != nonce) revert RiskOracle_StaleNonce(nonce, a.riskNonce);
        if (a.actionHash != actionHash) revert RiskOracle_WrongAction(actionHash, a.actionHash);
        _checkBinding(a);
        if (a.creditCheckpoint > credit) revert RiskOracle_BadCredit(a.creditCheckpoint, credit);
        _verifyQuorum(_digest(a), proof.signatures, quorum);
    }

    /// @dev Parameter hash, time window and price tolerance.
    function _checkBinding(Attestation calldata a) internal view {
        bytes32 h = paramsHash;
        if (h == bytes32(0)) revert RiskOracle_ParamsNotSynced();
        if (a.paramsHash != h) revert RiskOracle_WrongParams(h, a.paramsHash);
        if (a.issuedAt > block.timestamp) revert RiskOracle_IssuedInFuture(a.issuedAt, block.timestamp);
        if (a.expiry < block.timestamp) revert RiskOracle_Expired(a.expiry, block.timestamp);
        if (a.expiry - a.issuedAt > attestationMaxAge) {
            revert RiskOracle_LifetimeTooLong(a.expiry - a.issuedAt, attestationMaxAge);
        }
        uint256 move = feed.moveSince(a.priceRound);
        if (move > priceTolerance) revert RiskOracle_PriceMoved(move, priceTolerance);
    }

    function _digest(Attestation calldata a) internal view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ATTESTATION_TYPEHASH, a)));
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IRiskOracle
    function attestationDigest(Attestation calldata a) external view returns (bytes32) {
        return _digest(a);
    }
}
