// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Hashes of the actions an attestation can authorise.
/// @dev The engine computes the same hashes (offchain/chain/actions.py) for the state after the action.
library ActionHash {
    bytes32 internal constant TRADE_TAG = keccak256("pmsim.action.trade");
    bytes32 internal constant WITHDRAW_TAG = keccak256("pmsim.action.withdraw");
    bytes32 internal constant BID_TAG = keccak256("pmsim.action.bid");

    /// @param sizeDelta the signed change of the account's position (+ buys, - sells)
    /// @param reducesIM the engine judged that the fill lowers the account's portfolio initial margin
    /// (its IM after < before, F-7): the Vault then asks only maintenance margin and allows it while
    /// paused or frozen; false asks initial margin
    function trade(address account, uint32 instrument, int256 sizeDelta, uint256 price, uint256 fee, bool reducesIM)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(TRADE_TAG, account, instrument, sizeDelta, price, fee, reducesIM));
    }

    function withdraw(address account, address token, uint256 amount) internal pure returns (bytes32) {
        return keccak256(abi.encode(WITHDRAW_TAG, account, token, amount));
    }

    /// @param bidder the account taking the fraction
    /// @param account the liquidated account
    /// @param version the auction's version (bids and refreshes so far) the bid expects
    /// @param fractionWad the share of the remaining portfolio taken
    /// @param worstPrice the most the bidder pays (negative: the least it is paid)
    function bid(address bidder, address account, uint256 version, uint256 fractionWad, int256 worstPrice)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(BID_TAG, bidder, account, version, fractionWad, worstPrice));
    }
}
