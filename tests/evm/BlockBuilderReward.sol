// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// A test stand-in for INTMAX's BlockBuilderReward with the view functions of its
/// interface (design §3): getClaimableReward, getReward, batchClaimReward. Claimable
/// amounts, the current period and the reward token are set by the test; a claim
/// transfers the claimed amount of the token (which the contract must hold) to the
/// sender, as the real contract pays out sITX.
interface IERC20Transfer {
    function transfer(address to, uint256 value) external returns (bool);
}

contract BlockBuilderReward {
    error PeriodNotEnded();
    error TransferFailed();

    uint256 public currentPeriod;
    address public token;
    mapping(uint256 => mapping(address => uint256)) private claimable;
    mapping(uint256 => uint256) private totals;

    function setCurrentPeriod(uint256 period) external {
        currentPeriod = period;
    }

    function setToken(address _token) external {
        token = _token;
    }

    function setClaimable(uint256 period, address user, uint256 amount) external {
        totals[period] = totals[period] - claimable[period][user] + amount;
        claimable[period][user] = amount;
    }

    function getClaimableReward(uint256 periodNumber, address user) external view returns (uint256) {
        if (periodNumber >= currentPeriod) revert PeriodNotEnded();
        return claimable[periodNumber][user];
    }

    function getReward(uint256 periodNumber) external view returns (bool, uint256) {
        return (periodNumber < currentPeriod, totals[periodNumber]);
    }

    function batchClaimReward(uint256[] calldata periodNumbers) external {
        uint256 amount = 0;
        for (uint256 i = 0; i < periodNumbers.length; i++) {
            if (periodNumbers[i] >= currentPeriod) revert PeriodNotEnded();
            amount += claimable[periodNumbers[i]][msg.sender];
            claimable[periodNumbers[i]][msg.sender] = 0;
        }
        if (amount > 0 && token != address(0)) {
            if (!IERC20Transfer(token).transfer(msg.sender, amount)) revert TransferFailed();
        }
    }
}
