// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Fill, MarginProof, StatusLeaf} from "../libraries/Types.sol";

/// @title The Vault's errors and events (shared by the Vault and its liquidation module).
interface IVaultEvents {
    error Vault_ZeroAmount();
    error Vault_ZeroAddress();
    error Vault_UnknownToken(address token);
    error Vault_InsufficientCash(int256 cash, uint256 amount);
    error Vault_InsufficientCollateral(uint256 balance, uint256 amount);
    error Vault_MarginProofRequired();
    error Vault_Paused();
    error Vault_OnlyExchange();
    error Vault_OnlyGuardian();
    error Vault_AlreadySet();
    error Vault_OnlyLiquidator();
    error Vault_Frozen(address account);
    error Vault_Emergency();
    error Vault_BadFraction(uint256 fractionWad);
    error Vault_InstrumentExpired(uint32 instrument, uint64 expiry);
    error Vault_NotExpired(uint32 instrument, uint64 expiry);
    error Vault_NotPerp(uint32 instrument);
    error Vault_NoPosition(address account, uint32 instrument);
    error Vault_TooManyPositions(uint256 max);
    error Vault_PositionTooSmall(int256 size, uint256 minSize);
    error Vault_NotOnLot(uint256 size);
    error Vault_NotOnTick(uint256 price);
    error Vault_SizeTooLarge(uint256 size);
    error Vault_SelfTrade(address account);
    error Vault_BadQuoteToken();
    error Vault_InsufficientHeadroom(int256 equity, uint256 amount, uint256 initialMargin);
    /// @notice An amount above MAX_AMOUNT (type(uint128).max) at an entry point.
    error Vault_AmountTooLarge(uint256 amount, uint256 max);
    /// @notice A liquidation module function was called on the module itself, not through the Vault.
    error Vault_NotDelegated();
    /// @notice In emergency mode (no fresh status root or a stale feed), a fill side without an
    /// attestation must only reduce its position.
    error Vault_NotReducing(address account, uint32 instrument);
    /// @notice An emergency closing fill left the account's standard margin equity below the standard
    /// maintenance margin (emergencyMmRatio of the standard requirement).
    error Vault_BelowStandardMaintenance(int256 equity, uint256 maintenance);

    event Deposited(address indexed account, address indexed token, address from, uint256 amount, uint256 credit);
    event Withdrawn(address indexed account, address indexed token, address to, uint256 amount);
    event PositionChanged(
        address indexed account, uint32 indexed instrument, int256 size, int256 costBasis, int256 cashDelta
    );
    event TradeApplied(
        uint32 indexed instrument, address indexed buyer, address indexed seller, uint256 size, uint256 price
    );
    event FundingSettled(address indexed account, uint32 indexed instrument, int256 payment, int256 cumulative);
    event PositionSettled(address indexed account, uint32 indexed instrument, int256 size, uint256 price, int256 payoff);
    event FeesCollected(address indexed collector, uint256 amount);
    event RiskNonceBumped(address indexed account, uint64 nonce);
    event PausedSet(bool paused);
    event GuardianSet(address guardian);
    event ExchangeSet(address exchange);
    event FeeCollectorSet(address collector);
    event LiquidationSet(address liquidator, address insuranceFund, address standardMargin);
    event FrozenSet(address indexed account, bool frozen);
    event PortfolioTransferred(address indexed from, address indexed to, uint256 fractionWad);
    event CollateralTransferred(address indexed from, address indexed to, address indexed token, uint256 amount);
    event CashTransferred(address indexed from, address indexed to, int256 amount);
    /// @notice `amount` of bad debt was to be socialised; `socialised` was (all of it unless positive
    /// cash ran out); `lossIndex` is the new compounded share of positive cash lost (1e27 = all).
    event LossSocialised(address indexed to, uint256 amount, uint256 socialised, uint256 lossIndex);
    /// @notice An account's positive cash was charged its share of socialised losses.
    event LossApplied(address indexed account, uint256 charge);

}

/// @title The functions the Vault's own code implements.
interface IVaultCore is IVaultEvents {
    /// @notice Deposits `amount` of `token` (the quote token or a listed collateral) for `account`.
    /// Anyone may deposit for anyone; a deposit never invalidates an attestation.
    /// @param amount at most MAX_AMOUNT (type(uint128).max), else Vault_AmountTooLarge
    function deposit(address token, uint256 amount, address account) external;

    /// @notice Withdraws to `to`. Quote withdrawals never take cash below zero. An account with
    /// positions or negative cash needs an attestation of its state after the withdrawal
    /// (action hash ActionHash.withdraw, bound to `amount` as given) whose margin equity covers the
    /// initial margin; in emergency mode (no proof) the on-chain standard margin decides instead.
    /// @param amount at most MAX_AMOUNT (type(uint128).max), or WITHDRAW_ALL (type(uint256).max): the
    /// whole balance, for the quote token after settling funding on every perpetual first (so that a
    /// `settleFunding` just before cannot make it revert). Anything else above MAX_AMOUNT reverts with
    /// Vault_AmountTooLarge.
    function withdraw(address token, uint256 amount, address to, MarginProof calldata proof) external;

    /// @notice Applies a matched fill. Exchange only. Each side needs an attestation of its state
    /// after the fill: one bound to ActionHash.trade(..., reducesIM = true) needs maintenance margin
    /// (the engine signs it only when the fill lowers the account's portfolio initial margin), one
    /// bound to reducesIM = false needs initial margin and is refused while paused, frozen or in
    /// emergency. In emergency mode a side with no signatures that only reduces its position is checked
    /// against the standard maintenance margin instead (closing without the engine). Bumps both nonces.
    function applyTrade(Fill calldata fill, MarginProof calldata buyerProof, MarginProof calldata sellerProof)
        external;

    /// @notice Settles an account's perpetual funding into cash. Anyone; never bumps the risk nonce.
    function settleFunding(address account, uint32 instrument) external;

    /// @notice Pauses or resumes new risk (risk-adding trades and withdrawals backed by
    /// positions). Deposits, closing trades and settlement always work. The guardian (or the owner)
    /// pauses at once; only the owner (the timelock) resumes.
    function setPaused(bool paused) external;

    /// @notice The instruments of the account's open positions (VaultLens.getAccount gives the whole state).
    function positionIds(address account) external view returns (uint32[] memory);
    /// @notice One position: size (1e18), cost basis (1e18-scaled USD, 0 for options), funding snapshot.
    function positionOf(address account, uint32 instrument)
        external
        view
        returns (int256 size, int256 costBasis, int256 fundingSnapshot);
    function riskNonce(address account) external view returns (uint64);
    function depositCredit(address account) external view returns (uint256);
    /// @notice Cash net of any socialised loss not yet charged to it.
    function cashOf(address account) external view returns (int256);
    function quote() external view returns (address);
}

/// @title The Vault functions run by its liquidation module (VaultModule), by delegatecall from the
/// Vault's fallback: called on the Vault's address like any other; the module itself refuses direct calls.
interface IVaultModule is IVaultEvents {
    /// @notice Withdraws quote with a status leaf of the latest root instead of an attestation: the
    /// withdrawal lowers margin equity by exactly `amount` and leaves the initial margin unchanged, so
    /// it is allowed when equity + credit since the leaf - amount covers the leaf's initial margin.
    /// @param amount at most MAX_AMOUNT (type(uint128).max)
    function withdrawQuoteWithStatus(uint256 amount, address to, StatusLeaf calldata leaf, bytes32[] calldata proof)
        external;

    /// @notice Settles an expired future or option position into cash at the expiry's settlement
    /// price and removes it. Anyone; never bumps the risk nonce.
    function settleExpired(address account, uint32 instrument) external;

    /// @notice Sets the guardian (never the zero address). Owner only.
    function setGuardian(address guardian) external;
    function setFeeCollector(address collector) external;
    /// @notice Wires the Exchange. Once, owner only.
    function setExchange(address exchange) external;

    /// @notice Wires the Liquidator (the only caller of the liquidation hooks), the insurance fund's
    /// account and the on-chain standard-margin checker of emergency mode. Once, owner only.
    function setLiquidation(address liquidator, address insuranceFund, address standardMargin) external;

    /// @notice Freezes an account for its liquidation auction (no risk-adding trades, no withdrawals;
    /// bumps the risk nonce so earlier attestations are void) or thaws it. Liquidator only.
    /// @param account the account
    /// @param frozen true at the auction's start, false at its end
    function setFrozen(address account, bool frozen) external;

    /// @notice Moves `fractionWad` of `from`'s whole portfolio to `to`: each position (size rounded
    /// towards zero to the lot, with the same share of its cost basis), each collateral (rounded down)
    /// and cash (rounded towards -infinity). Funding is settled first; both risk nonces are bumped; the
    /// position cap applies to `to`, the minimum size does not. Liquidator only.
    /// @param from the liquidated account
    /// @param to the bidder
    /// @param fractionWad share of the portfolio, in (0, 1e18]
    function transferPortfolio(address from, address to, uint256 fractionWad) external;

    /// @notice Moves `amount` of cash from `from` to `to` (it may leave `from` negative). Liquidator only.
    function moveCash(address from, address to, uint256 amount) external;

    /// @notice Credits `to` with `amount` of bad debt the insurance fund could not pay, charged to every
    /// positive cash balance pro rata through `lossIndex` (compounded, lazily, rounded up, on each
    /// account's next touch). Socialises at most the positive cash outstanding less one unit. Re-binds `paramsHash` to the new index,
    /// so attestations and roots computed before the loss stop verifying. Liquidator only.
    /// @return socialised the amount actually socialised
    function socializeLoss(address to, uint256 amount) external returns (uint256 socialised);
}

/// @title Vault's public state getters (generated by the compiler from VaultBase's storage).
interface IVaultState {
    function collateralOf(address account, address token) external view returns (uint256);
    function paused() external view returns (bool);
    function exchange() external view returns (address);
    function guardian() external view returns (address);
    function liquidator() external view returns (address);
}

/// @title Vault: collateral, cash and positions of every account.
/// @notice Each account holds a signed cash balance in quote units (6 decimals: realised P&L,
/// premiums, fees, funding, settlement) and volatile collateral tokens valued with haircuts.
/// Linear positions (perps, futures) carry a cost basis; options are premium-settled into cash.
/// The quote token held equals sum(cash) - sum(cost basis) exactly, and each volatile token held
/// equals the sum of the balances (invariants I-1, I-2).
///
/// Each account has a risk nonce, bumped only by trades and withdrawals. Deposits never bump it:
/// they raise the account's cumulative deposit credit, which attestations checkpoint, so deposits
/// made after an attestation are credited to it instead of invalidating it.
/// @dev The whole ABI at the Vault's address: the Vault's code (IVaultCore), its liquidation module's
/// reached through the fallback (IVaultModule) and the storage getters (IVaultState). The ABI file
/// `build/abi/Vault.json` merges the module's functions in (offchain/chain/build.py).
interface IVault is IVaultCore, IVaultModule, IVaultState {}
