// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";

/// @title Governed: two-step ownership that can never be renounced.
/// @notice Every admin power of the protocol sits behind `onlyOwner`, and the deployment hands every
/// owner role to a TimelockController (docs/governance.md). Renouncing would freeze the parameters
/// for ever (no signer rotation, no tightening after an incident), so it is disabled.
abstract contract Governed is Ownable2Step {
    /// @notice `renounceOwnership` is disabled on every protocol contract.
    error Governed_RenounceDisabled();

    /// @notice Always reverts with Governed_RenounceDisabled: ownership moves only by
    /// transferOwnership + acceptOwnership.
    function renounceOwnership() public pure virtual override {
        revert Governed_RenounceDisabled();
    }
}
