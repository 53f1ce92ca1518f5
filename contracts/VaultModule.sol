// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IVaultModule} from "./interfaces/IVault.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IRiskParams, Collateral} from "./interfaces/IRiskParams.sol";
import {IStandardMargin} from "./interfaces/IStandardMargin.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {VaultBase} from "./VaultBase.sol";
import {Instrument, Kind, StatusLeaf} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {SignedMath} from "./libraries/SignedMath.sol";

/// @title VaultModule: the Vault's liquidation hooks, expiry settlement, status-root withdrawals and wiring.
/// @notice Deployed by the Vault's constructor and run only by delegatecall from the Vault's fallback,
/// on the Vault's storage (same layout: both inherit VaultBase and declare nothing else). Every function
/// refuses a direct call (`Vault_NotDelegated`), so the module's own storage is never used.
contract VaultModule is IVaultModule, VaultBase {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------- immutables
    address private immutable _self;

    // ---------------------------------------------------------------- constructor
    /// @dev Ownable(msg.sender): the module's own admin functions (inherited from the oracle) act on the
    /// module's unused storage and only the Vault, which never calls them, owns it.
    constructor(IERC20 quote_, IInstruments instruments_, IRiskParams riskParams_, IPriceFeed feed_)
        Ownable(msg.sender)
        VaultBase(quote_, instruments_, riskParams_, feed_)
    {
        _self = address(this);
    }

    // ---------------------------------------------------------------- modifiers
    modifier delegated() {
        if (address(this) == _self) revert Vault_NotDelegated();
        _;
    }

    modifier onlyLiquidator() {
        if (msg.sender != liquidator) revert Vault_OnlyLiquidator();
        _;
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IVaultModule
    function setExchange(address exchange_) external delegated onlyOwner {
        if (exchange != address(0)) revert Vault_AlreadySet();
        if (exchange_ == address(0)) revert Vault_ZeroAddress();
        exchange = exchange_;
        emit ExchangeSet(exchange_);
    }

    /// @inheritdoc IVaultModule
    function setLiquidation(address liquidator_, address fund, address standardMargin_) external delegated onlyOwner {
        if (liquidator != address(0)) revert Vault_AlreadySet();
        if (liquidator_ == address(0) || fund == address(0) || standardMargin_ == address(0)) {
            revert Vault_ZeroAddress();
        }
        (liquidator, insuranceFund, standardMargin) = (liquidator_, fund, IStandardMargin(standardMargin_));
        emit LiquidationSet(liquidator_, fund, standardMargin_);
    }

    /// @inheritdoc IVaultModule
    function setGuardian(address guardian_) external delegated onlyOwner {
        if (guardian_ == address(0)) revert Vault_ZeroAddress();
        guardian = guardian_;
        emit GuardianSet(guardian_);
    }

    /// @inheritdoc IVaultModule
    function setFeeCollector(address collector) external delegated onlyOwner {
        if (collector == address(0)) revert Vault_ZeroAddress();
        feeCollector = collector;
        emit FeeCollectorSet(collector);
    }

    // ---------------------------------------------------------------- withdrawals and settlement
    /// @inheritdoc IVaultModule
    function withdrawQuoteWithStatus(uint256 amount, address to, StatusLeaf calldata leaf, bytes32[] calldata proof)
        external
        delegated
        nonReentrant
    {
        _checkAmount(amount);
        if (to == address(0)) revert Vault_ZeroAddress();
        AccountData storage a = _accounts[msg.sender];
        if (a.frozen) revert Vault_Frozen(msg.sender);
        if (a.ids.length != 0 && paused) revert Vault_Paused();
        (int256 equity, uint256 im,) = _verifyStatus(leaf, proof, msg.sender, a.riskNonce, a.depositCredit);
        // Safe casts: amount <= MAX_AMOUNT; im is below 2**255 or the signed leaf could not be met anyway.
        if (equity - int256(amount) < SafeCast.toInt256(im)) revert Vault_InsufficientHeadroom(equity, amount, im);
        _debitCash(msg.sender, a, amount);
        _bumpNonce(msg.sender, a);
        quoteToken.safeTransfer(to, amount);
        emit Withdrawn(msg.sender, address(quoteToken), to, amount);
    }

    /// @inheritdoc IVaultModule
    function settleExpired(address account, uint32 instrument) external delegated {
        Instrument memory ins = instruments.get(instrument);
        if (ins.kind == Kind.PERP || block.timestamp < ins.expiry) revert Vault_NotExpired(instrument, ins.expiry);
        Position storage pos = _positions[account][instrument];
        int256 size = pos.size;
        if (size == 0) revert Vault_NoPosition(account, instrument);
        uint256 price = instruments.settlementPrice(ins.underlying, ins.expiry);
        int256 payoff = _payoff(ins, size, price, pos.costBasis);
        AccountData storage a = _accounts[account];
        _addCash(account, a, payoff);
        pos.size = 0;
        _removeFromList(account, a, pos);
        emit PositionSettled(account, instrument, size, price, payoff);
    }

    function _payoff(Instrument memory ins, int256 size, uint256 price, int256 costBasis) internal pure returns (int256) {
        if (ins.kind == Kind.FUTURE) return SignedMath.value(size, price) - costBasis;
        uint256 k = ins.strike;
        uint256 intrinsic;
        if (ins.kind == Kind.CALL) intrinsic = price > k ? price - k : 0;
        else intrinsic = k > price ? k - price : 0;
        return SignedMath.value(size, intrinsic);
    }

    // ---------------------------------------------------------------- liquidation hooks
    /// @inheritdoc IVaultModule
    function setFrozen(address account, bool frozen) external delegated onlyLiquidator {
        AccountData storage a = _accounts[account];
        a.frozen = frozen;
        if (frozen) _bumpNonce(account, a);
        emit FrozenSet(account, frozen);
    }

    /// @inheritdoc IVaultModule
    function transferPortfolio(address from, address to, uint256 fractionWad) external delegated onlyLiquidator {
        if (fractionWad == 0 || fractionWad > Constants.WAD || from == to) revert Vault_BadFraction(fractionWad);
        AccountData storage src = _accounts[from];
        AccountData storage dst = _accounts[to];
        uint256 maxPositions = riskParams.params().maxPositions;
        uint32[] memory ids = src.ids; // a copy: moving a whole position edits the list
        for (uint256 i; i < ids.length; ++i) {
            _movePosition(from, to, src, dst, ids[i], fractionWad, maxPositions);
        }
        _moveCollateral(from, to, fractionWad);
        _realise(from, src);
        // Cash moves towards -infinity: the bidder never receives more than its share.
        int256 moved = SignedMath.mulDivFloor(src.cash, fractionWad, Constants.WAD);
        if (moved != 0) _moveCash(from, src, to, dst, moved);
        _bumpNonce(from, src);
        _bumpNonce(to, dst);
        emit PortfolioTransferred(from, to, fractionWad);
    }

    function _moveCollateral(address from, address to, uint256 fractionWad) internal {
        Collateral[] memory cs = riskParams.collaterals();
        for (uint256 i; i < cs.length; ++i) {
            address token = cs[i].token;
            uint256 bal = collateralOf[from][token];
            uint256 amount = bal * fractionWad / Constants.WAD; // rounds down: the bidder gets no more
            if (amount == 0) continue;
            collateralOf[from][token] = bal - amount;
            collateralOf[to][token] += amount;
            emit CollateralTransferred(from, to, token, amount);
        }
    }

    /// @dev Moves `fraction` of one position (rounded towards zero to the LOT grid) with the same share of
    /// its cost basis; cost bases add, so both sides keep their exact mark-to-market value. Funding is
    /// settled on both sides first. A side left flat realises its remaining cost basis into cash.
    function _movePosition(
        address from,
        address to,
        AccountData storage src,
        AccountData storage dst,
        uint32 id,
        uint256 fraction,
        uint256 maxPositions
    ) internal {
        Position storage p = _positions[from][id];
        Position storage q = _positions[to][id];
        if (instruments.get(id).kind == Kind.PERP) {
            _settleFunding(from, id, p);
            _settleFunding(to, id, q);
        }
        int256 size = p.size;
        int256 moved = size;
        int256 cost = p.costBasis;
        if (fraction < Constants.WAD) {
            // Safe casts: fraction < WAD = 1e18 and LOT = 1e15, both far below 2**255.
            moved = (size * int256(fraction) / int256(Constants.WAD)) / int256(Constants.LOT) * int256(Constants.LOT);
            if (moved == 0) return;
            cost = SignedMath.mulDivCeil(cost, SignedMath.abs(moved), SignedMath.abs(size));
        }
        _shiftPosition(from, src, p, id, -moved, -cost, maxPositions);
        _shiftPosition(to, dst, q, id, moved, cost, maxPositions);
    }

    function _shiftPosition(
        address account,
        AccountData storage a,
        Position storage pos,
        uint32 id,
        int256 sizeDelta,
        int256 costDelta,
        uint256 maxPositions
    ) internal {
        int256 old = pos.size;
        int256 size = old + sizeDelta;
        int256 cost = pos.costBasis + costDelta;
        int256 cashDelta = 0;
        if (size == 0 && cost != 0) {
            cashDelta = -cost;
            cost = 0;
        }
        pos.size = SafeCast.toInt128(size);
        if (cost != pos.costBasis) pos.costBasis = SafeCast.toInt128(cost);
        if (cashDelta != 0) _addCash(account, a, cashDelta);
        _relist(account, a, pos, id, old, maxPositions);
        emit PositionChanged(account, id, size, cost, cashDelta);
    }

    /// @inheritdoc IVaultModule
    function moveCash(address from, address to, uint256 amount) external delegated onlyLiquidator {
        _moveCash(from, _accounts[from], to, _accounts[to], SafeCast.toInt256(amount));
    }

    function _moveCash(address from, AccountData storage src, address to, AccountData storage dst, int256 amount)
        internal
    {
        _addCash(from, src, -amount);
        _addCash(to, dst, amount);
        emit CashTransferred(from, to, amount);
    }

    /// @inheritdoc IVaultModule
    function socializeLoss(address to, uint256 amount)
        external
        delegated
        onlyLiquidator
        returns (uint256 socialised)
    {
        uint256 base = positiveCash - pendingLoss;
        // At most all but one unit of the positive cash outstanding, so the surviving share stays above zero.
        socialised = base == 0 ? 0 : Math.min(amount, base - 1);
        if (socialised != 0) {
            // The surviving share shrinks by (base − loss) / base, rounded down: holders pay at least the loss.
            uint256 survive = Math.mulDiv(LOSS_SCALE - lossIndex, base - socialised, base);
            lossIndex = SafeCast.toUint128(LOSS_SCALE - survive);
            pendingLoss += socialised;
            _addCash(to, _accounts[to], SafeCast.toInt256(socialised));
            _bindParams(riskParams.paramsHash());
        }
        emit LossSocialised(to, amount, socialised, lossIndex);
    }
}
