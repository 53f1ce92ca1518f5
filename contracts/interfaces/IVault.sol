// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Fill, MarginProof, AccountView, StatusLeaf} from "../libraries/Types.sol";

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
interface IVault {
    error Vault_ZeroAmount();
    error Vault_ZeroAddress();
    error Vault_UnknownToken(address token);
    error Vault_InsufficientCash(int256 cash, uint256 amount);
    error Vault_InsufficientCollateral(uint256 balance, uint256 amount);
    error Vault_MarginProofRequired();
    error Vault_Paused();
    error Vault_OnlyExchange();
    error Vault_OnlyGuardian();
    error Vault_ExchangeAlreadySet();
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
    event OperatorSet(address indexed account, address indexed operator, bool allowed);
    event PausedSet(bool paused);
    event GuardianSet(address guardian);
    event ExchangeSet(address exchange);
    event FeeCollectorSet(address collector);

    /// @notice Deposits `amount` of `token` (the quote token or a listed collateral) for `account`.
    /// Anyone may deposit for anyone; a deposit never invalidates an attestation.
    function deposit(address token, uint256 amount, address account) external;

    /// @notice Withdraws to `to`. Quote withdrawals never take cash below zero. An account with
    /// positions or negative cash needs an attestation of its state after the withdrawal
    /// (action hash ActionHash.withdraw) whose margin equity covers the initial margin.
    function withdraw(address token, uint256 amount, address to, MarginProof calldata proof) external;

    /// @notice Withdraws quote with a status leaf of the latest root instead of an attestation: the
    /// withdrawal lowers margin equity by exactly `amount` and leaves the initial margin unchanged, so
    /// it is allowed when equity + credit since the leaf - amount covers the leaf's initial margin.
    function withdrawQuoteWithStatus(uint256 amount, address to, StatusLeaf calldata leaf, bytes32[] calldata proof)
        external;

    /// @notice Applies a matched fill. Exchange only. Each side needs an attestation of its state
    /// after the fill (action hash ActionHash.trade): initial margin for a trade that adds risk,
    /// maintenance margin for one that only reduces a position. Bumps both risk nonces.
    function applyTrade(Fill calldata fill, MarginProof calldata buyerProof, MarginProof calldata sellerProof)
        external;

    /// @notice Settles an account's perpetual funding into cash. Anyone; never bumps the risk nonce.
    function settleFunding(address account, uint32 instrument) external;

    /// @notice Settles an expired future or option position into cash at the expiry's settlement
    /// price and removes it. Anyone; never bumps the risk nonce.
    function settleExpired(address account, uint32 instrument) external;

    /// @notice Lets `operator` trade for the caller (never withdraw).
    function setOperator(address operator, bool allowed) external;

    /// @notice Pauses or resumes new risk (risk-adding trades and withdrawals backed by
    /// positions). Deposits, closing trades and settlement always work. Guardian only.
    function setPaused(bool paused) external;

    function setGuardian(address guardian) external;
    function setFeeCollector(address collector) external;
    /// @notice Wires the Exchange. Once, owner only.
    function setExchange(address exchange) external;

    function getAccount(address account) external view returns (AccountView memory);
    function riskNonce(address account) external view returns (uint64);
    function depositCredit(address account) external view returns (uint256);
    function cashOf(address account) external view returns (int256);
    function collateralOf(address account, address token) external view returns (uint256);
    function positionCount(address account) external view returns (uint256);
    function isOperator(address account, address operator) external view returns (bool);
    function paused() external view returns (bool);
    function quote() external view returns (address);
}
