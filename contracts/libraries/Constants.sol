// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Protocol-wide units and limits.
/// @dev Sizes are signed integers scaled by SIZE_SCALE (1e18 = one unit of the underlying);
/// prices are scaled by PRICE_SCALE (1e18 = 1 USD). Sizes are whole multiples of LOT and prices of
/// TICK, so that size * price / VALUE_DIVISOR is always an exact number of 6-decimal quote units:
/// every trade, funding payment and settlement is then exactly zero-sum, with no rounding dust.
library Constants {
    uint256 internal constant PRICE_SCALE = 1e18;
    uint256 internal constant SIZE_SCALE = 1e18;
    uint256 internal constant WAD = 1e18;
    /// @dev 0.001 unit of the underlying.
    uint256 internal constant LOT = 1e15;
    /// @dev 0.001 USD.
    uint256 internal constant TICK = 1e15;
    /// @dev size (1e18) * price (1e18) / 1e30 = quote units (1e6).
    uint256 internal constant VALUE_DIVISOR = 1e30;
    uint8 internal constant QUOTE_DECIMALS = 6;
    /// @dev Bounds that keep every product below 2**255.
    uint256 internal constant MAX_SIZE = 1e30;
    uint256 internal constant MAX_PRICE = 1e30;
    uint256 internal constant MAX_POSITIONS = 64;
    uint256 internal constant MAX_UNDERLYINGS = 4;
    uint256 internal constant MAX_SIGNERS = 16;
    uint256 internal constant MAX_COLLATERALS = 8;
    uint256 internal constant FUNDING_PERIOD = 8 hours;
    /// @dev A traded premium decays linearly to zero (mark = index) over this time without trades.
    uint256 internal constant FUNDING_DECAY = 1 hours;
}
