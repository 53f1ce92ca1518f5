// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IExchange, SignedOrder} from "./interfaces/IExchange.sol";
import {IVault} from "./interfaces/IVault.sol";
import {IRiskParams, Params} from "./interfaces/IRiskParams.sol";
import {Order, Fill, MarginProof} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {SignedMath} from "./libraries/SignedMath.sol";

/// @title Exchange
contract Exchange is IExchange, EIP712, ReentrancyGuard {
    // ---------------------------------------------------------------- constants
    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(address account,uint32 instrument,bool isBuy,uint128 size,uint128 limitPrice,uint64 nonce,uint64 deadline)"
    );

    // ---------------------------------------------------------------- immutables
    IVault public immutable vault;
    IRiskParams public immutable riskParams;

    // ---------------------------------------------------------------- storage
    mapping(bytes32 => uint128) public filled;
    mapping(bytes32 => bool) public cancelled;
    mapping(address => uint64) public minNonce;

    // ---------------------------------------------------------------- constructor
    constructor(IVault vault_, IRiskParams riskParams_) EIP712("pmsim Exchange", "1") {
        vault = vault_;
        riskParams = riskParams_;
    }

    // ---------------------------------------------------------------- core
    /// @inheritdoc IExchange
    function trade(
        SignedOrder calldata maker,
        SignedOrder calldata taker,
        uint128 size,
        MarginProof calldata makerProof,
        MarginProof calldata takerProof
    ) external nonReentrant {
        _checkMatch(maker.order, taker.order, size);
        bytes32 mh = _consume(maker, size);
        bytes32 th = _consume(taker, size);
        (uint128 makerFee, uint128 takerFee) = _execute(maker.order, taker.order, size, makerProof, takerProof);
        _emitFill(mh, th, maker.order, taker.order, size, makerFee, takerFee);
    }

    function _checkMatch(Order calldata m, Order calldata t, uint128 size) internal pure {
        if (size == 0) revert Exchange_ZeroAmount();
        if (size % Constants.LOT != 0) revert Exchange_NotOnLot(size);
        if (m.instrument != t.instrument) revert Exchange_InstrumentMismatch();
        if (m.isBuy == t.isBuy) revert Exchange_SameSide();
        if (m.account == t.account) revert Exchange_SelfTrade();
        uint128 price = m.limitPrice;
        if (t.isBuy ? price > t.limitPrice : price < t.limitPrice) revert Exchange_PriceOutsideLimit(price, t.limitPrice);
    }

    /// @dev Charges fees on |size| * price (rounded up) and hands the fill to the Vault.
    function _execute(
        Order calldata m,
        Order calldata t,
        uint128 size,
        MarginProof calldata makerProof,
        MarginProof calldata takerProof
    ) internal returns (uint128 makerFee, uint128 takerFee) {
        Params memory p = riskParams.params();
        uint256 notional = uint256(SignedMath.value(int256(uint256(size)), m.limitPrice));
        makerFee = uint128(SignedMath.mulWadUp(notional, p.makerFee));
        takerFee = uint128(SignedMath.mulWadUp(notional, p.takerFee));
        if (m.isBuy) {
            vault.applyTrade(
                Fill(m.instrument, m.account, t.account, size, m.limitPrice, makerFee, takerFee), makerProof, takerProof
            );
        } else {
            vault.applyTrade(
                Fill(m.instrument, t.account, m.account, size, m.limitPrice, takerFee, makerFee), takerProof, makerProof
            );
        }
    }

    function _emitFill(
        bytes32 mh,
        bytes32 th,
        Order calldata m,
        Order calldata t,
        uint128 size,
        uint128 makerFee,
        uint128 takerFee
    ) internal {
        emit OrderFilled(mh, th, m.account, t.account, m.instrument, size, m.limitPrice, makerFee, takerFee);
    }

    /// @dev Checks an order's deadline, nonce, signature and remaining size; records the fill.
    function _consume(SignedOrder calldata so, uint128 size) internal returns (bytes32 h) {
        Order calldata o = so.order;
        if (o.deadline < block.timestamp) revert Exchange_OrderExpired(o.deadline, block.timestamp);
        if (o.nonce < minNonce[o.account]) revert Exchange_NonceTooLow(o.nonce, minNonce[o.account]);
        h = _hash(o);
        if (cancelled[h]) revert Exchange_OrderCancelled(h);
        uint128 done = filled[h];
        if (uint256(done) + size > o.size) revert Exchange_Overfill(h, done, o.size);
        address signer = ECDSA.recover(h, so.signature);
        if (signer != o.account) revert Exchange_BadSignature(o.account, signer);
        filled[h] = done + size;
    }

    /// @inheritdoc IExchange
    function cancel(Order calldata order) external {
        if (msg.sender != order.account) {
            revert Exchange_NotAuthorized(msg.sender);
        }
        bytes32 h = _hash(order);
        cancelled[h] = true;
        emit OrderCancelled(order.account, h);
    }

    /// @inheritdoc IExchange
    function setMinNonce(uint64 minNonce_) external {
        if (minNonce_ <= minNonce[msg.sender]) revert Exchange_NonceTooLow(minNonce_, minNonce[msg.sender]);
        minNonce[msg.sender] = minNonce_;
        emit MinNonceSet(msg.sender, minNonce_);
    }

    function _hash(Order calldata o) internal view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ORDER_TYPEHASH, o)));
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IExchange
    function orderHash(Order calldata order) external view returns (bytes32) {
        return _hash(order);
    }
}
