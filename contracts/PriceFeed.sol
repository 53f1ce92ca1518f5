// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {IPriceFeed, IPriceRoundListener} from "./interfaces/IPriceFeed.sol";
import {SignerQuorum} from "./SignerQuorum.sol";
import {Governed} from "./governance/Governed.sol";
import {Guarded} from "./governance/Guarded.sol";
import {Constants} from "./libraries/Constants.sol";

/// @title PriceFeed
contract PriceFeed is IPriceFeed, EIP712, SignerQuorum, Guarded {
    // ---------------------------------------------------------------- constants
    bytes32 public constant PRICE_ROUND_TYPEHASH =
        keccak256("PriceRound(uint64 round,uint64 timestamp,uint256[] prices)");
    uint64 public constant MIN_HEARTBEAT = 1 minutes;
    uint64 public constant MAX_HEARTBEAT = 1 days;
    uint64 public constant MAX_MOVE_LOWER = 0.005e18;
    uint64 public constant MAX_MOVE_UPPER = 0.5e18;
    /// @notice The window of the big-move rule: a round is checked against the price in force this
    /// long before it (see _reference), not only against the previous round.
    uint64 public constant MOVE_WINDOW = 15 minutes;

    struct Round {
        uint64 timestamp;
        uint128[4] prices; // packed two per slot
    }

    // ---------------------------------------------------------------- immutables
    uint256 public immutable numUnderlyings;

    // ---------------------------------------------------------------- storage
    uint64 public heartbeat;
    uint64 public maxDelay;
    uint64 public maxMove;
    uint64 internal _latestRound;
    mapping(uint256 => Round) internal _rounds;
    IPriceRoundListener public roundListener;
    /// @dev The reference round of the latest post (packed beside roundListener, read with it).
    uint64 internal _referenceRound;

    // ---------------------------------------------------------------- constructor
    constructor(address owner_, uint256 numUnderlyings_, uint64 heartbeat_, uint64 maxDelay_, uint64 maxMove_)
        Ownable(owner_)
        EIP712("pmsim PriceFeed", "1")
        Guarded(owner_)
    {
        if (numUnderlyings_ == 0 || numUnderlyings_ > Constants.MAX_UNDERLYINGS) revert PriceFeed_BadConfig();
        numUnderlyings = numUnderlyings_;
        _setConfig(heartbeat_, maxDelay_, maxMove_);
    }

    // ---------------------------------------------------------------- admin

    /// @inheritdoc IPriceFeed
    function setConfig(uint64 heartbeat_, uint64 maxDelay_, uint64 maxMove_) external onlyOwner {
        _setConfig(heartbeat_, maxDelay_, maxMove_);
    }

    function _setConfig(uint64 heartbeat_, uint64 maxDelay_, uint64 maxMove_) internal {
        if (heartbeat_ < MIN_HEARTBEAT || heartbeat_ > MAX_HEARTBEAT) revert PriceFeed_BadConfig();
        if (maxDelay_ == 0 || maxDelay_ > heartbeat_) revert PriceFeed_BadConfig();
        if (maxMove_ < MAX_MOVE_LOWER || maxMove_ > MAX_MOVE_UPPER) revert PriceFeed_BadConfig();
        (heartbeat, maxDelay, maxMove) = (heartbeat_, maxDelay_, maxMove_);
        emit ConfigSet(heartbeat_, maxDelay_, maxMove_);
    }

    /// @inheritdoc IPriceFeed
    function tightenConfig(uint64 heartbeat_, uint64 maxDelay_, uint64 maxMove_) external onlyGuardian {
        _noLooser(heartbeat, heartbeat_, false, "heartbeat");
        _noLooser(maxDelay, maxDelay_, false, "maxDelay");
        _noLooser(maxMove, maxMove_, false, "maxMove");
        _setConfig(heartbeat_, maxDelay_, maxMove_);
    }

    /// @inheritdoc IPriceFeed
    function setRoundListener(IPriceRoundListener listener) external onlyOwner {
        if (address(roundListener) != address(0) || _latestRound != 0) revert PriceFeed_ListenerAlreadySet();
        roundListener = listener;
        emit RoundListenerSet(address(listener));
    }

    // ---------------------------------------------------------------- core
    /// @inheritdoc IPriceFeed
    function post(uint64 timestamp, uint256[] calldata prices, bytes calldata sigs) external {
        uint256 n = numUnderlyings;
        if (prices.length != n) revert PriceFeed_WrongLength(prices.length, n);
        uint64 latest = _latestRound;
        Round storage prev = _rounds[latest];
        if (latest != 0 && timestamp <= prev.timestamp) revert PriceFeed_NotNewer(timestamp, prev.timestamp);
        if (timestamp > block.timestamp) revert PriceFeed_FutureTimestamp(timestamp, block.timestamp);
        if (block.timestamp - timestamp > maxDelay) revert PriceFeed_StaleUpdate(timestamp, block.timestamp);
        uint64 ref = latest == 0 ? 0 : _reference(_referenceRound, latest, timestamp);
        uint256 bigMove = _checkPrices(prices, latest, ref);
        uint256 required = _quorum;
        if (bigMove != 0) {
            required = _signerCount;
            if (sigs.length / 65 < required) revert PriceFeed_MoveNeedsAllSigners(bigMove - 1);
        }
        uint64 round = latest + 1;
        uint256 signed = _verifyQuorum(_digest(round, timestamp, prices), sigs, required);
        Round storage r = _rounds[round];
        r.timestamp = timestamp;
        for (uint256 i; i < n; ++i) {
            r.prices[i] = uint128(prices[i]); // safe: _checkPrices bounds each price by MAX_PRICE < 2^128
        }
        _latestRound = round;
        // A round every signer signed is the new reference: after a real crash, signed by all, the
        // next rounds need only the quorum again.
        if (signed >= _signerCount) ref = round;
        if (ref != _referenceRound) _referenceRound = ref;
        emit PricesPosted(round, timestamp, prices);
        if (address(roundListener) != address(0)) roundListener.onPriceRound(round);
    }

    /// @dev The reference round of a round stamped `timestamp`: the latest round stamped at least
    /// MOVE_WINDOW earlier (the price in force a window before), but never before `from` (the last
    /// reference, which also moves to every round all signers signed); the first round until a
    /// round is that old. Bounded gas: two steps forward from `from` (a steady feed moves its
    /// reference one round per post), else a binary search over (from, latest], at most
    /// log2(latest) reads.
    function _reference(uint64 from, uint64 latest, uint64 timestamp) internal view returns (uint64) {
        uint64 lo = from == 0 ? 1 : from;
        if (timestamp < MOVE_WINDOW) return lo;
        uint64 cutoff = timestamp - MOVE_WINDOW;
        if (_rounds[latest].timestamp <= cutoff) return latest; // quiet for a window: the previous round
        uint64 hi = latest; // invariant: rounds[hi] is newer than cutoff; the answer is in [lo, hi)
        for (uint256 step; step < 2 && lo + 1 < hi; ++step) {
            if (_rounds[lo + 1].timestamp > cutoff) return lo;
            ++lo;
        }
        while (lo + 1 < hi) {
            uint64 mid = lo + (hi - lo) / 2;
            if (_rounds[mid].timestamp <= cutoff) lo = mid;
            else hi = mid;
        }
        return lo;
    }

    /// @dev Validates the prices; returns 1 + the first underlying that moved beyond `maxMove` from the
    /// previous round or from the reference round, or 0 (always 0 for the first round).
    function _checkPrices(uint256[] calldata prices, uint64 latest, uint64 ref) internal view returns (uint256 big) {
        Round storage prev = _rounds[latest];
        Round storage anchor = _rounds[ref];
        uint256 bound = maxMove;
        for (uint256 i; i < prices.length; ++i) {
            uint256 p = prices[i];
            if (p == 0) revert PriceFeed_ZeroPrice(i);
            if (p > Constants.MAX_PRICE) revert PriceFeed_PriceTooLarge(i);
            if (big != 0 || latest == 0) continue;
            if (_relMove(prev.prices[i], p) > bound || (ref != latest && _relMove(anchor.prices[i], p) > bound)) {
                big = i + 1;
            }
        }
    }

    function _relMove(uint256 from, uint256 to) internal pure returns (uint256) {
        uint256 diff = from > to ? from - to : to - from;
        return Math.mulDiv(diff, Constants.WAD, from, Math.Rounding.Ceil);
    }

    function _digest(uint64 round, uint64 timestamp, uint256[] calldata prices) internal view returns (bytes32) {
        bytes32 pricesHash = keccak256(abi.encodePacked(prices));
        return _hashTypedDataV4(keccak256(abi.encode(PRICE_ROUND_TYPEHASH, round, timestamp, pricesHash)));
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IPriceFeed
    function referenceRound(uint64 timestamp) public view returns (uint64) {
        uint64 latest = _latestRound;
        if (latest == 0) return 0;
        if (timestamp <= _rounds[latest].timestamp) revert PriceFeed_NotNewer(timestamp, _rounds[latest].timestamp);
        return _reference(_referenceRound, latest, timestamp);
    }

    /// @inheritdoc IPriceFeed
    function signersRequired(uint64 timestamp, uint256[] calldata prices) external view returns (uint256) {
        if (prices.length != numUnderlyings) revert PriceFeed_WrongLength(prices.length, numUnderlyings);
        uint64 latest = _latestRound;
        uint256 big = latest == 0 ? 0 : _checkPrices(prices, latest, referenceRound(timestamp));
        return big == 0 ? _quorum : _signerCount;
    }

    /// @inheritdoc IPriceFeed
    function roundDigest(uint64 round, uint64 timestamp, uint256[] calldata prices) external view returns (bytes32) {
        return _digest(round, timestamp, prices);
    }

    /// @inheritdoc IPriceFeed
    function latestRound() external view returns (uint64 round, uint64 timestamp) {
        round = _latestRound;
        timestamp = _rounds[round].timestamp;
    }

    /// @inheritdoc IPriceFeed
    function priceAt(uint256 round, uint256 underlying) public view returns (uint256) {
        if (round == 0 || round > _latestRound) revert PriceFeed_UnknownRound(round);
        if (underlying >= numUnderlyings) revert PriceFeed_UnknownUnderlying(underlying);
        return _rounds[round].prices[underlying];
    }

    /// @inheritdoc IPriceFeed
    function roundTimestamp(uint256 round) external view returns (uint64) {
        if (round == 0 || round > _latestRound) revert PriceFeed_UnknownRound(round);
        return _rounds[round].timestamp;
    }

    /// @inheritdoc IPriceFeed
    function latestPrice(uint256 underlying) external view returns (uint256 price, uint64 round) {
        round = _latestRound;
        price = priceAt(round, underlying);
        uint64 ts = _rounds[round].timestamp;
        if (block.timestamp - ts > heartbeat) revert PriceFeed_Stale(ts, block.timestamp);
    }

    /// @inheritdoc IPriceFeed
    function moveSince(uint256 round) external view returns (uint256 maxMoveWad) {
        uint256 latest = _latestRound;
        if (round == 0 || round > latest) revert PriceFeed_UnknownRound(round);
        if (round == latest) return 0;
        Round storage a = _rounds[round];
        Round storage b = _rounds[latest];
        for (uint256 i; i < numUnderlyings; ++i) {
            uint256 m = _relMove(a.prices[i], b.prices[i]);
            if (m > maxMoveWad) maxMoveWad = m;
        }
    }
}
