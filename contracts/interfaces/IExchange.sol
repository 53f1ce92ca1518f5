// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Order, MarginProof} from "../libraries/Types.sol";

/// @notice An order and its 65-byte EIP-712 signature by the account or one of its operators.
struct SignedOrder {
    Order order;
    bytes signature;
}

/// @title Exchange: matches two signed orders, submitted by any relayer.
/// @notice Orders (EIP-712 domain "pmsim Exchange", version "1") fill partially up to their size;
/// the fill price is the maker's limit price and must satisfy the taker's limit. Fees are charged
/// on |size| * price, rounded up: `makerFee` to the maker, `takerFee` to the taker.
interface IExchange {
    error Exchange_ZeroAmount();
    error Exchange_NotOnLot(uint256 size);
    error Exchange_InstrumentMismatch();
    error Exchange_SameSide();
    error Exchange_SelfTrade();
    error Exchange_OrderExpired(uint64 deadline, uint256 now_);
    error Exchange_PriceOutsideLimit(uint256 price, uint256 limit);
    error Exchange_Overfill(bytes32 orderHash, uint256 filled, uint256 size);
    error Exchange_OrderCancelled(bytes32 orderHash);
    error Exchange_BadSignature(address account, address recovered);
    error Exchange_NonceTooLow(uint64 nonce, uint64 minNonce);
    error Exchange_NotAuthorized(address caller);

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

    /// @notice Fills `size` between a resting maker order and a taker order, with an attestation
    /// of each account's state after the fill.
    function trade(
        SignedOrder calldata maker,
        SignedOrder calldata taker,
        uint128 size,
        MarginProof calldata makerProof,
        MarginProof calldata takerProof
    ) external;

    /// @notice Cancels one order. The account or one of its operators.
    function cancel(Order calldata order) external;

    /// @notice Cancels every order of the caller with a nonce below `minNonce` (only increases).
    function setMinNonce(uint64 minNonce) external;

    function orderHash(Order calldata order) external view returns (bytes32);
    function filled(bytes32 orderHash) external view returns (uint128);
    function cancelled(bytes32 orderHash) external view returns (bool);
    function minNonce(address account) external view returns (uint64);
}
