// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ILiquidator, Auction} from "./interfaces/ILiquidator.sol";
import {IVault} from "./interfaces/IVault.sol";
import {IRiskOracle} from "./interfaces/IRiskOracle.sol";
import {IRiskParams, LiquidationParams} from "./interfaces/IRiskParams.sol";
import {IStandardMargin} from "./interfaces/IStandardMargin.sol";
import {MarginProof, StatusLeaf, Attestation} from "./libraries/Types.sol";
import {Constants} from "./libraries/Constants.sol";
import {ActionHash} from "./libraries/ActionHash.sol";

/// @title Liquidator
/// @notice Dutch auctions of a fraction of an account's whole portfolio (see ILiquidator). Reaches the
/// Vault only through its liquidation hooks (freeze, transfer a fraction, move cash, socialise a loss).
contract Liquidator is ILiquidator, ReentrancyGuard {
    uint256 internal constant WAD = Constants.WAD;

    // ---------------------------------------------------------------- immutables
    IVault public immutable vault;
    IRiskOracle public immutable oracle; // the Vault's oracle module, at the Vault's address
    IRiskParams public immutable riskParams;
    IStandardMargin public immutable standardMargin;
    address public immutable insuranceFund;

    // ---------------------------------------------------------------- storage
    mapping(address => Auction) internal _auctions;

    // ---------------------------------------------------------------- constructor
    constructor(IVault vault_, IRiskParams riskParams_, IStandardMargin standardMargin_, address insuranceFund_) {
        (vault, oracle, riskParams) = (vault_, IRiskOracle(address(vault_)), riskParams_);
        (standardMargin, insuranceFund) = (standardMargin_, insuranceFund_);
    }

    /// @dev An account's figures as a proof states them, credited with deposits up to `credit`.
    struct Figures {
        int256 mtm;
        int256 equity;
        uint256 mm;
        uint256 im;
        uint256 credit;
    }

    // ---------------------------------------------------------------- start
    /// @inheritdoc ILiquidator
    function start(address account, StatusLeaf calldata leaf, bytes32[] calldata proof) external nonReentrant {
        (uint64 nonce, uint256 credit) = _idle(account);
        (int256 equity,, uint256 mm) = oracle.verifyStatus(leaf, proof, account, nonce, credit);
        int256 mtm = leaf.mtmEquity + int256(credit - leaf.creditCheckpoint);
        _open(account, Figures(mtm, equity, mm, leaf.initialMargin, credit), false);
    }

    /// @inheritdoc ILiquidator
    function startWithAttestation(address account, MarginProof calldata proof) external nonReentrant {
        (uint64 nonce, uint256 credit) = _idle(account);
        oracle.verify(proof, account, nonce, bytes32(0), credit);
        Attestation calldata a = proof.attestation;
        int256 extra = int256(credit - a.creditCheckpoint);
        _open(account, Figures(a.mtmEquity + extra, a.marginEquity + extra, a.maintenanceMargin, a.initialMargin, credit), false);
    }

    /// @inheritdoc ILiquidator
    function startEmergency(address account) external nonReentrant {
        if (!oracle.emergency()) revert Liquidator_NotEmergency();
        (, uint256 credit) = _idle(account);
        _open(account, _standardFigures(account, credit), true);
    }

    function _idle(address account) internal view returns (uint64 nonce, uint256 credit) {
        if (_auctions[account].active) revert Liquidator_AlreadyInAuction(account);
        return (vault.riskNonce(account), vault.depositCredit(account));
    }

    function _standardFigures(address account, uint256 credit) internal view returns (Figures memory f) {
        (int256 equity, int256 mtm, uint256 im) = standardMargin.figures(account);
        uint256 ratio = riskParams.liquidationParams().emergencyMmRatio;
        return Figures(mtm, equity, Math.mulDiv(im, ratio, WAD, Math.Rounding.Ceil), im, credit);
    }

    function _open(address account, Figures memory f, bool emergency) internal {
        if (f.equity >= int256(f.mm)) revert Liquidator_Healthy(f.equity, f.mm);
        vault.setFrozen(account, true); // bumps the risk nonce: earlier attestations are void
        Auction storage a = _auctions[account];
        a.active = true;
        a.emergency = emergency;
        a.version = 0;
        _snapshot(a, account, f, true);
        emit AuctionStarted(account, a.insolvent, emergency, f.mtm, f.equity, f.mm);
    }

    /// @dev Writes the figures; a new phase (start, or a change between solvent and insolvent) restarts
    /// the clock.
    function _snapshot(Auction storage a, address account, Figures memory f, bool restart) internal {
        bool insolvent = f.mtm < 0;
        if (restart || insolvent != a.insolvent) a.startedAt = uint64(block.timestamp);
        a.insolvent = insolvent;
        a.mtmEquity = f.mtm;
        a.equity = f.equity;
        a.maintenanceMargin = f.mm;
        a.initialMargin = f.im;
        a.credit = f.credit;
        uint256 distance = f.equity < int256(f.mm) ? uint256(int256(f.mm) - f.equity) : 0;
        a.bufferMargin = f.mm + Math.mulDiv(distance, riskParams.liquidationParams().bufferRatio, WAD, Math.Rounding.Ceil);
        a.nonce = vault.riskNonce(account);
    }

    // ---------------------------------------------------------------- refresh
    /// @inheritdoc ILiquidator
    function refresh(address account, StatusLeaf calldata leaf, bytes32[] calldata proof) external nonReentrant {
        Auction storage a = _active(account);
        uint256 credit = vault.depositCredit(account);
        (int256 equity,, uint256 mm) = oracle.verifyStatus(leaf, proof, account, vault.riskNonce(account), credit);
        int256 mtm = leaf.mtmEquity + int256(credit - leaf.creditCheckpoint);
        _update(a, account, Figures(mtm, equity, mm, leaf.initialMargin, credit));
    }

    /// @inheritdoc ILiquidator
    function refreshEmergency(address account) external nonReentrant {
        if (!oracle.emergency()) revert Liquidator_NotEmergency();
        Auction storage a = _active(account);
        _update(a, account, _standardFigures(account, vault.depositCredit(account)));
    }

    function _update(Auction storage a, address account, Figures memory f) internal {
        if (f.equity >= int256(f.mm)) return _end(account, 2);
        a.version += 1;
        _snapshot(a, account, f, false);
        emit AuctionRefreshed(account, a.insolvent, f.mtm, f.equity, f.mm);
    }

    // ---------------------------------------------------------------- bid
    /// @inheritdoc ILiquidator
    function bid(
        address account,
        uint256 fractionWad,
        int256 worstPrice,
        uint32 expectedVersion,
        MarginProof calldata bidderProof
    ) external nonReentrant returns (int256) {
        if (msg.sender == account) revert Liquidator_SelfBid();
        if (_auctions[msg.sender].active) revert Liquidator_AlreadyInAuction(msg.sender); // a frozen bidder adds no risk
        Auction storage a = _active(account);
        Auction memory m = _biddable(a, account, expectedVersion);
        (int256 p, uint256 fee, uint256 discountWad, bool tookMax) = _quoteBid(m, fractionWad, worstPrice);
        bool standard = bidderProof.signatures.length == 0;
        if (!standard) _checkBidder(bidderProof, account, m.version, fractionWad, worstPrice);
        else if (!oracle.emergency()) revert Liquidator_NotEmergency();

        vault.transferPortfolio(account, msg.sender, fractionWad);
        _pay(account, fractionWad, p, fee, discountWad);
        if (standard) standardMargin.requireInitial(msg.sender);
        _afterBid(a, account, fractionWad, p, tookMax);
        return p;
    }

    /// @dev The fraction checked against f_max and the price against the bidder's worst price.
    function _quoteBid(Auction memory m, uint256 f, int256 worstPrice)
        internal
        view
        returns (int256 price, uint256 fee, uint256 discountWad, bool tookMax)
    {
        LiquidationParams memory l = riskParams.liquidationParams();
        uint256 maxF = _maxFraction(m, l);
        if (f == 0 || f > maxF) revert Liquidator_BadFraction(f, maxF);
        (price, fee) = _price(m, f, l);
        if (price > worstPrice) revert Liquidator_PriceAboveLimit(price, worstPrice);
        return (price, fee, m.insolvent ? 0 : _discount(m, l), f == maxF);
    }

    /// @dev Checks the version and the snapshot's nonce, credits pending deposits into storage and
    /// returns the snapshot a bid prices on.
    function _biddable(Auction storage a, address account, uint32 expectedVersion) internal returns (Auction memory m) {
        if (a.version != expectedVersion) revert Liquidator_VersionChanged(expectedVersion, a.version);
        uint64 nonce = vault.riskNonce(account);
        if (nonce != a.nonce) revert Liquidator_StaleSnapshot(a.nonce, nonce);
        m = _credited(a, vault.depositCredit(account));
        a.mtmEquity = m.mtmEquity;
        a.equity = m.equity;
        a.credit = m.credit;
        a.insolvent = m.insolvent;
        a.startedAt = m.startedAt;
    }

    function _pay(address account, uint256 f, int256 price, uint256 fee, uint256 discountWad) internal {
        (uint256 draw, uint256 socialised) = _settle(account, price, fee);
        emit Bid(account, msg.sender, f, price, discountWad, fee, draw, socialised);
    }

    /// @dev The auction with the deposits made since its snapshot credited to both equities (they are the
    /// account's); an insolvent auction they make solvent restarts its clock as a solvent one.
    function _credited(Auction storage s, uint256 credit) internal view returns (Auction memory a) {
        a = s;
        if (credit == a.credit) return a;
        int256 extra = int256(credit - a.credit);
        a.mtmEquity = a.mtmEquity + extra;
        a.equity = a.equity + extra;
        a.credit = credit;
        if (a.insolvent && a.mtmEquity >= 0) (a.insolvent, a.startedAt) = (false, uint64(block.timestamp));
    }

    /// @dev The bidder's attestation binds the auction, its version, the fraction and the worst price, and
    /// covers the bidder's initial margin after taking the fraction at that price.
    function _checkBidder(MarginProof calldata proof, address account, uint256 version, uint256 f, int256 worstPrice)
        internal
        view
    {
        bytes32 action = ActionHash.bid(msg.sender, account, version, f, worstPrice);
        uint256 credit = vault.depositCredit(msg.sender);
        oracle.verify(proof, msg.sender, vault.riskNonce(msg.sender), action, credit);
        Attestation calldata att = proof.attestation;
        int256 equity = att.marginEquity + int256(credit - att.creditCheckpoint);
        if (equity < int256(att.initialMargin)) revert Liquidator_InsufficientMargin(equity, att.initialMargin);
    }

    /// @dev Pays the price: bidder to account (and the fee to the fund) in a solvent auction; fund, then the
    /// loss index, to the bidder in an insolvent one.
    function _settle(address account, int256 price, uint256 fee) internal returns (uint256 draw, uint256 socialised) {
        if (price > 0) vault.moveCash(msg.sender, account, uint256(price));
        if (fee != 0) vault.moveCash(msg.sender, insuranceFund, fee);
        if (price >= 0) return (0, 0);
        uint256 owed = uint256(-price);
        int256 fund = vault.cashOf(insuranceFund);
        draw = fund > 0 ? Math.min(uint256(fund), owed) : 0;
        if (draw != 0) vault.moveCash(insuranceFund, msg.sender, draw);
        if (owed > draw) {
            socialised = vault.socializeLoss(msg.sender, owed - draw);
            if (owed - draw > socialised) emit LossUnrecovered(account, owed - draw - socialised);
        }
    }

    /// @dev Scales the snapshot by the fraction left and adds what the account received; ends the auction
    /// when it is emptied, when a solvent bid took the largest fraction (which restores the buffer margin
    /// by construction) or when the account is back above its buffer margin.
    function _afterBid(Auction storage a, address account, uint256 f, int256 price, bool tookMax) internal {
        if (f == WAD) return _end(account, 1);
        uint256 keep = WAD - f;
        int256 received = price > 0 ? price : int256(0);
        a.mtmEquity = _scaleDown(a.mtmEquity, keep) + received;
        a.equity = _scaleDown(a.equity, keep) + received;
        a.maintenanceMargin = Math.mulDiv(a.maintenanceMargin, keep, WAD, Math.Rounding.Ceil);
        a.initialMargin = Math.mulDiv(a.initialMargin, keep, WAD, Math.Rounding.Ceil);
        a.bufferMargin = Math.mulDiv(a.bufferMargin, keep, WAD, Math.Rounding.Ceil);
        a.nonce = vault.riskNonce(account);
        a.version += 1;
        if (!a.insolvent && (tookMax || a.equity >= int256(a.bufferMargin))) _end(account, 0);
    }

    function _end(address account, uint8 reason) internal {
        delete _auctions[account];
        vault.setFrozen(account, false);
        emit AuctionEnded(account, reason);
    }

    // ---------------------------------------------------------------- pricing
    /// @dev Price and fee of a fraction: solvent, ceil(f·V·d) with fee ceil(rate · (floor(f·V) − price));
    /// insolvent, −floor(f · (|V| + M · min(t, T) / T)).
    function _price(Auction memory a, uint256 f, LiquidationParams memory l)
        internal
        view
        returns (int256 price, uint256 fee)
    {
        if (!a.insolvent) {
            uint256 v = uint256(a.mtmEquity);
            uint256 paid = Math.mulDiv(v, f * _discount(a, l), WAD * WAD, Math.Rounding.Ceil);
            uint256 worth = Math.mulDiv(v, f, WAD);
            uint256 gain = worth > paid ? worth - paid : 0;
            return (SafeCast.toInt256(paid), Math.mulDiv(gain, l.liquidationFee, WAD, Math.Rounding.Ceil));
        }
        uint256 elapsed = Math.min(block.timestamp - a.startedAt, l.insolventLength);
        uint256 deficit = uint256(-a.mtmEquity) + Math.mulDiv(a.maintenanceMargin, elapsed, l.insolventLength);
        return (-SafeCast.toInt256(Math.mulDiv(deficit, f, WAD)), 0);
    }

    /// @dev d(t): startDiscount → cutoffDiscount over fastLength, then → 0 over slowLength.
    function _discount(Auction memory a, LiquidationParams memory l) internal view returns (uint256) {
        uint256 t = block.timestamp - a.startedAt;
        if (t < l.fastLength) {
            return l.startDiscount - (uint256(l.startDiscount - l.cutoffDiscount) * t) / l.fastLength;
        }
        t -= l.fastLength;
        if (t >= l.slowLength) return 0;
        return l.cutoffDiscount - (uint256(l.cutoffDiscount) * t) / l.slowLength;
    }

    /// @dev f_max = (B − E) / (B − E + V·d), rounded up; the whole portfolio when V is below
    /// `smallPortfolio` or the auction is insolvent.
    function _maxFraction(Auction memory a, LiquidationParams memory l) internal view returns (uint256) {
        if (a.insolvent || a.mtmEquity < int256(uint256(l.smallPortfolio))) return WAD;
        if (a.equity >= int256(a.bufferMargin)) return 0;
        uint256 gap = uint256(int256(a.bufferMargin) - a.equity);
        uint256 den = gap + Math.mulDiv(uint256(a.mtmEquity), _discount(a, l), WAD);
        return Math.min(WAD, Math.mulDiv(gap, WAD, den, Math.Rounding.Ceil));
    }

    function _scaleDown(int256 x, uint256 keep) internal pure returns (int256) {
        // Rounded towards -infinity: against the liquidated account, so the auction never ends early.
        if (x >= 0) return int256(Math.mulDiv(uint256(x), keep, WAD));
        return -int256(Math.mulDiv(uint256(-x), keep, WAD, Math.Rounding.Ceil));
    }

    function _active(address account) internal view returns (Auction storage a) {
        a = _auctions[account];
        if (!a.active) revert Liquidator_NoAuction(account);
    }

    /// @dev The active auction as a bid now would see it (deposits since the snapshot credited).
    function _current(address account) internal view returns (Auction memory) {
        return _credited(_active(account), vault.depositCredit(account));
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc ILiquidator
    function auctionOf(address account) external view returns (Auction memory) {
        return _auctions[account];
    }

    /// @inheritdoc ILiquidator
    function discount(address account) external view returns (uint256) {
        return _discount(_current(account), riskParams.liquidationParams());
    }

    /// @inheritdoc ILiquidator
    function maxFraction(address account) external view returns (uint256) {
        return _maxFraction(_current(account), riskParams.liquidationParams());
    }

    /// @inheritdoc ILiquidator
    function quote(address account, uint256 fractionWad) external view returns (int256 price, uint256 fee) {
        return _price(_current(account), fractionWad, riskParams.liquidationParams());
    }
}
