// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Constants} from "./Constants.sol";

/// @title Signed fixed-point helpers with explicit rounding directions.
library SignedMath {
    /// @notice size * price / VALUE_DIVISOR, exact when both sit on LOT and TICK.
    function value(int256 size, uint256 price) internal pure returns (int256) {
        return (size * int256(price)) / int256(Constants.VALUE_DIVISOR);
    }

    /// @notice x * num / den rounded towards +infinity (den > 0, num >= 0).
    function mulDivCeil(int256 x, uint256 num, uint256 den) internal pure returns (int256) {
        if (x >= 0) return int256(Math.mulDiv(uint256(x), num, den, Math.Rounding.Ceil));
        return -int256(Math.mulDiv(uint256(-x), num, den, Math.Rounding.Floor));
    }

    /// @notice x * num / den rounded towards -infinity (den > 0, num >= 0).
    function mulDivFloor(int256 x, uint256 num, uint256 den) internal pure returns (int256) {
        if (x >= 0) return int256(Math.mulDiv(uint256(x), num, den, Math.Rounding.Floor));
        return -int256(Math.mulDiv(uint256(-x), num, den, Math.Rounding.Ceil));
    }

    /// @notice unsigned x * rate / WAD rounded up (fees: against the payer).
    function mulWadUp(uint256 x, uint256 rate) internal pure returns (uint256) {
        return Math.mulDiv(x, rate, Constants.WAD, Math.Rounding.Ceil);
    }

    /// @notice unsigned x * rate / WAD rounded down (collateral credit: against the account).
    function mulWadDown(uint256 x, uint256 rate) internal pure returns (uint256) {
        return Math.mulDiv(x, rate, Constants.WAD, Math.Rounding.Floor);
    }

    function abs(int256 x) internal pure returns (uint256) {
        return uint256(x >= 0 ? x : -x);
    }
}
