// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title A contract told of every new price round (the RiskOracle keeps the latest round id beside
/// its own configuration, so that the common attestation check needs no call to the feed).
interface IPriceRoundListener {
    function onPriceRound(uint64 round) external;
}

/// @title PriceFeed: signed index prices for every underlying, in numbered rounds.
/// @notice A round carries one price per underlying (PRICE_SCALE) and the time it was observed.
/// A round needs `quorum` signatures; a round in which any price moves more than `maxMove` from
/// the previous round, or from its reference round, needs every registered signer, so a real crash
/// is never frozen out while a quorum cannot walk the price away in small steps. The reference round
/// of a round stamped t is the latest round stamped at or before t − MOVE_WINDOW (the price in force
/// a window earlier), or the latest round every signer signed if that is later (the first round
/// until one is a window old): with the quorum alone, no price ends more than `maxMove` away from
/// its value a window earlier (see docs/governance.md, F-5).
interface IPriceFeed {
    error PriceFeed_WrongLength(uint256 given, uint256 expected);
    error PriceFeed_ZeroPrice(uint256 underlying);
    error PriceFeed_PriceTooLarge(uint256 underlying);
    /// @notice The round is not newer than the latest one.
    error PriceFeed_NotNewer(uint64 timestamp, uint64 latest);
    error PriceFeed_FutureTimestamp(uint64 timestamp, uint256 now_);
    /// @notice The observation is older than `maxDelay` when posted.
    error PriceFeed_StaleUpdate(uint64 timestamp, uint256 now_);
    /// @notice A move beyond `maxMove` needs every signer.
    error PriceFeed_MoveNeedsAllSigners(uint256 underlying);
    /// @notice The latest price is older than the heartbeat.
    error PriceFeed_Stale(uint64 timestamp, uint256 now_);
    error PriceFeed_UnknownRound(uint256 round);
    error PriceFeed_UnknownUnderlying(uint256 underlying);
    error PriceFeed_BadConfig();
    error PriceFeed_ListenerAlreadySet();

    event PricesPosted(uint256 indexed round, uint64 timestamp, uint256[] prices);
    event ConfigSet(uint64 heartbeat, uint64 maxDelay, uint64 maxMove);
    event RoundListenerSet(address listener);

    /// @notice Sets, once and before the first round, the contract told of each new round. Owner only.
    function setRoundListener(IPriceRoundListener listener) external;

    /// @notice Posts the next round. `sigs` are 65-byte signatures of the EIP-712 `PriceRound`,
    /// signers in increasing address order.
    function post(uint64 timestamp, uint256[] calldata prices, bytes calldata sigs) external;

    /// @notice Sets the heartbeat (max age of a usable price), the max delay of an update when posted
    /// and the move (against the previous round or the reference round) that needs every signer
    /// (WAD fraction). Owner only, within hard bounds.
    function setConfig(uint64 heartbeat, uint64 maxDelay, uint64 maxMove) external;

    /// @notice Guardian only, at once: the same as setConfig but each of the three may only fall
    /// (a shorter heartbeat and delay, a smaller move before every signer is needed).
    /// @dev Reverts with Guarded_Loosens(field) for a value above the current one.
    function tightenConfig(uint64 heartbeat, uint64 maxDelay, uint64 maxMove) external;

    /// @notice The reference round a round stamped `timestamp` would be checked against (0 before
    /// the first round); `timestamp` must be newer than the latest round.
    function referenceRound(uint64 timestamp) external view returns (uint64);

    /// @notice How many signatures `post(timestamp, prices, ·)` needs: the quorum, or every signer for
    /// a big move (the rule `post` applies, for price services).
    function signersRequired(uint64 timestamp, uint256[] calldata prices) external view returns (uint256);

    function numUnderlyings() external view returns (uint256);
    function latestRound() external view returns (uint64 round, uint64 timestamp);
    /// @notice Price of `underlying` at `round` (reverts for unknown rounds).
    function priceAt(uint256 round, uint256 underlying) external view returns (uint256);
    function roundTimestamp(uint256 round) external view returns (uint64);
    /// @notice Latest price, reverting with PriceFeed_Stale past the heartbeat.
    function latestPrice(uint256 underlying) external view returns (uint256 price, uint64 round);
    /// @notice The largest relative move (WAD) of any underlying between `round` and the latest round.
    function moveSince(uint256 round) external view returns (uint256 maxMoveWad);
    /// @notice The EIP-712 digest of a round, as signers sign it.
    function roundDigest(uint64 round, uint64 timestamp, uint256[] calldata prices) external view returns (bytes32);
}
