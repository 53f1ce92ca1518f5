// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Governed} from "./governance/Governed.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {IRiskParams} from "./interfaces/IRiskParams.sol";
import {Instrument, Kind} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title Instruments
contract Instruments is IInstruments, Governed {
    struct Funding {
        int128 cumulative; // USD per unit, PRICE_SCALE, always on TICK
        uint64 lastUpdate;
        uint64 markTime; // time of the last trade: its premium decays to zero over FUNDING_DECAY
        int128 premium; // last traded price minus the index then, clamped to ±maxFundingRate·index
        int128 carry; // accrued below one TICK, in price·seconds·2·FUNDING_DECAY: never lost
    }

    // ---------------------------------------------------------------- immutables
    IPriceFeed public immutable feed;
    IRiskParams public immutable riskParams;

    // ---------------------------------------------------------------- storage
    Instrument[] internal _instruments; // id = index + 1
    mapping(uint32 => Funding) internal _funding;
    mapping(uint8 => mapping(uint64 => uint256)) internal _settlement;
    address public vault;

    // ---------------------------------------------------------------- constructor
    constructor(address owner_, IPriceFeed feed_, IRiskParams riskParams_) Ownable(owner_) {
        feed = feed_;
        riskParams = riskParams_;
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IInstruments
    function setVault(address vault_) external onlyOwner {
        if (vault != address(0)) revert Instruments_VaultAlreadySet();
        if (vault_ == address(0)) revert Instruments_ZeroAddress();
        vault = vault_;
        emit VaultSet(vault_);
    }

    /// @inheritdoc IInstruments
    function list(Kind kind, uint8 underlying, uint64 expiry, uint128 strike) external onlyOwner returns (uint32 id) {
        if (underlying >= feed.numUnderlyings()) revert Instruments_BadUnderlying(underlying);
        if (kind == Kind.PERP) {
            if (expiry != 0) revert Instruments_BadExpiry(expiry);
        } else if (expiry <= block.timestamp) {
            revert Instruments_BadExpiry(expiry);
        }
        bool isOption = kind == Kind.CALL || kind == Kind.PUT;
        if (isOption ? (strike == 0 || strike % Constants.TICK != 0 || strike > Constants.MAX_PRICE) : strike != 0) {
            revert Instruments_BadStrike(strike);
        }
        _instruments.push(Instrument(kind, underlying, expiry, strike));
        id = uint32(_instruments.length);
        if (kind == Kind.PERP) _funding[id].lastUpdate = uint64(block.timestamp);
        emit InstrumentListed(id, kind, underlying, expiry, strike);
    }

    // ---------------------------------------------------------------- core
    /// @inheritdoc IInstruments
    function updateFunding(uint32 id) public returns (int256) {
        Instrument memory ins = get(id);
        if (ins.kind != Kind.PERP) revert Instruments_NotPerp(id);
        (uint256 index,) = feed.latestPrice(ins.underlying);
        return _accrue(id, index);
    }

    /// @dev Accrues funding from the last update to now: the last traded premium p (clamped to the
    /// current cap) weighted by w(s) = max(0, 1 − (s − markTime)/FUNDING_DECAY), per FUNDING_PERIOD:
    /// Δ = p · ∫ w ds / FUNDING_PERIOD, in whole TICKs towards zero, the remainder carried exactly to the
    /// next accrual (so no poking frequency loses funding).
    function _accrue(uint32 id, uint256 index) internal returns (int256) {
        Funding storage f = _funding[id];
        if (block.timestamp == f.lastUpdate) return f.cumulative;
        int256 p = _clamp(f.premium, index);
        uint256 d = Constants.FUNDING_DECAY;
        uint256 a = Math.min(f.lastUpdate - f.markTime, d);
        uint256 b = Math.min(block.timestamp - f.markTime, d);
        // 2d · ∫_a^b (1 − s/d) ds = 2d(b − a) − (b² − a²) >= 0; all terms below 2^60
        int256 acc = p * int256(2 * d * (b - a) - (b * b - a * a)) + f.carry;
        int256 unit = int256(2 * d * Constants.FUNDING_PERIOD * Constants.TICK);
        int256 ticks = acc / unit; // towards zero
        f.carry = SafeCast.toInt128(acc - ticks * unit);
        f.cumulative = SafeCast.toInt128(f.cumulative + ticks * int256(Constants.TICK));
        f.lastUpdate = uint64(block.timestamp);
        emit FundingUpdated(id, f.cumulative, index, p, f.carry);
        return f.cumulative;
    }

    /// @dev A premium clamped to ±maxFundingRate · index.
    function _clamp(int256 premium, uint256 index) internal view returns (int256) {
        int256 cap = int256((index * riskParams.params().maxFundingRate) / Constants.WAD);
        return premium > cap ? cap : (premium < -cap ? -cap : premium);
    }

    /// @inheritdoc IInstruments
    function recordTrade(uint32 id, uint256 price) external {
        if (msg.sender != vault) revert Instruments_OnlyVault();
        Funding storage f = _funding[id];
        // The old premium governs the time up to this trade: accrue it first. A stale feed never
        // blocks a trade; with no index there is no premium, and the stale time accrues nothing.
        int256 premium = 0; // no index, no premium
        uint256 index = 0;
        try feed.latestPrice(_instruments[id - 1].underlying) returns (uint256 index_, uint64) {
            index = index_;
            _accrue(id, index);
            premium = _clamp(int256(price) - int256(index), index);
        } catch {
            f.lastUpdate = uint64(block.timestamp);
        }
        (f.premium, f.markTime) = (SafeCast.toInt128(premium), uint64(block.timestamp));
        emit FundingMarkSet(id, price, index, premium);
    }

    /// @inheritdoc IInstruments
    function fixSettlement(uint8 underlying, uint64 expiry, uint256 round) external returns (uint256 price) {
        price = _settlement[underlying][expiry];
        if (price != 0) return price;
        if (expiry > block.timestamp) revert Instruments_NotExpired(expiry);
        if (feed.roundTimestamp(round) < expiry) revert Instruments_NotFirstRoundAfterExpiry(round);
        if (round > 1 && feed.roundTimestamp(round - 1) >= expiry) revert Instruments_NotFirstRoundAfterExpiry(round);
        price = feed.priceAt(round, underlying);
        price -= price % Constants.TICK;
        _settlement[underlying][expiry] = price;
        emit SettlementFixed(underlying, expiry, round, price);
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IInstruments
    function get(uint32 id) public view returns (Instrument memory) {
        if (id == 0 || id > _instruments.length) revert Instruments_UnknownInstrument(id);
        return _instruments[id - 1];
    }

    /// @inheritdoc IInstruments
    function count() external view returns (uint256) {
        return _instruments.length;
    }

    /// @inheritdoc IInstruments
    function cumulativeFunding(uint32 id) external view returns (int256) {
        return _funding[id].cumulative;
    }

    /// @inheritdoc IInstruments
    function settlementPrice(uint8 underlying, uint64 expiry) external view returns (uint256 price) {
        price = _settlement[underlying][expiry];
        if (price == 0) revert Instruments_SettlementNotFixed(underlying, expiry);
    }
}
