// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Attestation, MarginProof, StatusRoot, StatusLeaf} from "../libraries/Types.sol";
import {IPriceRoundListener} from "./IPriceFeed.sol";

/// @title RiskOracle: verifies margin results signed by a quorum of risk-engine signers.
/// @notice Two forms are accepted, under this contract's EIP-712 domain (name "pmsim RiskOracle",
/// version "1", chain id, this address):
/// - an Attestation, for one account, its current risk nonce and one exact action (or none): it
///   must be bound to the current parameter hash, issued in the past, unexpired, no longer-lived
///   than `attestationMaxAge`, computed at a price round from which no underlying has moved more
///   than `priceTolerance`, and signed by `quorum` distinct registered signers;
/// - a StatusLeaf with a Merkle proof against the latest StatusRoot, for checks a status result is
///   enough for (liquidation, headroom). Only the latest root is kept; a parameter change clears it.
/// Deposits made since the engine's snapshot are credited: equity = marginEquity + credit - checkpoint.
/// Nothing verifies once the price feed is older than its heartbeat (`feedFreshUntil`), and removing a
/// signer or lowering the quorum clears the status root.
/// @title The feed's heartbeat getter (PriceFeed's public `heartbeat`; not in IPriceFeed).
interface IFeedHeartbeat {
    /// @return The largest age (seconds) of a usable price round.
    function heartbeat() external view returns (uint64);
}

interface IRiskOracle is IPriceRoundListener {
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
    error RiskOracle_OnlyFeed();
    error RiskOracle_ParamsNotSynced();
    error RiskOracle_StaleRoot(uint64 round, uint64 latest);
    error RiskOracle_NoRoot();
    error RiskOracle_BadProof();
    /// @notice The price feed's latest round is older than its heartbeat allows (F-6).
    error RiskOracle_FeedStale(uint256 freshUntil, uint256 now_);

    event ParamsSynced(bytes32 paramsHash, uint64 priceTolerance, uint64 attestationMaxAge, uint32 emergencyDelay);
    /// @notice The hash attestations and roots must now carry (`paramsHash`, mixed with the loss index).
    event ParamsBound(bytes32 paramsHash, uint256 lossIndex);
    event RootPosted(uint64 indexed round, bytes32 root, uint64 priceRound, uint64 issuedAt, uint64 expiry);
    event RootCleared(uint64 round);
    /// @notice The feed's freshness was re-read: attestations verify until `freshUntil`.
    event FeedSynced(uint256 freshUntil);

    /// @notice Receives the parameter hash and the limits it sets, and clears the status root.
    /// Callable by RiskParams only.
    function syncParams(bytes32 paramsHash, uint64 priceTolerance, uint64 attestationMaxAge, uint32 emergencyDelay)
        external;

    /// @notice True once no status root has been posted for `emergencyDelay` seconds, or once the price
    /// feed is stale (past `feedFreshUntil`): no new risk; withdrawals, liquidations and closing trades
    /// without an attestation are checked against the on-chain standard margin instead.
    function emergency() external view returns (bool);

    /// @notice Re-reads the feed's latest round time and heartbeat into `feedFreshUntil` (done on every
    /// round; call it after a heartbeat change). Anyone.
    function syncFeed() external;

    /// @notice Posts the status root of an engine round; rounds only increase. Anyone may relay it.
    function postRoot(StatusRoot calldata root, bytes calldata sigs) external;

    /// @notice Verifies `proof` for `account` at `nonce` and `actionHash` and that the credited
    /// margin equity covers the initial (`useInitial`) or maintenance margin.
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

    /// @notice Verifies a status leaf against the latest root and returns its credited figures.
    function verifyStatus(
        StatusLeaf calldata leaf,
        bytes32[] calldata proof,
        address account,
        uint64 nonce,
        uint256 credit
    ) external view returns (int256 equity, uint256 initialMargin, uint256 maintenanceMargin);

    function paramsHash() external view returns (bytes32);
    function statusRoot() external view returns (bytes32);
}
