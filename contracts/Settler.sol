// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IVault} from "./interfaces/IVault.sol";

/// @title Settler: expiry settlement of many holders in bounded batches.
/// @notice Anyone may settle any holder of an expired future or option (`Vault.settleExpired`); this
/// contract does it for a list of accounts in one transaction, skipping those with no position, so that
/// every holder of an expiry can be settled in a few transactions whatever their number. The list comes
/// from the Vault's events (the indexer's holders of the instrument); at most MAX_BATCH per call.
contract Settler {
    error Settler_BatchTooLarge(uint256 given, uint256 max);

    event BatchSettled(uint32 indexed instrument, uint256 settled, uint256 skipped);

    uint256 public constant MAX_BATCH = 200;
    IVault public immutable vault;

    constructor(IVault vault_) {
        vault = vault_;
    }

    /// @notice Settles `instrument` for every account of `accounts` that holds it.
    /// @param instrument an expired future or option whose settlement price is fixed
    /// @param accounts at most MAX_BATCH accounts; accounts without a position are skipped
    /// @return settled the number of positions settled
    function settleExpired(uint32 instrument, address[] calldata accounts) external returns (uint256 settled) {
        if (accounts.length > MAX_BATCH) revert Settler_BatchTooLarge(accounts.length, MAX_BATCH);
        for (uint256 i; i < accounts.length; ++i) {
            (int256 size,,) = vault.positionOf(accounts[i], instrument);
            if (size == 0) continue;
            vault.settleExpired(accounts[i], instrument);
            ++settled;
        }
        emit BatchSettled(instrument, settled, accounts.length - settled);
    }
}
