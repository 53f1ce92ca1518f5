// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IVault} from "./interfaces/IVault.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IRiskParams, Params, Collateral} from "./interfaces/IRiskParams.sol";
import {IStandardMargin} from "./interfaces/IStandardMargin.sol";
import {RiskOracle} from "./RiskOracle.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {Fill, MarginProof, Instrument, Kind, StatusLeaf} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {SignedMath} from "./libraries/SignedMath.sol";
import {ActionHash} from "./libraries/ActionHash.sol";

/// @title Vault
contract Vault is IVault, RiskOracle, ReentrancyGuard {
    using SafeERC20 for IERC20;

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

    // ---------------------------------------------------------------- immutables
    IERC20 internal immutable quoteToken;
    IInstruments public immutable instruments;

    // ---------------------------------------------------------------- storage
    mapping(address => AccountData) internal _accounts;
    mapping(address => mapping(uint32 => Position)) internal _positions;
    mapping(address => mapping(address => uint256)) public collateralOf;
    mapping(address => mapping(address => bool)) public isOperator;
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

    uint256 internal constant LOSS_SCALE = 1e27;
    // ---------------------------------------------------------------- constructor
    constructor(
        address owner_,
        IERC20 quote_,
        IInstruments instruments_,
        IRiskParams riskParams_,
        IPriceFeed feed_,
        address feeCollector_
    ) Ownable(owner_) RiskOracle(feed_, riskParams_) {
        if (IERC20Metadata(address(quote_)).decimals() != Constants.QUOTE_DECIMALS) revert Vault_BadQuoteToken();
        if (feeCollector_ == address(0)) revert Vault_ZeroAddress();
        (quoteToken, instruments) = (quote_, instruments_);
        feeCollector = feeCollector_;
        guardian = owner_;
        emit FeeCollectorSet(feeCollector_);
        emit GuardianSet(owner_);
    }

    // ---------------------------------------------------------------- modifiers
    modifier onlyExchange() {
        if (msg.sender != exchange) revert Vault_OnlyExchange();
        _;
    }

    modifier onlyLiquidator() {
        if (msg.sender != liquidator) revert Vault_OnlyLiquidator();
        _;
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IVault
    function setExchange(address exchange_) external onlyOwner {
        if (exchange != address(0)) revert Vault_AlreadySet();
        if (exchange_ == address(0)) revert Vault_ZeroAddress();
        exchange = exchange_;
        emit ExchangeSet(exchange_);
    }

    /// @inheritdoc IVault
    function setLiquidation(address liquidator_, address fund, address standardMargin_) external onlyOwner {
        if (liquidator != address(0)) revert Vault_AlreadySet();
        if (liquidator_ == address(0) || fund == address(0) || standardMargin_ == address(0)) {
            revert Vault_ZeroAddress();
        }
        (liquidator, insuranceFund, standardMargin) = (liquidator_, fund, IStandardMargin(standardMargin_));
        emit LiquidationSet(liquidator_, fund, standardMargin_);
    }

    /// @inheritdoc IVault
    function setGuardian(address guardian_) external onlyOwner {
        guardian = guardian_;
        emit GuardianSet(guardian_);
    }

    /// @inheritdoc IVault
    function setFeeCollector(address collector) external onlyOwner {
        if (collector == address(0)) revert Vault_ZeroAddress();
        feeCollector = collector;
        emit FeeCollectorSet(collector);
    }

    /// @inheritdoc IVault
    function setPaused(bool paused_) external {
        if (msg.sender != guardian) revert Vault_OnlyGuardian();
        paused = paused_;
        emit PausedSet(paused_);
    }

    /// @inheritdoc IVault
    function setOperator(address operator, bool allowed) external {
        if (operator == address(0)) revert Vault_ZeroAddress();
        isOperator[msg.sender][operator] = allowed;
        emit OperatorSet(msg.sender, operator, allowed);
    }

    // ---------------------------------------------------------------- collateral
    /// @inheritdoc IVault
    function deposit(address token, uint256 amount, address account) external nonReentrant {
        if (amount == 0) revert Vault_ZeroAmount();
        if (account == address(0)) revert Vault_ZeroAddress();
        bool isQuote = token == address(quoteToken);
        if (!isQuote && !riskParams.isCollateral(token)) revert Vault_UnknownToken(token);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        AccountData storage a = _accounts[account];
        uint256 credit;
        if (isQuote) {
            _addCash(account, a, int256(received));
            credit = received;
        } else {
            collateralOf[account][token] += received;
            credit = _collateralCredit(token, received);
        }
        a.depositCredit += uint128(credit);
        emit Deposited(account, token, msg.sender, received, credit);
    }

    /// @dev Haircut value of collateral in quote units at the latest price, rounded down; zero
    /// while the feed is stale, so a deposit always goes through.
    function _collateralCredit(address token, uint256 amount) internal view returns (uint256) {
        (uint8 underlying, uint64 haircut) = riskParams.collateral(token);
        try feed.latestPrice(underlying) returns (uint256 price, uint64) {
            uint256 unit = 10 ** IERC20Metadata(token).decimals();
            uint256 usd = (amount * price) / unit; // PRICE_SCALE
            return SignedMath.mulWadDown(usd, Constants.WAD - haircut) / 1e12;
        } catch {
            return 0;
        }
    }

    /// @inheritdoc IVault
    function withdraw(address token, uint256 amount, address to, MarginProof calldata proof) external nonReentrant {
        if (amount == 0) revert Vault_ZeroAmount();
        if (to == address(0)) revert Vault_ZeroAddress();
        AccountData storage a = _accounts[msg.sender];
        if (a.frozen) revert Vault_Frozen(msg.sender);
        bool standard = false;
        if (a.ids.length != 0 || a.cash < 0) {
            if (paused) revert Vault_Paused();
            if (proof.signatures.length == 0) {
                // Emergency exit: no risk result for `emergencyDelay`; the on-chain standard margin decides.
                if (!emergency()) revert Vault_MarginProofRequired();
                standard = true;
            } else {
                bytes32 action = ActionHash.withdraw(msg.sender, token, amount);
                _requireMargin(proof, msg.sender, a.riskNonce, action, a.depositCredit, true);
            }
        }
        if (token == address(quoteToken)) {
            _debitCash(msg.sender, a, amount);
        } else {
            uint256 bal = collateralOf[msg.sender][token];
            if (bal < amount) revert Vault_InsufficientCollateral(bal, amount);
            collateralOf[msg.sender][token] = bal - amount;
        }
        _bumpNonce(msg.sender, a);
        if (standard) standardMargin.requireInitial(msg.sender);
        IERC20(token).safeTransfer(to, amount);
        emit Withdrawn(msg.sender, token, to, amount);
    }

    /// @inheritdoc IVault
    function withdrawQuoteWithStatus(uint256 amount, address to, StatusLeaf calldata leaf, bytes32[] calldata proof)
        external
        nonReentrant
    {
        if (amount == 0) revert Vault_ZeroAmount();
        if (to == address(0)) revert Vault_ZeroAddress();
        AccountData storage a = _accounts[msg.sender];
        if (a.frozen) revert Vault_Frozen(msg.sender);
        if (a.ids.length != 0 && paused) revert Vault_Paused();
        (int256 equity, uint256 im,) = _verifyStatus(leaf, proof, msg.sender, a.riskNonce, a.depositCredit);
        if (equity - int256(amount) < int256(im)) revert Vault_InsufficientHeadroom(equity, amount, im);
        _debitCash(msg.sender, a, amount);
        _bumpNonce(msg.sender, a);
        quoteToken.safeTransfer(to, amount);
        emit Withdrawn(msg.sender, address(quoteToken), to, amount);
    }

    // ---------------------------------------------------------------- trading
    /// @inheritdoc IVault
    function applyTrade(Fill calldata fill, MarginProof calldata buyerProof, MarginProof calldata sellerProof)
        external
        onlyExchange
    {
        if (fill.buyer == fill.seller) revert Vault_SelfTrade(fill.buyer);
        if (fill.size == 0) revert Vault_ZeroAmount();
        if (fill.size % Constants.LOT != 0) revert Vault_NotOnLot(fill.size);
        if (fill.size > Constants.MAX_SIZE) revert Vault_SizeTooLarge(fill.size);
        if (fill.price % Constants.TICK != 0 || fill.price > Constants.MAX_PRICE) revert Vault_NotOnTick(fill.price);
        Instrument memory ins = instruments.get(fill.instrument);
        if (ins.kind != Kind.PERP && block.timestamp >= ins.expiry) {
            revert Vault_InstrumentExpired(fill.instrument, ins.expiry);
        }
        Params memory p = riskParams.params();
        // Accrue funding at the old mark up to now before either side settles, then take the new mark.
        if (ins.kind == Kind.PERP) instruments.recordTrade(fill.instrument, fill.price);
        int256 size = int256(uint256(fill.size));
        _applySide(fill.buyer, fill, ins.kind, size, fill.buyerFee, buyerProof, p);
        _applySide(fill.seller, fill, ins.kind, -size, fill.sellerFee, sellerProof, p);
        uint256 fees = uint256(fill.buyerFee) + fill.sellerFee;
        if (fees != 0) {
            // The fund's share rounds down: the remainder goes to the fee collector.
            uint256 toFund = insuranceFund == address(0) ? 0 : SignedMath.mulWadDown(fees, p.fundFeeShare);
            if (toFund != 0) _creditFees(insuranceFund, toFund);
            if (fees != toFund) _creditFees(feeCollector, fees - toFund);
        }
        emit TradeApplied(fill.instrument, fill.buyer, fill.seller, fill.size, fill.price);
    }

    function _applySide(
        address account,
        Fill calldata fill,
        Kind kind,
        int256 delta,
        uint256 fee,
        MarginProof calldata proof,
        Params memory p
    ) internal {
        _requireTradeMargin(account, fill, delta, fee, proof);
        AccountData storage a = _accounts[account];
        Position storage pos = _positions[account][fill.instrument];
        int256 old = pos.size;
        if (kind == Kind.PERP) _settleFunding(account, fill.instrument, pos);
        int256 cashDelta = _trade(pos, kind, old, delta, fill.price) - int256(fee);
        _addCash(account, a, cashDelta);
        _updateList(account, a, pos, fill.instrument, old, p);
        _bumpNonce(account, a);
        emit PositionChanged(account, fill.instrument, pos.size, pos.costBasis, cashDelta);
    }

    /// @dev A side that only reduces its position needs maintenance margin after the fill, any
    /// other initial margin; only the latter is blocked while paused.
    function _requireTradeMargin(address account, Fill calldata fill, int256 delta, uint256 fee, MarginProof calldata proof)
        internal
        view
    {
        AccountData storage a = _accounts[account];
        int256 old = _positions[account][fill.instrument].size;
        bool reducing = old != 0 && (old > 0) != (delta > 0) && SignedMath.abs(delta) <= SignedMath.abs(old);
        if (!reducing) {
            if (paused) revert Vault_Paused();
            if (a.frozen) revert Vault_Frozen(account);
            if (emergency()) revert Vault_Emergency();
        }
        bytes32 action = ActionHash.trade(account, fill.instrument, delta, fill.price, fee);
        _requireMargin(proof, account, a.riskNonce, action, a.depositCredit, !reducing);
    }

    /// @dev Moves the position by `delta` at `price`; returns the cash change before fees.
    /// For every side, cashDelta - costBasisDelta = -delta * price exactly (zero-sum across sides).
    function _trade(Position storage pos, Kind kind, int256 old, int256 delta, uint256 price)
        internal
        returns (int256 cashDelta)
    {
        int256 v = SignedMath.value(delta, price);
        pos.size = int128(old + delta);
        if (kind == Kind.CALL || kind == Kind.PUT) return -v; // premium-settled
        int256 cost = pos.costBasis;
        if (old == 0 || (old > 0) == (delta > 0)) {
            pos.costBasis = int128(cost + v);
            return 0;
        }
        uint256 absOld = SignedMath.abs(old);
        uint256 absDelta = SignedMath.abs(delta);
        if (absDelta <= absOld) {
            // Removed cost rounds towards +inf: realised cash rounds against the account.
            int256 removed = SignedMath.mulDivCeil(cost, absDelta, absOld);
            pos.costBasis = int128(cost - removed);
            return -v - removed;
        }
        int256 vClose = SignedMath.value(-old, price);
        pos.costBasis = int128(v - vClose);
        return -vClose - cost;
    }

    /// @dev Enforces the minimum size and the position cap, and keeps the id list in step.
    function _updateList(address account, AccountData storage a, Position storage pos, uint32 id, int256 old, Params memory p)
        internal
    {
        int256 size = pos.size;
        if (size != 0 && SignedMath.abs(size) < p.minPositionSize) revert Vault_PositionTooSmall(size, p.minPositionSize);
        _relist(account, a, pos, id, old, p.maxPositions);
    }

    /// @dev Keeps the id list in step with a position that moved from `old` to its size.
    function _relist(address account, AccountData storage a, Position storage pos, uint32 id, int256 old, uint256 maxPositions)
        internal
    {
        int256 size = pos.size;
        if (old == 0 && size != 0) {
            if (a.ids.length >= maxPositions) revert Vault_TooManyPositions(maxPositions);
            a.ids.push(id);
            pos.slot = uint8(a.ids.length);
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
            _positions[account][moved].slot = uint8(idx + 1);
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

    // ---------------------------------------------------------------- funding and settlement
    /// @inheritdoc IVault
    function settleFunding(address account, uint32 instrument) external {
        if (instruments.get(instrument).kind != Kind.PERP) revert Vault_NotPerp(instrument);
        Position storage pos = _positions[account][instrument];
        if (pos.size == 0) revert Vault_NoPosition(account, instrument);
        _settleFunding(account, instrument, pos);
    }

    /// @dev Pays funding accrued since the position's snapshot; exact because both the size (LOT)
    /// and the index (TICK) sit on their grids. Longs pay when the index rises.
    function _settleFunding(address account, uint32 instrument, Position storage pos) internal {
        int256 cumulative = instruments.cumulativeFunding(instrument);
        int256 snapshot = pos.fundingSnapshot;
        if (cumulative == snapshot) return;
        pos.fundingSnapshot = int128(cumulative);
        int256 size = pos.size;
        if (size == 0) return;
        int256 payment = (size * (cumulative - snapshot)) / int256(Constants.VALUE_DIVISOR);
        _addCash(account, _accounts[account], -payment);
        emit FundingSettled(account, instrument, payment, cumulative);
    }

    /// @inheritdoc IVault
    function settleExpired(address account, uint32 instrument) external {
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
    /// @inheritdoc IVault
    function setFrozen(address account, bool frozen) external onlyLiquidator {
        AccountData storage a = _accounts[account];
        a.frozen = frozen;
        if (frozen) _bumpNonce(account, a);
        emit FrozenSet(account, frozen);
    }

    /// @inheritdoc IVault
    function transferPortfolio(address from, address to, uint256 fractionWad) external onlyLiquidator {
        if (fractionWad == 0 || fractionWad > Constants.WAD || from == to) revert Vault_BadFraction(fractionWad);
        AccountData storage src = _accounts[from];
        AccountData storage dst = _accounts[to];
        uint256 maxPositions = riskParams.params().maxPositions;
        uint32[] memory ids = src.ids; // a copy: moving a whole position edits the list
        for (uint256 i; i < ids.length; ++i) {
            _movePosition(from, to, src, dst, ids[i], fractionWad, maxPositions);
        }
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
        _realise(from, src);
        // Cash moves towards -infinity: the bidder never receives more than its share.
        int256 c = int256(src.cash);
        int256 moved = SignedMath.mulDivFloor(c, fractionWad, Constants.WAD);
        if (moved != 0) _moveCash(from, src, to, dst, moved);
        _bumpNonce(from, src);
        _bumpNonce(to, dst);
        emit PortfolioTransferred(from, to, fractionWad);
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

    /// @inheritdoc IVault
    function moveCash(address from, address to, uint256 amount) external onlyLiquidator {
        _moveCash(from, _accounts[from], to, _accounts[to], SafeCast.toInt256(amount));
    }

    function _moveCash(address from, AccountData storage src, address to, AccountData storage dst, int256 amount)
        internal
    {
        _addCash(from, src, -amount);
        _addCash(to, dst, amount);
        emit CashTransferred(from, to, amount);
    }

    /// @inheritdoc IVault
    function socializeLoss(address to, uint256 amount) external onlyLiquidator returns (uint256 socialised) {
        uint256 base = positiveCash - pendingLoss;
        // At most all but one unit of the positive cash outstanding, so the surviving share stays above zero.
        socialised = base == 0 ? 0 : Math.min(amount, base - 1);
        if (socialised != 0) {
            // The surviving share shrinks by (base − loss) / base, rounded down: holders pay at least the loss.
            uint256 survive = Math.mulDiv(LOSS_SCALE - lossIndex, base - socialised, base);
            lossIndex = SafeCast.toUint128(LOSS_SCALE - survive);
            pendingLoss += socialised;
            _addCash(to, _accounts[to], int256(socialised));
            _bindParams(riskParams.paramsHash());
        }
        emit LossSocialised(to, amount, socialised, lossIndex);
    }

    // ---------------------------------------------------------------- cash
    /// @dev Every change of a cash balance goes through here: charges the account's share of losses
    /// socialised since it was last touched, then keeps the positive-cash total in step.
    function _addCash(address account, AccountData storage a, int256 delta) internal {
        _realise(account, a);
        int256 old = a.cash;
        int256 cash = old + delta;
        a.cash = SafeCast.toInt128(cash);
        uint256 before = old > 0 ? uint256(old) : 0;
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
        uint256 charge = _pendingCharge(uint256(cash), snapshot, index);
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

    function _debitCash(address account, AccountData storage a, uint256 amount) internal {
        _realise(account, a);
        if (a.cash < SafeCast.toInt256(amount)) revert Vault_InsufficientCash(a.cash, amount);
        _addCash(account, a, -int256(amount));
    }

    function _creditFees(address collector, uint256 amount) internal {
        _addCash(collector, _accounts[collector], int256(amount));
        emit FeesCollected(collector, amount);
    }

    function _lossIndex() internal view override returns (uint256) {
        return lossIndex;
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IVault
    function positionIds(address account) external view returns (uint32[] memory) {
        return _accounts[account].ids;
    }

    /// @inheritdoc IVault
    function positionOf(address account, uint32 instrument)
        external
        view
        returns (int256 size, int256 costBasis, int256 fundingSnapshot)
    {
        Position storage pos = _positions[account][instrument];
        return (pos.size, pos.costBasis, pos.fundingSnapshot);
    }

    /// @inheritdoc IVault
    function riskNonce(address account) external view returns (uint64) {
        return _accounts[account].riskNonce;
    }

    /// @inheritdoc IVault
    function depositCredit(address account) external view returns (uint256) {
        return _accounts[account].depositCredit;
    }

    /// @inheritdoc IVault
    function cashOf(address account) external view returns (int256) {
        return _effectiveCash(_accounts[account]);
    }

    /// @dev Cash net of the socialised loss not yet charged to it.
    function _effectiveCash(AccountData storage a) internal view returns (int256 cash) {
        cash = a.cash;
        uint128 index = lossIndex;
        if (cash > 0 && a.lossSnapshot != index) cash -= int256(_pendingCharge(uint256(cash), a.lossSnapshot, index));
    }

    /// @inheritdoc IVault
    function quote() external view returns (address) {
        return address(quoteToken);
    }
}
