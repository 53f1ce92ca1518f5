// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {IStandardMargin} from "./interfaces/IStandardMargin.sol";
import {VaultLens} from "./VaultLens.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {IRiskParams, LiquidationParams} from "./interfaces/IRiskParams.sol";
import {AccountView, PositionView, Instrument, Kind} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {SignedMath} from "./libraries/SignedMath.sol";

/// @title StandardMargin
/// @notice The conservative on-chain margin of emergency mode (see IStandardMargin). A view contract:
/// its loops are bounded by the position cap and the collateral list.
contract StandardMargin is IStandardMargin {
    // ---------------------------------------------------------------- immutables
    VaultLens public immutable lens;
    IInstruments public immutable instruments;
    IPriceFeed public immutable feed;
    IRiskParams public immutable riskParams;

    // ---------------------------------------------------------------- constructor
    constructor(VaultLens lens_, IInstruments instruments_, IPriceFeed feed_, IRiskParams riskParams_) {
        (lens, instruments, feed, riskParams) = (lens_, instruments_, feed_, riskParams_);
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IStandardMargin
    function figures(address account) public view returns (int256 equity, int256 mtmEquity, uint256 requirement) {
        return _figures(account, false);
    }

    /// @inheritdoc IStandardMargin
    function closingFigures(address account) external view returns (int256 equity, int256 mtmEquity, uint256 requirement) {
        return _figures(account, true);
    }

    function _figures(address account, bool lastPosted)
        internal
        view
        returns (int256 equity, int256 mtmEquity, uint256 requirement)
    {
        AccountView memory v = lens.getAccount(account);
        LiquidationParams memory l = riskParams.liquidationParams();
        (equity, mtmEquity) = _collateral(v, lastPosted);
        equity += v.cash;
        mtmEquity += v.cash;
        for (uint256 i; i < v.positions.length; ++i) {
            PositionView memory p = v.positions[i];
            (int256 value, uint256 req) = _position(p, l, lastPosted);
            equity += value;
            mtmEquity += value;
            requirement += req;
        }
    }

    /// @inheritdoc IStandardMargin
    function requireInitial(address account) external view {
        (int256 equity,, uint256 requirement) = figures(account);
        if (equity < int256(requirement)) revert StandardMargin_Insufficient(equity, requirement);
    }

    // ---------------------------------------------------------------- internal
    /// @dev The latest price (reverting once the feed is stale), or the last posted one whatever its age.
    function _price(uint256 underlying, bool lastPosted) internal view returns (uint256 price) {
        if (!lastPosted) {
            (price,) = feed.latestPrice(underlying);
            return price;
        }
        (uint64 round,) = feed.latestRound();
        return feed.priceAt(round, underlying);
    }

    /// @dev Collateral at the latest price: with its haircut (rounded down) and without.
    function _collateral(AccountView memory v, bool lastPosted) internal view returns (int256 equity, int256 mtm) {
        for (uint256 i; i < v.collateralTokens.length; ++i) {
            uint256 bal = v.collateralBalances[i];
            if (bal == 0) continue;
            (uint8 underlying, uint64 haircut) = riskParams.collateral(v.collateralTokens[i]);
            uint256 price = _price(underlying, lastPosted);
            uint256 usd = Math.mulDiv(bal, price, 10 ** IERC20Metadata(v.collateralTokens[i]).decimals());
            mtm += int256(usd / 1e12);
            equity += int256(SignedMath.mulWadDown(usd, Constants.WAD - haircut) / 1e12);
        }
    }

    /// @dev One position's value at the index (options at intrinsic) and its standard requirement.
    function _position(PositionView memory p, LiquidationParams memory l, bool lastPosted)
        internal
        view
        returns (int256 value, uint256 requirement)
    {
        (uint32 id, int256 size, int256 costBasis, int256 fundingSnapshot) =
            (p.instrument, p.size, p.costBasis, p.fundingSnapshot);
        Instrument memory ins = instruments.get(id);
        uint256 price = _price(ins.underlying, lastPosted);
        uint256 notional = SignedMath.abs(SignedMath.value(size, price));
        if (ins.kind == Kind.PERP || ins.kind == Kind.FUTURE) {
            value = SignedMath.value(size, price) - costBasis;
            if (ins.kind == Kind.PERP) {
                // Funding not yet settled, exactly as Vault._settleFunding would pay it.
                value -= (size * (instruments.cumulativeFunding(id) - fundingSnapshot)) / int256(Constants.VALUE_DIVISOR);
            }
            return (value, SignedMath.mulWadUp(notional, l.emergencyLinearRate));
        }
        uint256 k = ins.strike;
        uint256 intrinsic = ins.kind == Kind.CALL ? (price > k ? price - k : 0) : (k > price ? k - price : 0);
        value = SignedMath.value(size, intrinsic);
        if (size < 0) requirement = SignedMath.mulWadUp(notional, l.emergencyOptionRate);
    }
}
