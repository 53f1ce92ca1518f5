// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IVaultCore} from "./interfaces/IVault.sol";
import {IInstruments} from "./interfaces/IInstruments.sol";
import {IRiskParams, Params} from "./interfaces/IRiskParams.sol";
import {IPriceFeed} from "./interfaces/IPriceFeed.sol";
import {VaultBase} from "./VaultBase.sol";
import {VaultModule} from "./VaultModule.sol";
import {Fill, MarginProof, Instrument, Kind} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {SignedMath} from "./libraries/SignedMath.sol";
import {ActionHash} from "./libraries/ActionHash.sol";

/// @title Vault
/// @notice Deposits, withdrawals, trades and funding. The liquidation hooks, expiry settlement,
/// status-root withdrawals and the wiring setters live in `VaultModule`, which the constructor deploys
/// and the fallback runs by delegatecall on this contract's storage (see IVault: one ABI at this address).
contract Vault is IVaultCore, VaultBase {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------- immutables
    /// @notice The liquidation module (IVaultModule), run by delegatecall from the fallback.
    address public immutable module;

    // ---------------------------------------------------------------- constructor
    constructor(
        address owner_,
        IERC20 quote_,
        IInstruments instruments_,
        IRiskParams riskParams_,
        IPriceFeed feed_,
        address feeCollector_
    ) Ownable(owner_) VaultBase(quote_, instruments_, riskParams_, feed_) {
        if (IERC20Metadata(address(quote_)).decimals() != Constants.QUOTE_DECIMALS) revert Vault_BadQuoteToken();
        if (feeCollector_ == address(0)) revert Vault_ZeroAddress();
        module = address(new VaultModule(quote_, instruments_, riskParams_, feed_));
        feeCollector = feeCollector_;
        guardian = owner_;
        emit FeeCollectorSet(feeCollector_);
        emit GuardianSet(owner_);
    }

    // ---------------------------------------------------------------- module
    /// @notice Runs IVaultModule's functions in the module, on this contract's storage.
    fallback() external {
        address m = module;
        assembly ("memory-safe") {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), m, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }

    // ---------------------------------------------------------------- admin
    /// @inheritdoc IVaultCore
    function setPaused(bool paused_) external {
        // Pausing tightens: the guardian (or the owner) at once. Resuming loosens: the owner only, which
        // is the timelock in every deployment, so a resume is scheduled and can be seen coming.
        if (!paused_) _checkOwner();
        else if (msg.sender != guardian && msg.sender != owner()) revert Vault_OnlyGuardian();
        paused = paused_;
        emit PausedSet(paused_);
    }

    // ---------------------------------------------------------------- collateral
    /// @inheritdoc IVaultCore
    function deposit(address token, uint256 amount, address account) external nonReentrant {
        _checkAmount(amount);
        if (account == address(0)) revert Vault_ZeroAddress();
        bool isQuote = token == address(quoteToken);
        if (!isQuote && !riskParams.isCollateral(token)) revert Vault_UnknownToken(token);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        AccountData storage a = _accounts[account];
        uint256 credit;
        if (isQuote) {
            _addCash(account, a, SafeCast.toInt256(received));
            credit = received;
        } else {
            collateralOf[account][token] += received;
            credit = _collateralCredit(token, received);
        }
        a.depositCredit = SafeCast.toUint128(a.depositCredit + credit);
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

    /// @inheritdoc IVaultCore
    function withdraw(address token, uint256 amount, address to, MarginProof calldata proof) external nonReentrant {
        if (to == address(0)) revert Vault_ZeroAddress();
        AccountData storage a = _accounts[msg.sender];
        if (a.frozen) revert Vault_Frozen(msg.sender);
        bool isQuote = token == address(quoteToken);
        uint256 taken = amount == WITHDRAW_ALL ? _wholeBalance(msg.sender, a, isQuote, token) : amount;
        _checkAmount(taken);
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
        if (isQuote) {
            _debitCash(msg.sender, a, taken);
        } else {
            uint256 bal = collateralOf[msg.sender][token];
            if (bal < taken) revert Vault_InsufficientCollateral(bal, taken);
            collateralOf[msg.sender][token] = bal - taken;
        }
        _bumpNonce(msg.sender, a);
        if (standard) standardMargin.requireInitial(msg.sender);
        IERC20(token).safeTransfer(to, taken);
        emit Withdrawn(msg.sender, token, to, taken);
    }

    /// @dev The whole balance for WITHDRAW_ALL: for the quote token, the cash after settling funding on
    /// every perpetual and charging socialised losses (so a `settleFunding` just before changes nothing).
    function _wholeBalance(address account, AccountData storage a, bool isQuote, address token)
        internal
        returns (uint256)
    {
        if (!isQuote) return collateralOf[account][token];
        uint32[] storage ids = a.ids;
        for (uint256 i; i < ids.length; ++i) {
            uint32 id = ids[i];
            if (instruments.get(id).kind == Kind.PERP) _settleFunding(account, id, _positions[account][id]);
        }
        _realise(account, a);
        int256 cash = a.cash;
        return cash > 0 ? uint256(cash) : 0; // Safe cast: positive
    }

    // ---------------------------------------------------------------- trading
    /// @inheritdoc IVaultCore
    function applyTrade(Fill calldata fill, MarginProof calldata buyerProof, MarginProof calldata sellerProof)
        external
    {
        if (msg.sender != exchange) revert Vault_OnlyExchange();
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
        int256 size = int256(uint256(fill.size)); // Safe cast: fill.size <= MAX_SIZE = 1e30
        bool buyerStandard = _applySide(fill.buyer, fill, ins.kind, size, fill.buyerFee, buyerProof, p);
        bool sellerStandard = _applySide(fill.seller, fill, ins.kind, -size, fill.sellerFee, sellerProof, p);
        _collectFees(uint256(fill.buyerFee) + fill.sellerFee, p.fundFeeShare);
        if (buyerStandard) _requireStandardMaintenance(fill.buyer);
        if (sellerStandard) _requireStandardMaintenance(fill.seller);
        emit TradeApplied(fill.instrument, fill.buyer, fill.seller, fill.size, fill.price);
    }

    function _collectFees(uint256 fees, uint256 fundFeeShare) internal {
        if (fees == 0) return;
        // The fund's share rounds down: the remainder goes to the fee collector.
        uint256 toFund = insuranceFund == address(0) ? 0 : SignedMath.mulWadDown(fees, fundFeeShare);
        if (toFund != 0) _creditFees(insuranceFund, toFund);
        if (fees != toFund) _creditFees(feeCollector, fees - toFund);
    }

    function _applySide(
        address account,
        Fill calldata fill,
        Kind kind,
        int256 delta,
        uint256 fee,
        MarginProof calldata proof,
        Params memory p
    ) internal returns (bool standard) {
        standard = _requireTradeMargin(account, fill, delta, fee, proof);
        _moveSide(account, fill.instrument, fill.price, kind, delta, fee, p);
    }

    /// @dev One side's position, cash, id list and nonce after the fill.
    function _moveSide(address account, uint32 id, uint256 price, Kind kind, int256 delta, uint256 fee, Params memory p)
        internal
    {
        AccountData storage a = _accounts[account];
        Position storage pos = _positions[account][id];
        int256 old = pos.size;
        if (kind == Kind.PERP) _settleFunding(account, id, pos);
        // Safe cast: fee <= type(uint128).max (Fill.buyerFee / sellerFee are uint128).
        int256 cashDelta = _trade(pos, kind, old, delta, price) - int256(fee);
        _addCash(account, a, cashDelta);
        _updateList(account, a, pos, id, old, p);
        _bumpNonce(account, a);
        emit PositionChanged(account, id, pos.size, pos.costBasis, cashDelta);
    }

    /// @dev A side whose attestation says the fill lowers its portfolio initial margin (the action hash
    /// with reducesIM = true, F-7) needs maintenance margin after the fill and is allowed while paused,
    /// frozen or in emergency; any other needs initial margin. In emergency mode a side with no
    /// signatures may only reduce its position and is checked on the standard margin after the fill
    /// (returns true).
    function _requireTradeMargin(address account, Fill calldata fill, int256 delta, uint256 fee, MarginProof calldata proof)
        internal
        view
        returns (bool standard)
    {
        AccountData storage a = _accounts[account];
        if (proof.signatures.length == 0) {
            if (!emergency()) revert Vault_MarginProofRequired();
            int256 old = _positions[account][fill.instrument].size;
            bool reducing = old != 0 && (old > 0) != (delta > 0) && SignedMath.abs(delta) <= SignedMath.abs(old);
            if (!reducing) revert Vault_NotReducing(account, fill.instrument);
            return true;
        }
        bytes32 action = ActionHash.trade(account, fill.instrument, delta, fill.price, fee, true);
        bool reducesIM = proof.attestation.actionHash == action;
        if (!reducesIM) {
            if (paused) revert Vault_Paused();
            if (a.frozen) revert Vault_Frozen(account);
            if (emergency()) revert Vault_Emergency();
            action = ActionHash.trade(account, fill.instrument, delta, fill.price, fee, false);
        }
        _requireMargin(proof, account, a.riskNonce, action, a.depositCredit, !reducesIM);
    }

    /// @dev Emergency closing: the account's standard margin equity after the fill, at the last posted
    /// price (the feed may be stale), covers the standard maintenance margin (emergencyMmRatio of the
    /// standard requirement, rounded up), as the Liquidator's emergency test uses it.
    function _requireStandardMaintenance(address account) internal view {
        (int256 equity,, uint256 requirement) = standardMargin.closingFigures(account);
        uint256 mm = SignedMath.mulWadUp(requirement, riskParams.liquidationParams().emergencyMmRatio);
        if (equity < SafeCast.toInt256(mm)) revert Vault_BelowStandardMaintenance(equity, mm);
    }

    /// @dev Moves the position by `delta` at `price`; returns the cash change before fees.
    /// For every side, cashDelta - costBasisDelta = -delta * price exactly (zero-sum across sides).
    function _trade(Position storage pos, Kind kind, int256 old, int256 delta, uint256 price)
        internal
        returns (int256 cashDelta)
    {
        int256 v = SignedMath.value(delta, price);
        pos.size = SafeCast.toInt128(old + delta);
        if (kind == Kind.CALL || kind == Kind.PUT) return -v; // premium-settled
        int256 cost = pos.costBasis;
        if (old == 0 || (old > 0) == (delta > 0)) {
            pos.costBasis = SafeCast.toInt128(cost + v);
            return 0;
        }
        uint256 absOld = SignedMath.abs(old);
        uint256 absDelta = SignedMath.abs(delta);
        if (absDelta <= absOld) {
            // Removed cost rounds towards +inf: realised cash rounds against the account.
            int256 removed = SignedMath.mulDivCeil(cost, absDelta, absOld);
            pos.costBasis = SafeCast.toInt128(cost - removed);
            return -v - removed;
        }
        int256 vClose = SignedMath.value(-old, price);
        pos.costBasis = SafeCast.toInt128(v - vClose);
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

    // ---------------------------------------------------------------- funding
    /// @inheritdoc IVaultCore
    function settleFunding(address account, uint32 instrument) external {
        if (instruments.get(instrument).kind != Kind.PERP) revert Vault_NotPerp(instrument);
        Position storage pos = _positions[account][instrument];
        if (pos.size == 0) revert Vault_NoPosition(account, instrument);
        _settleFunding(account, instrument, pos);
    }

    function _creditFees(address collector, uint256 amount) internal {
        _addCash(collector, _accounts[collector], SafeCast.toInt256(amount));
        emit FeesCollected(collector, amount);
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc IVaultCore
    function positionIds(address account) external view returns (uint32[] memory) {
        return _accounts[account].ids;
    }

    /// @inheritdoc IVaultCore
    function positionOf(address account, uint32 instrument)
        external
        view
        returns (int256 size, int256 costBasis, int256 fundingSnapshot)
    {
        Position storage pos = _positions[account][instrument];
        return (pos.size, pos.costBasis, pos.fundingSnapshot);
    }

    /// @inheritdoc IVaultCore
    function riskNonce(address account) external view returns (uint64) {
        return _accounts[account].riskNonce;
    }

    /// @inheritdoc IVaultCore
    function depositCredit(address account) external view returns (uint256) {
        return _accounts[account].depositCredit;
    }

    /// @inheritdoc IVaultCore
    function cashOf(address account) external view returns (int256 cash) {
        AccountData storage a = _accounts[account];
        cash = a.cash;
        uint128 index = lossIndex;
        if (cash > 0 && a.lossSnapshot != index) {
            // Safe casts: cash > 0, and the charge is at most cash.
            cash -= int256(_pendingCharge(uint256(cash), a.lossSnapshot, index));
        }
    }

    /// @inheritdoc IVaultCore
    function quote() external view returns (address) {
        return address(quoteToken);
    }
}
