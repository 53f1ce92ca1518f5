// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ISignerQuorum} from "./interfaces/ISignerQuorum.sol";
import {Constants} from "./libraries/Constants.sol";
import {Governed} from "./governance/Governed.sol";

/// @title SignerQuorum
/// @notice k-of-n signer registry and a cheap verifier for concatenated 65-byte signatures.
abstract contract SignerQuorum is ISignerQuorum, Governed {
    // ---------------------------------------------------------------- storage
    mapping(address => bool) public isSigner;
    /// @dev The registered signers in no particular order (removal swaps in the last); at most
    /// MAX_SIGNERS. Declared before the two bytes below so that their packing is unchanged.
    address[] internal _signers;
    /// @dev Two bytes, so that a derived contract can pack its hot configuration into the same slot.
    uint8 internal _signerCount;
    uint8 internal _quorum;

    // ---------------------------------------------------------------- admin
    /// @inheritdoc ISignerQuorum
    function addSigner(address signer) external onlyOwner {
        if (signer == address(0)) revert SignerQuorum_ZeroAddress();
        if (isSigner[signer]) revert SignerQuorum_AlreadySigner(signer);
        if (_signerCount >= Constants.MAX_SIGNERS) revert SignerQuorum_TooManySigners();
        isSigner[signer] = true;
        _signers.push(signer);
        _signerCount += 1;
        emit SignerAdded(signer);
    }

    /// @inheritdoc ISignerQuorum
    function removeSigner(address signer) external onlyOwner {
        if (!isSigner[signer]) revert SignerQuorum_NotSigner(signer);
        if (_signerCount - 1 < _quorum) revert SignerQuorum_BadQuorum(_quorum, _signerCount - 1);
        isSigner[signer] = false;
        // Swap-and-pop; bounded by MAX_SIGNERS, and `signer` is in the list since isSigner[signer].
        uint256 last = _signers.length - 1;
        for (uint256 i; i < last; ++i) {
            if (_signers[i] == signer) {
                _signers[i] = _signers[last];
                break;
            }
        }
        _signers.pop();
        _signerCount -= 1;
        emit SignerRemoved(signer);
        _onSignerSetChanged();
    }

    /// @inheritdoc ISignerQuorum
    function setQuorum(uint256 quorum_) external onlyOwner {
        if (quorum_ == 0 || quorum_ > _signerCount) revert SignerQuorum_BadQuorum(quorum_, _signerCount);
        bool lowered = quorum_ < _quorum;
        _quorum = uint8(quorum_); // Safe cast: quorum_ <= _signerCount <= MAX_SIGNERS
        emit QuorumSet(quorum_);
        if (lowered) _onSignerSetChanged();
    }

    // ---------------------------------------------------------------- views
    /// @inheritdoc ISignerQuorum
    function signerCount() external view returns (uint256) {
        return _signerCount;
    }

    /// @inheritdoc ISignerQuorum
    function signers() external view returns (address[] memory) {
        return _signers;
    }

    /// @inheritdoc ISignerQuorum
    function quorum() external view returns (uint256) {
        return _quorum;
    }

    // ---------------------------------------------------------------- internal
    /// @dev Called after a signer is removed or the quorum lowered: results co-signed under the old
    /// set must stop verifying (the RiskOracle clears its status root). No-op by default.
    function _onSignerSetChanged() internal virtual {}

    /// @dev Verifies that `sigs` holds at least `required` signatures of `digest` by distinct registered
    /// signers in strictly increasing order. Returns the number of signatures.
    function _verifyQuorum(bytes32 digest, bytes calldata sigs, uint256 required) internal view returns (uint256 n) {
        if (sigs.length % 65 != 0) revert SignerQuorum_BadSignatureLength(sigs.length);
        n = sigs.length / 65;
        if (n < required || required == 0) revert SignerQuorum_TooFewSigners(n, required);
        address previous;
        for (uint256 i; i < n; ++i) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly ("memory-safe") {
                let p := add(sigs.offset, mul(i, 65))
                r := calldataload(p)
                s := calldataload(add(p, 32))
                v := byte(0, calldataload(add(p, 64)))
            }
            address signer = ECDSA.recover(digest, v, r, s);
            if (signer <= previous) revert SignerQuorum_DuplicateSigner(signer);
            if (!isSigner[signer]) revert SignerQuorum_UnknownSigner(signer);
            previous = signer;
        }
    }
}
