// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IExchange, SignedOrder, Bands} from "./interfaces/IExchange.sol";
import {IVault} from "./interfaces/IVault.sol";
import {IRiskParams, Params} from "./interfaces/IRiskParams.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {Order, Fill, MarginProof, Instrument, Kind} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {SignedMath} from "./libraries/SignedMath.sol";

/// @notice The Vault's wiring views the Exchange reads once, at construction.
interface IVaultWiring {
    function feed() external view returns (IPriceFeed);
    function instruments() external view returns (IInstruments);
}

/// @title Exchange
contract Exchange is IExchange, EIP712, ReentrancyGuard, Ownable2Step {
    // ---------------------------------------------------------------- constants
    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(address account,address signer,uint32 instrument,bool isBuy,bool isMaker,uint128 size,"
        "uint128 limitPrice,uint64 nonce,uint64 deadline,uint64 grant)"
    );
    /// @notice Hard bounds of the bands (WAD fractions of the index).
    uint64 public constant MIN_LINEAR_BAND = 0.005e18;
    uint64 public constant MAX_LINEAR_BAND = 0.5e18;

    // ---------------------------------------------------------------- immutables
    IVault public immutable vault;
    IRiskParams public immutable riskParams;
    IPriceFeed public immutable feed;
    IInstruments public immutable instruments;

    // ---------------------------------------------------------------- storage
    /// @dev One grant of an operator by an account: `version` counts grants, `active` until revoked.
    struct Grant {
        uint64 version;
        bool active;
    }

    mapping(bytes32 => uint128) public filled;
    mapping(bytes32 => bool) public cancelled;
    mapping(address => uint64) public minNonce;
    mapping(address => mapping(address => Grant)) public operatorGrant;
    Bands public bands;
    address public guardian;

    // ---------------------------------------------------------------- constructor
    /// @param bands_ the initial bands (within the hard bounds)
    constructor(IVault vault_, IRiskParams riskParams_, address owner_, address guardian_, Bands memory bands_)
        EIP712("pmsim Exchange", "1")
        Ownable(owner_)
    {
        vault = vault_;
        riskParams = riskParams_;
        feed = IVaultWiring(address(vault_)).feed();
        instruments = IVaultWiring(address(vault_)).instruments();
        _setGuardian(guardian_);
        _setBands(bands_);
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IExchange
    function setBands(Bands calldata b) external onlyOwner {
        _setBands(b);
    }

    /// @inheritdoc IExchange
    function tightenBands(Bands calldata b) external {
        if (msg.sender != guardian && msg.sender != owner()) revert Exchange_NotAuthorized(msg.sender);
        Bands memory old = bands;
        if (b.linear > old.linear || b.option > old.option || b.operator > old.operator) revert Exchange_NotTighter();
        _setBands(b);
    }

    /// @inheritdoc IExchange
    function setGuardian(address guardian_) external onlyOwner {
        _setGuardian(guardian_);
    }

    /// @notice Disabled: the protocol always has an owner (its timelock).
    function renounceOwnership() public pure override {
        revert Exchange_RenounceDisabled();
    }

    function _setBands(Bands memory b) internal {
        bool ok = b.linear >= MIN_LINEAR_BAND && b.linear <= MAX_LINEAR_BAND && b.option != 0
            && b.option <= MAX_LINEAR_BAND && b.operator <= b.linear;
        if (!ok) revert Exchange_BadBands();
        bands = b;
        emit BandsSet(b.linear, b.option, b.operator);
    }

    function _setGuardian(address guardian_) internal {
        if (guardian_ == address(0)) revert Exchange_ZeroAddress();
        guardian = guardian_;
        emit GuardianSet(guardian_);
    }

    // ---------------------------------------------------------------- operators
    /// @inheritdoc IExchange
    function setOperator(address operator, bool allowed) external {
        if (operator == address(0) || operator == msg.sender) revert Exchange_ZeroAddress();
        uint64 version = operatorGrant[msg.sender][operator].version;
        if (allowed) version += 1; // every grant is a new version: orders signed under older ones stay dead
        operatorGrant[msg.sender][operator] = Grant(version, allowed);
        emit OperatorSet(msg.sender, operator, allowed, version);
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
        (Instrument memory ins, uint256 index) = _checkBand(maker.order);
        bytes32 mh = _consume(maker, size, maker.order.limitPrice, ins, index);
        bytes32 th = _consume(taker, size, maker.order.limitPrice, ins, index);
        (uint128 makerFee, uint128 takerFee) = _execute(maker.order, taker.order, size, makerProof, takerProof);
        _emitFill(mh, th, maker.order, taker.order, size, makerFee, takerFee);
    }

    function _checkMatch(Order calldata m, Order calldata t, uint128 size) internal pure {
        if (size == 0) revert Exchange_ZeroAmount();
        if (size % Constants.LOT != 0) revert Exchange_NotOnLot(size);
        if (m.instrument != t.instrument) revert Exchange_InstrumentMismatch();
        if (m.isBuy == t.isBuy) revert Exchange_SameSide();
        if (m.account == t.account) revert Exchange_SelfTrade();
        if (!m.isMaker || t.isMaker) revert Exchange_WrongRole();
        uint128 price = m.limitPrice;
        if (t.isBuy ? price > t.limitPrice : price < t.limitPrice) revert Exchange_PriceOutsideLimit(price, t.limitPrice);
    }

    /// @dev The fill price (the maker's limit) against the band around the index: linear instruments
    /// within ±linear·S; options within their no-arbitrage bounds for any spot in that band. The index
    /// is the last posted price, fresh or not: past the feed's heartbeat the Vault refuses every attested
    /// fill (F-6), and the emergency close it still allows is banded around the last good price.
    function _checkBand(Order calldata m) internal view returns (Instrument memory ins, uint256 index) {
        ins = instruments.get(m.instrument);
        (uint64 round,) = feed.latestRound();
        index = feed.priceAt(round, ins.underlying);
        uint256 width = SignedMath.mulWadDown(index, bands.linear);
        (uint256 low, uint256 high) = (index - width, index + width);
        if (ins.kind == Kind.CALL) {
            low = low > ins.strike ? low - ins.strike : 0; // [intrinsic at the lowest spot, the highest spot]
        } else if (ins.kind == Kind.PUT) {
            (low, high) = (high < ins.strike ? ins.strike - high : 0, ins.strike); // [intrinsic at the highest spot, K]
        }
        uint256 price = m.limitPrice;
        if (price < low || price > high) revert Exchange_PriceOutsideBand(price, low, high);
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
        // Safe casts: notional <= MAX_SIZE * MAX_PRICE / 1e18 and fees are at most a WAD fraction of it,
        // far below 2^128 (the Vault refuses sizes and prices beyond those bounds).
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

    /// @dev Checks an order's deadline, nonce, signature (ECDSA or ERC-1271 through OpenZeppelin's
    /// SignatureChecker) and remaining size, and an operator's limits; records the fill.
    function _consume(SignedOrder calldata so, uint128 size, uint256 price, Instrument memory ins, uint256 index)
        internal
        returns (bytes32 h)
    {
        Order calldata o = so.order;
        if (o.deadline < block.timestamp) revert Exchange_OrderExpired(o.deadline, block.timestamp);
        if (o.nonce < minNonce[o.account]) revert Exchange_NonceTooLow(o.nonce, minNonce[o.account]);
        h = _hash(o);
        if (cancelled[h]) revert Exchange_OrderCancelled(h);
        uint128 done = filled[h];
        if (uint256(done) + size > o.size) revert Exchange_Overfill(h, done, o.size);
        if (!SignatureChecker.isValidSignatureNowCalldata(o.signer, h, so.signature)) {
            revert Exchange_BadSignature(o.account, o.signer);
        }
        if (o.signer != o.account) _checkOperator(o, size, price, ins, index);
        filled[h] = done + size;
    }

    /// @dev An operator-signed order: the grant it names must be the active one; a linear fill (at
    /// `price`, the maker's limit) no worse for the account than index · (1 ± bands.operator), whatever
    /// the order's own limit; an option fill must reduce the position.
    function _checkOperator(Order calldata o, uint128 size, uint256 price, Instrument memory ins, uint256 index)
        internal
        view
    {
        Grant memory g = operatorGrant[o.account][o.signer];
        if (!g.active || g.version != o.grant) revert Exchange_NotOperator(o.account, o.signer, o.grant);
        if (ins.kind == Kind.PERP || ins.kind == Kind.FUTURE) {
            uint256 width = SignedMath.mulWadDown(index, bands.operator);
            if (o.isBuy ? price > index + width : price < index - width) {
                revert Exchange_OperatorPriceOutsideBand(price, o.isBuy ? index + width : index - width);
            }
        } else {
            (int256 held,,) = vault.positionOf(o.account, o.instrument);
            bool reduces = o.isBuy ? held < 0 && uint256(-held) >= size : held > 0 && uint256(held) >= size;
            if (!reduces) revert Exchange_OperatorMustReduce(o.account, o.instrument);
        }
    }

    /// @inheritdoc IExchange
    function cancel(Order calldata order) external {
        if (msg.sender != order.account && !isOperator(order.account, msg.sender)) {
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

    /// @inheritdoc IExchange
    function isOperator(address account, address operator) public view returns (bool) {
        return operatorGrant[account][operator].active;
    }
}
