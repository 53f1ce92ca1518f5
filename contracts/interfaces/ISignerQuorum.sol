// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title A k-of-n set of registered signers.
interface ISignerQuorum {
    error SignerQuorum_ZeroAddress();
    error SignerQuorum_AlreadySigner(address signer);
    error SignerQuorum_NotSigner(address signer);
    error SignerQuorum_TooManySigners();
    error SignerQuorum_BadQuorum(uint256 quorum, uint256 signerCount);
    /// @notice Fewer valid signatures than required.
    error SignerQuorum_TooFewSigners(uint256 given, uint256 required);
    /// @notice A recovered signer is not registered (wrong key, wrong domain, chain or contract).
    error SignerQuorum_UnknownSigner(address recovered);
    /// @notice Signers must be strictly increasing: a repeat or disorder is refused.
    error SignerQuorum_DuplicateSigner(address recovered);
    error SignerQuorum_BadSignatureLength(uint256 length);

    event SignerAdded(address indexed signer);
    event SignerRemoved(address indexed signer);
    event QuorumSet(uint256 quorum);

    /// @notice Registers a signer. Owner only.
    function addSigner(address signer) external;

    /// @notice Removes a signer; the quorum must stay reachable. Owner only. Clears any status root
    /// (RiskOracle), which the removed signer may have co-signed; so does lowering the quorum.
    function removeSigner(address signer) external;

    /// @notice Sets k, with 1 <= k <= number of signers. Owner only.
    function setQuorum(uint256 quorum) external;

    function isSigner(address signer) external view returns (bool);
    function signerCount() external view returns (uint256);
    /// @notice The registered signers, in no particular order (a removal moves the last one into the
    /// freed place). Its length is `signerCount()`, at most `Constants.MAX_SIGNERS`.
    /// @return The signer addresses.
    function signers() external view returns (address[] memory);
    function quorum() external view returns (uint256);
}
