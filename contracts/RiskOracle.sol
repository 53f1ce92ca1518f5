// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IRiskOracle, IFeedHeartbeat} from "./interfaces/IRiskOracle.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {IRiskParams} from "./interfaces/IRiskParams.sol";
import {SignerQuorum} from "./SignerQuorum.sol";
import {Attestation, MarginProof, StatusRoot, StatusLeaf} from "./libraries/Types.sol";

/// @title RiskOracle
/// @notice The oracle module of the Vault: the Vault inherits it, so a margin check inside a trade or
/// a withdrawal is an internal call (no external call, no re-encoding of the proof), and the oracle's
/// address is the Vault's (its EIP-712 domain names "pmsim RiskOracle" at the Vault's address).
/// @dev Inherits EIP712 before SignerQuorum so that the quorum (two bytes) and the hot configuration
/// below share one storage slot: a one-signer check at the latest price round reads three slots.
abstract contract RiskOracle is IRiskOracle, EIP712, SignerQuorum {
    // ---------------------------------------------------------------- constants
    bytes32 internal constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(address account,uint64 riskNonce,bytes32 actionHash,int256 marginEquity,int256 mtmEquity,"
        "uint256 initialMargin,uint256 maintenanceMargin,uint256 creditCheckpoint,bytes32 paramsHash,"
        "uint64 priceRound,uint64 issuedAt,uint64 expiry)"
    );
    bytes32 internal constant STATUS_ROOT_TYPEHASH = keccak256(
        "StatusRoot(uint64 round,bytes32 root,uint64 priceRound,uint64 issuedAt,uint64 expiry,bytes32 paramsHash)"
    );

    // ---------------------------------------------------------------- immutables
    IPriceFeed public immutable feed;
    IRiskParams public immutable riskParams;

    // ---------------------------------------------------------------- storage
    // slot A (with SignerQuorum's _signerCount and _quorum)
    uint64 public latestPriceRound;
    uint64 public priceTolerance;
    uint32 public attestationMaxAge; // RiskParams bounds it to at most a day
    uint32 public emergencyDelay;
    /// @notice The feed's latest round time plus its heartbeat: after it, the feed is stale and no
    /// attestation, root or attested fill verifies (F-6). Refreshed on every round and by `syncFeed`.
    uint48 public feedFreshUntil;
    // slot B
    bytes32 public paramsHash;
    // slots C, D: the latest status root
    bytes32 public statusRoot;
    uint64 public rootRound;
    uint64 internal rootPriceRound;
    uint64 internal rootExpiry;
    uint64 internal rootPostedAt;

    // ---------------------------------------------------------------- constructor
    constructor(IPriceFeed feed_, IRiskParams riskParams_) EIP712("pmsim RiskOracle", "1") {
        feed = feed_;
        riskParams = riskParams_;
        rootPostedAt = uint64(block.timestamp); // Safe cast: a timestamp fits 64 bits for 5e11 years
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IRiskOracle
    function syncParams(bytes32 paramsHash_, uint64 priceTolerance_, uint64 attestationMaxAge_, uint32 emergencyDelay_)
        external
    {
        if (msg.sender != address(riskParams)) revert RiskOracle_OnlyRiskParams();
        (priceTolerance, attestationMaxAge, emergencyDelay) =
            (priceTolerance_, SafeCast.toUint32(attestationMaxAge_), emergencyDelay_);
        emit ParamsSynced(paramsHash_, priceTolerance_, attestationMaxAge_, emergencyDelay_);
        _bindParams(paramsHash_);
    }

    /// @dev Sets the hash attestations must carry: the RiskParams hash, mixed with the socialised-loss
    /// index once a loss has been socialised (so results computed before a loss stop verifying), and
    /// clears the status root computed under the previous hash.
    function _bindParams(bytes32 base) internal {
        uint256 index = _lossIndex();
        bytes32 h = index == 0 ? base : keccak256(abi.encode(base, index));
        paramsHash = h;
        emit ParamsBound(h, index);
        _clearRoot();
    }

    /// @dev The cumulative socialised loss per unit of positive cash (the Vault's).
    function _lossIndex() internal view virtual returns (uint256);

    /// @inheritdoc IRiskOracle
    function emergency() public view returns (bool) {
        return block.timestamp > uint256(rootPostedAt) + emergencyDelay || block.timestamp > feedFreshUntil;
    }

    /// @notice Mirrors the feed's latest round id and freshness. Callable by the feed only.
    function onPriceRound(uint64 round) external {
        if (msg.sender != address(feed)) revert RiskOracle_OnlyFeed();
        latestPriceRound = round;
        _syncFeed();
    }

    /// @inheritdoc IRiskOracle
    function syncFeed() external {
        _syncFeed();
    }

    /// @dev feedFreshUntil = latest round's time + the feed's heartbeat (PriceFeed's `heartbeat()`).
    function _syncFeed() internal {
        (, uint64 ts) = feed.latestRound();
        uint256 until = uint256(ts) + IFeedHeartbeat(address(feed)).heartbeat();
        feedFreshUntil = SafeCast.toUint48(until);
        emit FeedSynced(until);
    }

    /// @dev A removed signer (or a lowered quorum) voids the status root it may have co-signed (F-8).
    function _onSignerSetChanged() internal override {
        _clearRoot();
    }

    function _clearRoot() internal {
        if (statusRoot != bytes32(0)) {
            statusRoot = bytes32(0);
            emit RootCleared(rootRound);
        }
    }

    // ---------------------------------------------------------------- core: attestations
    /// @inheritdoc IRiskOracle
    function requireMargin(
        MarginProof calldata proof,
        address account,
        uint64 nonce,
        bytes32 actionHash,
        uint256 credit,
        bool useInitial
    ) external view returns (int256 equity) {
        return _requireMargin(proof, account, nonce, actionHash, credit, useInitial);
    }

    function _requireMargin(
        MarginProof calldata proof,
        address account,
        uint64 nonce,
        bytes32 actionHash,
        uint256 credit,
        bool useInitial
    ) internal view returns (int256 equity) {
        Attestation calldata a = proof.attestation;
        _verify(proof, account, nonce, actionHash, credit);
        // Safe cast: credit is a sum of deposits each below 2**128, far below 2**255.
        equity = a.marginEquity + int256(credit - a.creditCheckpoint);
        uint256 required = useInitial ? a.initialMargin : a.maintenanceMargin;
        if (equity < SafeCast.toInt256(required)) revert RiskOracle_InsufficientMargin(equity, required);
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
        if (a.creditCheckpoint > credit) revert RiskOracle_BadCredit(a.creditCheckpoint, credit);
        _checkParams(a.paramsHash);
        _checkWindow(a.issuedAt, a.expiry);
        _checkPriceRound(a.priceRound);
        _verifyQuorum(_attestationDigest(a), proof.signatures, _quorum);
    }

    // ---------------------------------------------------------------- core: status roots
    /// @inheritdoc IRiskOracle
    function postRoot(StatusRoot calldata r, bytes calldata sigs) external {
        if (r.round <= rootRound) revert RiskOracle_StaleRoot(r.round, rootRound);
        _checkParams(r.paramsHash);
        _checkWindow(r.issuedAt, r.expiry);
        _checkPriceRound(r.priceRound);
        _verifyQuorum(_rootDigest(r), sigs, _quorum);
        statusRoot = r.root;
        (rootRound, rootPriceRound, rootExpiry, rootPostedAt) = (r.round, r.priceRound, r.expiry, uint64(block.timestamp)); // Safe cast: as above
        emit RootPosted(r.round, r.root, r.priceRound, r.issuedAt, r.expiry);
    }

    /// @inheritdoc IRiskOracle
    function verifyStatus(
        StatusLeaf calldata leaf,
        bytes32[] calldata proof,
        address account,
        uint64 nonce,
        uint256 credit
    ) external view returns (int256 equity, uint256 initialMargin, uint256 maintenanceMargin) {
        return _verifyStatus(leaf, proof, account, nonce, credit);
    }

    function _verifyStatus(
        StatusLeaf calldata leaf,
        bytes32[] calldata proof,
        address account,
        uint64 nonce,
        uint256 credit
    ) internal view returns (int256 equity, uint256 initialMargin, uint256 maintenanceMargin) {
        bytes32 root = statusRoot;
        if (root == bytes32(0)) revert RiskOracle_NoRoot();
        if (rootExpiry < block.timestamp) revert RiskOracle_Expired(rootExpiry, block.timestamp);
        _checkPriceRound(rootPriceRound);
        if (leaf.account != account) revert RiskOracle_WrongAccount(account, leaf.account);
        if (leaf.riskNonce != nonce) revert RiskOracle_StaleNonce(nonce, leaf.riskNonce);
        if (leaf.creditCheckpoint > credit) revert RiskOracle_BadCredit(leaf.creditCheckpoint, credit);
        if (!MerkleProof.verifyCalldata(proof, root, _leafHash(leaf))) revert RiskOracle_BadProof();
        // Safe cast: credit is a sum of deposits each below 2**128, far below 2**255.
        equity = leaf.marginEquity + int256(credit - leaf.creditCheckpoint);
        return (equity, leaf.initialMargin, leaf.maintenanceMargin);
    }

    // ---------------------------------------------------------------- internal checks
    function _checkParams(bytes32 given) internal view {
        bytes32 h = paramsHash;
        if (h == bytes32(0)) revert RiskOracle_ParamsNotSynced();
        if (given != h) revert RiskOracle_WrongParams(h, given);
    }

    function _checkWindow(uint64 issuedAt, uint64 expiry) internal view {
        if (issuedAt > block.timestamp) revert RiskOracle_IssuedInFuture(issuedAt, block.timestamp);
        if (expiry < block.timestamp) revert RiskOracle_Expired(expiry, block.timestamp);
        if (expiry - issuedAt > attestationMaxAge) revert RiskOracle_LifetimeTooLong(expiry - issuedAt, attestationMaxAge);
    }

    /// @dev Refused once the feed is stale (F-6). At the latest round nothing has moved; otherwise ask
    /// the feed for the largest move (which also refuses round 0 and rounds not yet posted).
    function _checkPriceRound(uint64 round) internal view {
        uint256 freshUntil = feedFreshUntil;
        if (block.timestamp > freshUntil) revert RiskOracle_FeedStale(freshUntil, block.timestamp);
        if (round != 0 && round == latestPriceRound) return;
        uint256 move = feed.moveSince(round);
        if (move > priceTolerance) revert RiskOracle_PriceMoved(move, priceTolerance);
    }

    /// @dev keccak256(typehash || the struct's words) hashed straight from calldata. Equal to
    /// keccak256(abi.encode(typehash, s)) for clean inputs; a word with dirty bits only changes the
    /// hash, so its signature cannot verify.
    function _attestationDigest(Attestation calldata a) internal view returns (bytes32) {
        return _hashTypedDataV4(_structHash(ATTESTATION_TYPEHASH, _offset(a), 12));
    }

    function _rootDigest(StatusRoot calldata r) internal view returns (bytes32) {
        uint256 offset;
        assembly ("memory-safe") {
            offset := r
        }
        return _hashTypedDataV4(_structHash(STATUS_ROOT_TYPEHASH, offset, 6));
    }

    function _offset(Attestation calldata a) internal pure returns (uint256 offset) {
        assembly ("memory-safe") {
            offset := a
        }
    }

    function _structHash(bytes32 typehash, uint256 offset, uint256 words) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            calldatacopy(add(m, 0x20), offset, mul(words, 0x20))
            h := keccak256(m, add(0x20, mul(words, 0x20)))
        }
    }

    function _leafHash(StatusLeaf calldata leaf) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(leaf))));
    }
}
