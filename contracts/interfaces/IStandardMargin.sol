// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title StandardMargin: the conservative on-chain margin of emergency mode.
/// @notice Used when no status root has arrived for `emergencyDelay` (the engine or its signers are
/// gone). Computed from the price feed alone, position by position, bounded by the position cap:
/// - equity = cash (net of uncharged socialised loss) + Σ collateral × price × (1 − haircut)
///   + Σ linear (size × index − cost basis − unsettled funding) + Σ options at intrinsic value;
/// - requirement = Σ |size| × index × emergencyLinearRate (perps, futures)
///   + Σ short options |size| × index × emergencyOptionRate;
/// - mark-to-market equity is the same equity with no haircuts.
/// Long options count at intrinsic value only (never above their worth) and short options at intrinsic
/// plus the rate, so the figures are conservative against the engine's.
interface IStandardMargin {
    error StandardMargin_Insufficient(int256 equity, uint256 requirement);

    /// @notice The account's standard figures at the latest feed round (reverts while the feed is stale).
    /// @return equity margin equity, with haircuts (quote units)
    /// @return mtmEquity mark-to-market equity, no haircuts (quote units)
    /// @return requirement the standard initial margin (quote units, rounded up)
    function figures(address account) external view returns (int256 equity, int256 mtmEquity, uint256 requirement);

    /// @notice The same figures at the last posted price round, however old (never reverts for a stale
    /// feed): what the Vault's emergency close checks a closing fill against (Liquity v2 closes at its
    /// last good price the same way). Only position-reducing fills use it, never withdrawals or liquidations.
    function closingFigures(address account)
        external
        view
        returns (int256 equity, int256 mtmEquity, uint256 requirement);

    /// @notice Reverts with StandardMargin_Insufficient unless equity covers the standard requirement.
    function requireInitial(address account) external view;
}
