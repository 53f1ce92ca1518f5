// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Instrument, Kind} from "../libraries/Types.sol";

/// @title Instruments: the listed perpetuals, futures and European options, their funding indices
/// and their settlement prices.
/// @notice All instruments are cash-settled in the quote asset; one unit of size is one unit of the
/// underlying. A perpetual accrues funding into a cumulative index (USD per unit, PRICE_SCALE, on
/// TICK): each trade sets the premium `p = clamp(price − index, ±maxFundingRate · index)`, which decays
/// linearly to zero over FUNDING_DECAY (1 h) without trades; funding accrues `p · ∫ w(s) ds /
/// FUNDING_PERIOD` with w(s) = max(0, 1 − (s − tradeTime)/FUNDING_DECAY), in whole TICKs with the
/// remainder carried (exact however often it is poked). One trade, however far off the index, moves
/// funding by at most cap · FUNDING_DECAY / 2 / FUNDING_PERIOD = 1/16 of a period at the cap. An expiry's settlement price is the
/// first feed round at or after it, rounded down to TICK; anyone may fix it.
interface IInstruments {
    error Instruments_UnknownInstrument(uint256 id);
    error Instruments_BadUnderlying(uint256 underlying);
    error Instruments_BadExpiry(uint64 expiry);
    error Instruments_BadStrike(uint128 strike);
    error Instruments_NotPerp(uint256 id);
    error Instruments_NotExpired(uint64 expiry);
    error Instruments_NotFirstRoundAfterExpiry(uint256 round);
    error Instruments_SettlementNotFixed(uint8 underlying, uint64 expiry);
    error Instruments_OnlyVault();
    error Instruments_VaultAlreadySet();
    error Instruments_ZeroAddress();

    event InstrumentListed(uint32 indexed id, Kind kind, uint8 underlying, uint64 expiry, uint128 strike);
    /// @param premium the clamped premium the accrual used; carry the sub-TICK remainder carried forward
    event FundingUpdated(uint32 indexed id, int256 cumulativeFunding, uint256 indexPrice, int256 premium, int256 carry);
    /// @notice A perpetual traded at `price`: its premium over `indexPrice` (0 if the feed was stale), clamped.
    event FundingMarkSet(uint32 indexed id, uint256 price, uint256 indexPrice, int256 premium);
    event SettlementFixed(uint8 indexed underlying, uint64 indexed expiry, uint256 round, uint256 price);
    event VaultSet(address vault);

    /// @notice Lists an instrument. Owner only. Options need a strike on TICK and a future expiry.
    function list(Kind kind, uint8 underlying, uint64 expiry, uint128 strike) external returns (uint32 id);

    /// @notice Accrues funding of perpetual `id` up to now. Anyone.
    function updateFunding(uint32 id) external returns (int256 cumulativeFunding);

    /// @notice Accrues funding at the previous premium, then records the premium of the last traded
    /// price of a perpetual over the index. Vault only.
    function recordTrade(uint32 id, uint256 price) external;

    /// @notice Fixes the settlement price of (`underlying`, `expiry`) from `round`, which must be the
    /// first round at or after `expiry`. Anyone; idempotent.
    function fixSettlement(uint8 underlying, uint64 expiry, uint256 round) external returns (uint256 price);

    function setVault(address vault) external;

    function get(uint32 id) external view returns (Instrument memory);
    function count() external view returns (uint256);
    function cumulativeFunding(uint32 id) external view returns (int256);
    function settlementPrice(uint8 underlying, uint64 expiry) external view returns (uint256);
}
