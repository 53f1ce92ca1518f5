// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IRiskOracle} from "../interfaces/IRiskOracle.sol";
import {MarginProof, StatusLeaf} from "../libraries/Types.sol";

/// @title MarginCheckProbe: the marginal gas of one margin check, measured inside the call. Devnet only.
/// @notice Calls the oracle exactly as the Vault does (immutable oracle, calldata proof, the caller's
/// risk nonce and deposit credit) and returns the gas the call consumed: argument encoding, the
/// external call and the whole verification. Call it with `eth_call` from the account itself, before
/// anything else touched the oracle, so that its account and storage are cold as in an action's first check.
contract MarginCheckProbe {
    // ---------------------------------------------------------------- immutables
    IRiskOracle public immutable oracle;

    // ---------------------------------------------------------------- constructor
    constructor(IRiskOracle oracle_) {
        oracle = oracle_;
    }

    // ---------------------------------------------------------------- core
    /// @notice Gas of `oracle.requireMargin` for `msg.sender`, as in `Vault.withdraw` or a trade side.
    function requireMarginGas(MarginProof calldata proof, uint64 nonce, bytes32 actionHash, uint256 credit, bool useInitial)
        external
        view
        returns (uint256 gasUsed)
    {
        uint256 before = gasleft();
        oracle.requireMargin(proof, msg.sender, nonce, actionHash, credit, useInitial);
        gasUsed = before - gasleft();
    }

    /// @notice Gas of `oracle.verifyStatus` for `msg.sender`, as in `Vault.withdrawQuoteWithStatus`.
    function verifyStatusGas(StatusLeaf calldata leaf, bytes32[] calldata proof, uint64 nonce, uint256 credit)
        external
        view
        returns (uint256 gasUsed)
    {
        uint256 before = gasleft();
        oracle.verifyStatus(leaf, proof, msg.sender, nonce, credit);
        gasUsed = before - gasleft();
    }
}
