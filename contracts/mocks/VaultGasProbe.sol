// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Vault} from "../Vault.sol";
import {IInstruments} from "../interfaces/IInstruments.sol";
import {IRiskParams} from "../interfaces/IRiskParams.sol";
import {IPriceFeed} from "../interfaces/IPriceFeed.sol";
import {MarginProof, StatusLeaf, Attestation, StatusRoot} from "../libraries/Types.sol";

/// @title VaultGasProbe: the Vault plus two probes of the marginal gas of its margin check. Devnet only.
/// @notice The probes run the very internal check a withdrawal or a trade side runs (the caller's risk
/// nonce and deposit credit, the proof from calldata) and return the gas it consumed, measured with
/// `gasleft()` inside the call. Call them with `eth_call` from the account, so that storage is cold as
/// in an action's first check.
contract VaultGasProbe is Vault {
    constructor(
        address owner_,
        IERC20 quote_,
        IInstruments instruments_,
        IRiskParams riskParams_,
        IPriceFeed feed_,
        address feeCollector_
    ) Vault(owner_, quote_, instruments_, riskParams_, feed_, feeCollector_) {}

    /// @notice Gas of the attestation check of `msg.sender`, as in `withdraw` or a trade side.
    function requireMarginGas(MarginProof calldata proof, uint64 nonce, bytes32 actionHash, uint256 credit, bool useInitial)
        external
        view
        returns (uint256 gasUsed)
    {
        uint256 before = gasleft();
        _requireMargin(proof, msg.sender, nonce, actionHash, credit, useInitial);
        gasUsed = before - gasleft();
    }

    /// @notice Gas of the status-root check of `msg.sender`, as in `withdrawQuoteWithStatus`.
    function verifyStatusGas(StatusLeaf calldata leaf, bytes32[] calldata proof, uint64 nonce, uint256 credit)
        external
        view
        returns (uint256 gasUsed)
    {
        uint256 before = gasleft();
        _verifyStatus(leaf, proof, msg.sender, nonce, credit);
        gasUsed = before - gasleft();
    }

    /// @notice The attestation and status-root typehashes (mirror tests).
    function typehashes() external pure returns (bytes32 attestation, bytes32 statusRoot) {
        return (ATTESTATION_TYPEHASH, STATUS_ROOT_TYPEHASH);
    }

    /// @notice The EIP-712 digest the Vault verifies for an attestation (mirror tests).
    function attestationDigest(Attestation calldata a) external view returns (bytes32) {
        return _attestationDigest(a);
    }

    /// @notice The EIP-712 digest the Vault verifies for a status root (mirror tests).
    function rootDigest(StatusRoot calldata r) external view returns (bytes32) {
        return _rootDigest(r);
    }

    /// @notice The Merkle leaf hash of a status leaf (mirror tests).
    function leafHash(StatusLeaf calldata leaf) external pure returns (bytes32) {
        return _leafHash(leaf);
    }
}
