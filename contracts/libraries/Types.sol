// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @notice Instrument kinds. The numbering is part of the off-chain interface.
enum Kind {
    PERP,
    FUTURE,
    CALL,
    PUT
}

/// @notice A listed instrument. One unit of size is one unit of the underlying.
struct Instrument {
    Kind kind;
    uint8 underlying;
    uint64 expiry; // 0 for perpetuals
    uint128 strike; // PRICE_SCALE, 0 for linear instruments
}

/// @notice A margin result signed by the risk engine's signers (EIP-712 type `Attestation`).
/// @dev Amounts in quote units (6 decimals). `creditCheckpoint` is the account's cumulative deposit
/// credit the engine saw; deposits made since are credited on top, so deposits never invalidate it.
struct Attestation {
    address account;
    uint64 riskNonce;
    bytes32 actionHash;
    int256 marginEquity;
    int256 mtmEquity;
    uint256 initialMargin;
    uint256 maintenanceMargin;
    uint256 creditCheckpoint;
    bytes32 paramsHash;
    uint64 priceRound;
    uint64 issuedAt;
    uint64 expiry;
}

/// @notice An attestation with its signatures: 65-byte (r, s, v) signatures concatenated, signers
/// in strictly increasing address order.
struct MarginProof {
    Attestation attestation;
    bytes signatures;
}

/// @notice One engine round's status results, as a Merkle root signed by the quorum (EIP-712 type
/// `StatusRoot`). Leaves are StatusLeaf values, hashed as OpenZeppelin's StandardMerkleTree does:
/// keccak256(bytes.concat(keccak256(abi.encode(leaf)))).
struct StatusRoot {
    uint64 round;
    bytes32 root;
    uint64 priceRound;
    uint64 issuedAt;
    uint64 expiry;
    bytes32 paramsHash;
}

/// @notice An account's status result: its margin figures with no action bound.
struct StatusLeaf {
    address account;
    uint64 riskNonce;
    int256 marginEquity;
    int256 mtmEquity;
    uint256 initialMargin;
    uint256 maintenanceMargin;
    uint256 creditCheckpoint;
}

/// @notice A signed order (EIP-712 type `Order`).
/// @dev `signer` is the account itself or one of its operators (then `grant` is the operator grant's
/// version it signs under; ignored for the account). `isMaker` states the order's role in a trade.
struct Order {
    address account;
    address signer;
    uint32 instrument;
    bool isBuy;
    bool isMaker;
    uint128 size;
    uint128 limitPrice;
    uint64 nonce;
    uint64 deadline;
    uint64 grant;
}

/// @notice One fill between a buyer and a seller, as the Exchange hands it to the Vault.
struct Fill {
    uint32 instrument;
    address buyer;
    address seller;
    uint128 size;
    uint128 price;
    uint128 buyerFee;
    uint128 sellerFee;
}

/// @notice A position as returned by views.
struct PositionView {
    uint32 instrument;
    int256 size;
    int256 costBasis;
    int256 fundingSnapshot;
}

/// @notice An account's whole state in one call.
struct AccountView {
    int256 cash;
    uint64 riskNonce;
    uint256 depositCredit;
    address[] collateralTokens;
    uint256[] collateralBalances;
    PositionView[] positions;
}
