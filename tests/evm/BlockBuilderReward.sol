// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// A test stand-in for INTMAX's BlockBuilderReward with the view functions of its
/// interface (design §3): getClaimableReward, getReward, batchClaimReward. Claimable
/// amounts and the current period are set by the test.
contract BlockBuilderReward {
    error PeriodNotEnded();

    uint256 public currentPeriod;
    mapping(uint256 => mapping(address => uint256)) private claimable;
    mapping(uint256 => uint256) private totals;

    function setCurrentPeriod(uint256 period) external {
        currentPeriod = period;
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
        for (uint256 i = 0; i < periodNumbers.length; i++) {
            if (periodNumbers[i] >= currentPeriod) revert PeriodNotEnded();
            claimable[periodNumbers[i]][msg.sender] = 0;
        }
    }
}
