// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Attestation, MarginProof} from "../libraries/Types.sol";

/// @title RiskOracle: verifies margin attestations signed by a quorum of risk-engine signers.
/// @notice An attestation is accepted only if it is for this account, its current risk nonce and the
/// exact action, bound to the current parameter hash, issued in the past, unexpired, no longer-lived
/// than `attestationMaxAge`, computed at a price round from which no underlying has moved more than
/// `priceTolerance`, and signed by `quorum` distinct registered signers over this contract's EIP-712
/// domain (name "pmsim RiskOracle", version "1", chain id, this address).
interface IRiskOracle {
    error RiskOracle_WrongAccount(address expected, address given);
    error RiskOracle_StaleNonce(uint64 expected, uint64 given);
    error RiskOracle_WrongAction(bytes32 expected, bytes32 given);
    error RiskOracle_WrongParams(bytes32 expected, bytes32 given);
    error RiskOracle_Expired(uint64 expiry, uint256 now_);
    error RiskOracle_IssuedInFuture(uint64 issuedAt, uint256 now_);
    error RiskOracle_LifetimeTooLong(uint64 lifetime, uint64 maxAge);
    error RiskOracle_PriceMoved(uint256 move, uint256 tolerance);
    error RiskOracle_BadCredit(uint256 checkpoint, uint256 current);
    error RiskOracle_InsufficientMargin(int256 equity, uint256 required);
    error RiskOracle_OnlyRiskParams();
    error RiskOracle_ParamsNotSynced();

    event ParamsSynced(bytes32 paramsHash, uint64 priceTolerance, uint64 attestationMaxAge);

    /// @notice Receives the parameter hash and the limits it sets. Callable by RiskParams only.
    function syncParams(bytes32 paramsHash, uint64 priceTolerance, uint64 attestationMaxAge) external;

    /// @notice Verifies `proof` for `account` at `nonce` and `actionHash` and that the margin equity
    /// plus deposits credited since (`credit - creditCheckpoint`) covers the initial margin
    /// (`useInitial`) or the maintenance margin. Reverts with the reason otherwise.
    /// @return equity the credited margin equity
    function requireMargin(
        MarginProof calldata proof,
        address account,
        uint64 nonce,
        bytes32 actionHash,
        uint256 credit,
        bool useInitial
    ) external view returns (int256 equity);

    /// @notice Verifies an attestation's binding and signatures, without a margin condition.
    function verify(MarginProof calldata proof, address account, uint64 nonce, bytes32 actionHash, uint256 credit)
        external
        view;

    /// @notice The EIP-712 digest the signers sign.
    function attestationDigest(Attestation calldata a) external view returns (bytes32);

    function paramsHash() external view returns (bytes32);
}
