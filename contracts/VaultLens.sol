// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IVault} from "./interfaces/IVault.sol";
import {IRiskParams, Collateral} from "./interfaces/IRiskParams.sol";
import {AccountView, PositionView} from "./libraries/Types.sol";

/// @title VaultLens: an account's whole state in one call.
/// @notice Read-only, composed from the Vault's small getters, so that the Vault keeps its code-size
/// headroom. Cash is net of any socialised loss not yet charged (as `IVault.cashOf`).
contract VaultLens {
    IVault public immutable vault;
    IRiskParams public immutable riskParams;

    constructor(IVault vault_, IRiskParams riskParams_) {
        (vault, riskParams) = (vault_, riskParams_);
    }

    /// @notice Cash, risk nonce, deposit credit, every listed collateral's balance (in listing order) and
    /// every open position of `account`.
    function getAccount(address account) external view returns (AccountView memory v) {
        v.cash = vault.cashOf(account);
        v.riskNonce = vault.riskNonce(account);
        v.depositCredit = vault.depositCredit(account);
        Collateral[] memory cs = riskParams.collaterals();
        v.collateralTokens = new address[](cs.length);
        v.collateralBalances = new uint256[](cs.length);
        for (uint256 i; i < cs.length; ++i) {
            v.collateralTokens[i] = cs[i].token;
            v.collateralBalances[i] = vault.collateralOf(account, cs[i].token);
        }
        uint32[] memory ids = vault.positionIds(account);
        v.positions = new PositionView[](ids.length);
        for (uint256 i; i < ids.length; ++i) {
            (int256 size, int256 cost, int256 snapshot) = vault.positionOf(account, ids[i]);
            v.positions[i] = PositionView(ids[i], size, cost, snapshot);
        }
    }
}
