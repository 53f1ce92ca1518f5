// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarginProof, StatusLeaf} from "../libraries/Types.sol";

/// @notice A liquidation auction's state: a snapshot of the account's figures, updated per bid.
/// @dev Figures in quote units; `mtmEquity` and `equity` include the deposit credit up to `credit`.
struct Auction {
    bool active;
    bool insolvent; // mark-to-market equity below zero: the insurance fund pays the bidder
    bool emergency; // started on the on-chain standard margin (emergency mode)
    uint32 version; // bids and refreshes so far: a bid states the version it expects
    uint64 startedAt; // start of the current phase (a solvent auction turning insolvent restarts it)
    uint64 nonce; // the account's risk nonce the snapshot describes
    int256 mtmEquity; // V
    int256 equity; // E, margin equity with haircuts
    uint256 maintenanceMargin; // M
    uint256 initialMargin;
    uint256 bufferMargin; // B = M + bufferRatio × (M − E): a solvent auction ends once E ≥ B
    uint256 credit; // the account's deposit credit the snapshot includes
}

/// @title Liquidator: Dutch auctions of a fraction of an account's whole portfolio.
/// @notice Anyone may start the liquidation of an account whose credited margin equity is below its
/// maintenance margin, proven by a status leaf of the latest root, a status attestation, or (in
/// emergency mode) the on-chain standard margin. The account is frozen and its risk nonce bumped.
///
/// Solvent auction (V ≥ 0): the bidder takes a fraction f of every position, collateral and the cash,
/// paying f · V · d(t), where d(t) falls linearly from `startDiscount` to `cutoffDiscount` over
/// `fastLength`, then to 0 over `slowLength`. A bid takes at most
/// f_max = (B − E) / (B − E + V · d), the share after which E' = (1 − f)E + f·d·V reaches the scaled
/// buffer margin (1 − f)B; below `smallPortfolio` the whole portfolio may be taken. A fee of
/// `liquidationFee` × (f · V − price) goes from the bidder to the insurance fund.
///
/// Insolvent auction (V < 0): the insurance fund pays the bidder f · (|V| + M · min(t, T) / T) for the
/// fraction, growing from the deficit over T = `insolventLength`; what the fund cannot pay is
/// socialised through the Vault's loss index.
///
/// After each bid the snapshot is scaled: V' = (1 − f)V + price, E' = (1 − f)E + price,
/// M' = (1 − f)M, B' = (1 − f)B. The auction ends when E' ≥ B' or a bid took f_max (solvent: f_max
/// restores the buffer by construction, whatever the rounding), when the portfolio is emptied, or when a
/// newer status leaf shows the account at or above its maintenance margin. Deposits made to the account
/// since the snapshot raise V and E before each bid (and in the views); one that makes an insolvent
/// auction solvent restarts its clock as a solvent auction.
interface ILiquidator {
    error Liquidator_Healthy(int256 equity, uint256 maintenanceMargin);
    error Liquidator_AlreadyInAuction(address account);
    error Liquidator_NoAuction(address account);
    error Liquidator_VersionChanged(uint256 expected, uint256 actual);
    error Liquidator_StaleSnapshot(uint64 snapshotNonce, uint64 accountNonce);
    error Liquidator_BadFraction(uint256 fractionWad, uint256 maxFractionWad);
    error Liquidator_PriceAboveLimit(int256 price, int256 worstPrice);
    error Liquidator_NotEmergency();
    error Liquidator_SelfBid();
    error Liquidator_InsufficientMargin(int256 equity, uint256 initialMargin);

    event AuctionStarted(
        address indexed account, bool insolvent, bool emergency, int256 mtmEquity, int256 equity, uint256 maintenanceMargin
    );
    event AuctionRefreshed(address indexed account, bool insolvent, int256 mtmEquity, int256 equity, uint256 maintenanceMargin);
    /// @param price what the bidder paid the account (negative: what the bidder was paid)
    /// @param discountWad d(t), the share of mark-to-market paid (solvent auctions; 0 when insolvent)
    /// @param fee paid by the bidder to the insurance fund
    /// @param fundDraw paid by the insurance fund to the bidder
    /// @param socialised paid to the bidder through the loss index
    event Bid(
        address indexed account,
        address indexed bidder,
        uint256 fractionWad,
        int256 price,
        uint256 discountWad,
        uint256 fee,
        uint256 fundDraw,
        uint256 socialised
    );
    /// @notice Bad debt the insurance fund and the positive balances could not absorb (never silent).
    event LossUnrecovered(address indexed account, uint256 amount);
    /// @param reason 0 back above the buffer margin, 1 emptied, 2 healthy on a newer result
    event AuctionEnded(address indexed account, uint8 reason);

    /// @notice Starts a liquidation with a status leaf of the latest root.
    function start(address account, StatusLeaf calldata leaf, bytes32[] calldata proof) external;

    /// @notice Starts a liquidation with a status attestation (action hash zero) of the account.
    function startWithAttestation(address account, MarginProof calldata proof) external;

    /// @notice Starts a liquidation on the on-chain standard margin; emergency mode only.
    function startEmergency(address account) external;

    /// @notice Updates the snapshot from a newer status leaf (at the account's current risk nonce); ends
    /// the auction if the account is at or above its maintenance margin.
    function refresh(address account, StatusLeaf calldata leaf, bytes32[] calldata proof) external;

    /// @notice Updates the snapshot from the on-chain standard margin; emergency mode only.
    function refreshEmergency(address account) external;

    /// @notice Takes `fractionWad` of the account's remaining portfolio. The bidder may not itself be
    /// in an auction (Liquidator_AlreadyInAuction), nor be the account.
    /// @param account the account in auction
    /// @param fractionWad share of the remaining portfolio, at most maxFraction(account)
    /// @param worstPrice the most the bidder will pay (negative: the least it will be paid)
    /// @param expectedVersion the auction version the bid was priced on (front-running guard)
    /// @param bidderProof an attestation of the bidder after the bid (ActionHash.bid) covering its initial
    /// margin; with no signatures, emergency mode only, the bidder's standard margin is checked instead
    /// @return price what the bidder paid (negative: what it was paid)
    function bid(
        address account,
        uint256 fractionWad,
        int256 worstPrice,
        uint32 expectedVersion,
        MarginProof calldata bidderProof
    ) external returns (int256 price);

    /// @notice The auction state of an account.
    function auctionOf(address account) external view returns (Auction memory);

    /// @notice d(t): the share of mark-to-market a bid pays now (solvent auctions).
    function discount(address account) external view returns (uint256 discountWad);

    /// @notice The largest fraction a bid may take now.
    function maxFraction(address account) external view returns (uint256 fractionWad);

    /// @notice What a bid of `fractionWad` would pay now (negative: be paid), and its fee.
    function quote(address account, uint256 fractionWad) external view returns (int256 price, uint256 fee);
}
