// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Governed} from "./governance/Governed.sol";
import {IVault} from "./interfaces/IVault.sol";
import {Attestation, MarginProof} from "./libraries/Types.sol";

/// @title InsuranceFund
/// @notice The insurance fund is this contract's account in the Vault: its cash balance is the fund.
/// It is fed by the liquidation fee and the `fundFeeShare` of trading fees (both credited by the Vault
/// and the Liquidator, with events), and by anyone's quote deposits to this address. Only the
/// Liquidator draws on it (`Liquidator.Bid` records every draw); the owner may withdraw only what
/// exceeds `floor`.
contract InsuranceFund is Governed {
    error InsuranceFund_BelowFloor(int256 balance, uint256 amount, uint256 floor);

    event FloorSet(uint256 floor);
    event FundWithdrawn(uint256 amount, address to);

    IVault public immutable vault;
    uint256 public floor;

    constructor(address owner_, IVault vault_, uint256 floor_) Ownable(owner_) {
        vault = vault_;
        floor = floor_;
        emit FloorSet(floor_);
    }

    /// @notice The fund's balance (quote units): its cash in the Vault.
    function balance() external view returns (int256) {
        return vault.cashOf(address(this));
    }

    /// @notice Raises the floor below which the owner may not withdraw (it never falls).
    function raiseFloor(uint256 floor_) external onlyOwner {
        if (floor_ > floor) floor = floor_;
        emit FloorSet(floor);
    }

    /// @notice Withdraws fund surplus above the floor to `to`. Owner only.
    function withdraw(uint256 amount, address to) external onlyOwner {
        int256 bal = vault.cashOf(address(this));
        if (bal < int256(floor + amount)) revert InsuranceFund_BelowFloor(bal, amount, floor);
        MarginProof memory none = MarginProof(Attestation(address(0), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "");
        vault.withdraw(vault.quote(), amount, to, none);
        emit FundWithdrawn(amount, to);
    }
}
