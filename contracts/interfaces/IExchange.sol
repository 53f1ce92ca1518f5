// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Order, MarginProof} from "../libraries/Types.sol";

/// @notice An order and the signature of `order.signer` over its EIP-712 digest: 65 bytes (r, s, v)
/// for an externally owned signer, anything its `isValidSignature` accepts for a contract (ERC-1271).
struct SignedOrder {
    Order order;
    bytes signature;
}

/// @notice Price bands, WAD fractions of the underlying's index price.
/// @param linear perpetuals and futures fill within ±linear of the index; option bounds allow the
/// spot anywhere within it
/// @param option the band the risk engine's signers hold an option fill to around their model price
/// (the attestation binds the price, so the contracts enforce it through the quorum)
/// @param operator an operator-signed linear order fills no worse for the account than index ±operator
struct Bands {
    uint64 linear;
    uint64 option;
    uint64 operator;
}

/// @title Exchange: matches two signed orders, submitted by any relayer.
/// @notice Orders (EIP-712 domain "pmsim Exchange", version "1") fill partially up to their size.
/// Each order states its role (`isMaker`): the first order of a trade must be a maker order, the
/// second a taker order, so a relayer can neither choose the fill price (the maker's limit) nor who
/// pays the taker fee. Fees are charged on |size| * price, rounded up.
///
/// Price bands: perpetuals and futures fill within `bands.linear` of the feed's index; options
/// within no-arbitrage bounds for any spot S' in that band (call in [max(0, S'−K), S'], put in
/// [max(0, K−S'), K], with r = 0 as the margin model assumes), and, through the trade attestation
/// that binds the price, within `bands.option` · S of the engine's model price.
///
/// Operators: an account lets `operator` sign orders for it with `setOperator`. Each grant has a
/// version; an operator-signed order names the version it was signed under and dies once the grant
/// is revoked or re-granted. Operator-signed linear orders fill no worse for the account than
/// index · (1 ± bands.operator); operator-signed option orders must reduce the account's position.
/// An operator never withdraws.
interface IExchange {
    error Exchange_ZeroAmount();
    error Exchange_NotOnLot(uint256 size);
    error Exchange_InstrumentMismatch();
    error Exchange_SameSide();
    error Exchange_SelfTrade();
    /// @notice The first order is not a maker order or the second not a taker order.
    error Exchange_WrongRole();
    error Exchange_OrderExpired(uint64 deadline, uint256 now_);
    error Exchange_PriceOutsideLimit(uint256 price, uint256 limit);
    error Exchange_Overfill(bytes32 orderHash, uint256 filled, uint256 size);
    error Exchange_OrderCancelled(bytes32 orderHash);
    error Exchange_BadSignature(address account, address signer);
    /// @notice `signer` holds no active grant of `account` at version `version`.
    error Exchange_NotOperator(address account, address signer, uint64 version);
    error Exchange_NonceTooLow(uint64 nonce, uint64 minNonce);
    error Exchange_NotAuthorized(address caller);
    /// @notice The fill price lies outside [low, high] (the band around the index, or an option's bounds).
    error Exchange_PriceOutsideBand(uint256 price, uint256 low, uint256 high);
    /// @notice An operator-signed order would fill worse for the account than `bound`.
    error Exchange_OperatorPriceOutsideBand(uint256 price, uint256 bound);
    /// @notice An operator-signed option order must reduce the account's position.
    error Exchange_OperatorMustReduce(address account, uint32 instrument);
    error Exchange_BadBands();
    /// @notice The guardian may only tighten bands.
    error Exchange_NotTighter();
    error Exchange_ZeroAddress();
    error Exchange_RenounceDisabled();

    event OrderFilled(
        bytes32 indexed makerHash,
        bytes32 indexed takerHash,
        address maker,
        address taker,
        uint32 instrument,
        uint256 size,
        uint256 price,
        uint256 makerFee,
        uint256 takerFee
    );
    event OrderCancelled(address indexed account, bytes32 indexed orderHash);
    event MinNonceSet(address indexed account, uint64 minNonce);
    /// @param version the grant's version: every grant starts a new one, revoking keeps it
    event OperatorSet(address indexed account, address indexed operator, bool allowed, uint64 version);
    event BandsSet(uint64 linear, uint64 option, uint64 operator);
    event GuardianSet(address guardian);

    /// @notice Fills `size` between a resting maker order and a taker order, with an attestation
    /// of each account's state after the fill.
    /// @param maker an order with `isMaker`: its limit is the fill price, it pays the maker fee
    /// @param taker an order without `isMaker`: its limit must cross, it pays the taker fee
    /// @param size the fill, on LOT
    /// @param makerProof attestation of the maker account after the fill (ActionHash.trade)
    /// @param takerProof attestation of the taker account after the fill
    function trade(
        SignedOrder calldata maker,
        SignedOrder calldata taker,
        uint128 size,
        MarginProof calldata makerProof,
        MarginProof calldata takerProof
    ) external;

    /// @notice Cancels one order. The account or one of its active operators.
    function cancel(Order calldata order) external;

    /// @notice Cancels every order of the caller with a nonce below `minNonce` (only increases).
    function setMinNonce(uint64 minNonce) external;

    /// @notice Lets `operator` sign orders for the caller (`allowed`), or stops it. A grant starts a new
    /// version, so orders signed under an earlier grant never fill again, even after a re-grant.
    /// @param operator a non-zero address, not the caller
    /// @param allowed true to grant, false to revoke
    function setOperator(address operator, bool allowed) external;

    /// @notice Sets every band. Owner only (behind the timelock), within hard bounds:
    /// linear in [MIN_LINEAR_BAND, MAX_LINEAR_BAND], option in (0, MAX_LINEAR_BAND], operator ≤ linear.
    function setBands(Bands calldata bands) external;

    /// @notice Narrows bands at once, no field wider than now. Guardian or owner.
    function tightenBands(Bands calldata bands) external;

    /// @notice Sets the guardian (non-zero). Owner only.
    function setGuardian(address guardian) external;

    /// @notice The order's EIP-712 digest, as its signer signs it.
    function orderHash(Order calldata order) external view returns (bytes32);
    function filled(bytes32 orderHash) external view returns (uint128);
    function cancelled(bytes32 orderHash) external view returns (bool);
    function minNonce(address account) external view returns (uint64);
    /// @notice The grant of `operator` by `account`: its version and whether it is active.
    function operatorGrant(address account, address operator) external view returns (uint64 version, bool active);
    /// @notice True if `operator` may sign for `account` now.
    function isOperator(address account, address operator) external view returns (bool);
    function bands() external view returns (uint64 linear, uint64 option, uint64 operator);
    function guardian() external view returns (address);
}
