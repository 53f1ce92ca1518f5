// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IVaultEvents} from "./interfaces/IVault.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IRiskParams} from "./interfaces/IRiskParams.sol";
import {IStandardMargin} from "./interfaces/IStandardMargin.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {RiskOracle} from "./RiskOracle.sol";
import {Constants} from "./libraries/Constants.sol";

/// @title VaultBase: the Vault's storage and the internals its two code halves share.
/// @notice The Vault (`Vault`) and its liquidation module (`VaultModule`, run by delegatecall from the
/// Vault's fallback, as Euler's EVK runs its modules) both inherit this contract and declare no storage
/// of their own (immutables only), so their storage layouts are this one by construction; the module's
/// functions are tested on the Vault's state (tests/chain/test_vault_hardening.py). All of the storage
/// is here, in one place.
abstract contract VaultBase is IVaultEvents, RiskOracle, ReentrancyGuard {
    struct AccountData {
        int128 cash;
        uint128 depositCredit;
        uint64 riskNonce;
        bool frozen; // in a liquidation auction: no risk-adding trades, no withdrawals
        uint128 lossSnapshot; // lossIndex when the cash was last touched
        uint32[] ids;
    }

    /// @dev Size and list slot share the first storage slot, cost basis and funding snapshot the second:
    /// an option position (no cost basis, no funding) is one storage slot.
    struct Position {
        int128 size;
        uint8 slot; // index in ids + 1
        int128 costBasis;
        int128 fundingSnapshot;
    }

    // ---------------------------------------------------------------- constants
    /// @notice The largest amount a deposit or withdrawal takes (F-10): every cash, credit and balance
    /// sum then stays far below 2**255, so the signed casts of amounts are safe.
    uint256 public constant MAX_AMOUNT = type(uint128).max;
    /// @notice `withdraw` amount meaning "the whole balance" (after funding, for the quote token).
    uint256 public constant WITHDRAW_ALL = type(uint256).max;
    uint256 internal constant LOSS_SCALE = 1e27;

    // ---------------------------------------------------------------- immutables
    IERC20 internal immutable quoteToken;
    IInstruments public immutable instruments;

    // ---------------------------------------------------------------- storage
    mapping(address => AccountData) internal _accounts;
    mapping(address => mapping(uint32 => Position)) internal _positions;
    mapping(address => mapping(address => uint256)) public collateralOf;
    address public exchange;
    address public guardian;
    address public feeCollector;
    bool public paused;
    address public liquidator;
    address internal insuranceFund; // the Liquidator's `insuranceFund`
    IStandardMargin internal standardMargin; // the Liquidator's `standardMargin`
    /// @dev The share of positive cash lost to socialised losses so far, compounded (LOSS_SCALE): a balance
    /// last touched at index i0 is now worth cash · (LOSS_SCALE − index) / (LOSS_SCALE − i0). With the sum
    /// of the positive cash balances in one slot; `pendingLoss` is socialised but not yet charged.
    uint128 public lossIndex;
    uint128 public positiveCash;
    uint256 internal pendingLoss;

    // ---------------------------------------------------------------- constructor
    constructor(IERC20 quote_, IInstruments instruments_, IRiskParams riskParams_, IPriceFeed feed_)
        RiskOracle(feed_, riskParams_)
    {
        (quoteToken, instruments) = (quote_, instruments_);
    }

    // ---------------------------------------------------------------- positions
    /// @dev Keeps the id list in step with a position that moved from `old` to its size.
    function _relist(address account, AccountData storage a, Position storage pos, uint32 id, int256 old, uint256 maxPositions)
        internal
    {
        int256 size = pos.size;
        if (old == 0 && size != 0) {
            if (a.ids.length >= maxPositions) revert Vault_TooManyPositions(maxPositions);
            a.ids.push(id);
            pos.slot = uint8(a.ids.length); // Safe cast: at most MAX_POSITIONS (64) ids
        } else if (old != 0 && size == 0) {
            _removeFromList(account, a, pos);
        }
    }

    function _removeFromList(address account, AccountData storage a, Position storage pos) internal {
        uint256 idx = pos.slot - 1;
        uint256 last = a.ids.length - 1;
        if (idx != last) {
            uint32 moved = a.ids[last];
            a.ids[idx] = moved;
            _positions[account][moved].slot = uint8(idx + 1); // Safe cast: idx < ids.length <= 64
        }
        a.ids.pop();
        pos.slot = 0;
        pos.costBasis = 0;
        pos.fundingSnapshot = 0;
    }

    function _bumpNonce(address account, AccountData storage a) internal {
        uint64 n = a.riskNonce + 1;
        a.riskNonce = n;
        emit RiskNonceBumped(account, n);
    }

    /// @dev Pays funding accrued since the position's snapshot; exact because both the size (LOT)
    /// and the index (TICK) sit on their grids. Longs pay when the index rises.
    function _settleFunding(address account, uint32 instrument, Position storage pos) internal {
        int256 cumulative = instruments.cumulativeFunding(instrument);
        int256 snapshot = pos.fundingSnapshot;
        if (cumulative == snapshot) return;
        pos.fundingSnapshot = SafeCast.toInt128(cumulative);
        int256 size = pos.size;
        if (size == 0) return;
        // Safe cast: VALUE_DIVISOR = 1e30 < 2**255.
        int256 payment = (size * (cumulative - snapshot)) / int256(Constants.VALUE_DIVISOR);
        _addCash(account, _accounts[account], -payment);
        emit FundingSettled(account, instrument, payment, cumulative);
    }

    // ---------------------------------------------------------------- cash
    /// @dev Every change of a cash balance goes through here: charges the account's share of losses
    /// socialised since it was last touched, then keeps the positive-cash total in step.
    function _addCash(address account, AccountData storage a, int256 delta) internal {
        _realise(account, a);
        int256 old = a.cash;
        int256 cash = old + delta;
        a.cash = SafeCast.toInt128(cash);
        uint256 before = old > 0 ? uint256(old) : 0; // Safe casts: both are positive here
        uint256 after_ = cash > 0 ? uint256(cash) : 0;
        if (before != after_) positiveCash = SafeCast.toUint128(positiveCash + after_ - before);
    }

    function _realise(address account, AccountData storage a) internal {
        uint128 index = lossIndex;
        uint128 snapshot = a.lossSnapshot;
        if (snapshot == index) return;
        a.lossSnapshot = index;
        int256 cash = a.cash;
        if (cash <= 0) return;
        uint256 charge = _pendingCharge(uint256(cash), snapshot, index); // Safe cast: cash > 0
        a.cash = int128(cash - int256(charge)); // Safe cast: 0 <= result <= cash
        positiveCash -= uint128(charge); // Safe cast: charge <= cash <= positiveCash
        uint256 pending = pendingLoss;
        pendingLoss = charge < pending ? pending - charge : 0;
        emit LossApplied(account, charge);
    }

    /// @dev What a positive balance last touched at index `snapshot` has lost by index `index`: its value
    /// scales by the surviving shares' ratio, rounded down, so the charge rounds up.
    function _pendingCharge(uint256 cash, uint128 snapshot, uint128 index) internal pure returns (uint256) {
        return cash - Math.mulDiv(cash, LOSS_SCALE - index, LOSS_SCALE - snapshot);
    }

    /// @dev Takes `amount` (<= MAX_AMOUNT, checked at the entry points) out of the cash, never below zero.
    function _debitCash(address account, AccountData storage a, uint256 amount) internal {
        _realise(account, a);
        int256 signed = SafeCast.toInt256(amount);
        if (a.cash < signed) revert Vault_InsufficientCash(a.cash, amount);
        _addCash(account, a, -signed);
    }

    /// @dev Refuses amounts above MAX_AMOUNT (F-10).
    function _checkAmount(uint256 amount) internal pure {
        if (amount == 0) revert Vault_ZeroAmount();
        if (amount > MAX_AMOUNT) revert Vault_AmountTooLarge(amount, MAX_AMOUNT);
    }

    function _lossIndex() internal view override returns (uint256) {
        return lossIndex;
    }
}
