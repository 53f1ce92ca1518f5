// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Governed} from "./Governed.sol";

/// @title Guarded: a Governed contract with a guardian that may only tighten, at once.
/// @notice The owner (the timelock) sets the guardian, never to zero. The deriving contract gives
/// the guardian functions that can only make the protocol stricter (documented per field in
/// docs/governance.md); anything that loosens goes through the owner, i.e. the timelock's delay.
abstract contract Guarded is Governed {
    /// @notice The guardian may not be the zero address.
    error Guarded_ZeroGuardian();
    /// @notice The caller is not the guardian.
    error Guarded_OnlyGuardian(address caller);
    /// @notice The guardian's change would loosen `field` (only tightening is instant).
    error Guarded_Loosens(string field);

    event GuardianSet(address guardian);

    // ---------------------------------------------------------------- storage
    address public guardian;

    // ---------------------------------------------------------------- constructor
    constructor(address guardian_) {
        _setGuardian(guardian_);
    }

    // ---------------------------------------------------------------- modifiers
    modifier onlyGuardian() {
        if (msg.sender != guardian) revert Guarded_OnlyGuardian(msg.sender);
        _;
    }

    // ---------------------------------------------------------------- admin
    /// @notice Sets the guardian (never zero). Owner only.
    function setGuardian(address guardian_) external onlyOwner {
        _setGuardian(guardian_);
    }

    function _setGuardian(address guardian_) internal {
        if (guardian_ == address(0)) revert Guarded_ZeroGuardian();
        guardian = guardian_;
        emit GuardianSet(guardian_);
    }

    // ---------------------------------------------------------------- internal
    /// @dev Reverts with Guarded_Loosens(field) unless `next` is no looser than `current`: not above
    /// it when lower is tighter (`upIsTighter` false), not below it otherwise.
    function _noLooser(uint256 current, uint256 next, bool upIsTighter, string memory field) internal pure {
        if (upIsTighter ? next < current : next > current) revert Guarded_Loosens(field);
    }

    /// @dev Reverts with Guarded_Loosens(field) unless `next` equals `current` (a field the guardian
    /// may not change: neither direction is "tighter").
    function _unchanged(uint256 current, uint256 next, string memory field) internal pure {
        if (next != current) revert Guarded_Loosens(field);
    }
}
