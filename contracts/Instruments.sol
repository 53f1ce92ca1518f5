// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {IRiskParams} from "./interfaces/IRiskParams.sol";
import {Instrument, Kind} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";

/// @title Instruments
contract Instruments is IInstruments, Ownable2Step {
    struct Funding {
        int128 cumulative; // USD per unit, PRICE_SCALE, always on TICK
        uint64 lastUpdate;
        uint128 mark; // last traded price, 0 before the first trade
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

    /// @dev Accrues funding up to now at the prevailing mark, then stamps the time.
    function _accrue(uint32 id, uint256 index) internal returns (int256) {
        Funding storage f = _funding[id];
        uint256 elapsed = block.timestamp - f.lastUpdate;
        if (elapsed == 0) return f.cumulative;
        uint256 mark = f.mark == 0 ? index : f.mark;
        int256 premium = int256(mark) - int256(index);
        int256 cap = int256((index * riskParams.params().maxFundingRate) / Constants.WAD);
        if (premium > cap) premium = cap;
        if (premium < -cap) premium = -cap;
        int256 delta = (premium * int256(elapsed)) / int256(Constants.FUNDING_PERIOD);
        delta -= delta % int256(Constants.TICK); // towards zero, on TICK: payments stay exact
        f.cumulative += int128(delta);
        f.lastUpdate = uint64(block.timestamp);
        emit FundingUpdated(id, f.cumulative, index, mark);
        return f.cumulative;
    }

    /// @inheritdoc IInstruments
    function recordTrade(uint32 id, uint256 price) external {
        if (msg.sender != vault) revert Instruments_OnlyVault();
        // The old mark governs the time up to this trade: accrue it first. A stale feed never
        // blocks a trade; the period then accrues at the next update.
        try feed.latestPrice(_instruments[id - 1].underlying) returns (uint256 index, uint64) {
            _accrue(id, index);
        } catch {}
        _funding[id].mark = uint128(price);
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
