// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The parts of Multicall3 (https://github.com/mds1/multicall) the wallet exporter uses,
/// with the same ABI, so the tests can place it at Multicall3's canonical address
/// (0xcA11bde05977b3631167028862bE2a173976CA11) with `anvil_setCode`.
contract Multicall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// Runs every call; a failing call reverts the whole batch unless it allows failure.
    function aggregate3(Call3[] calldata calls) public payable returns (Result[] memory returnData) {
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i = 0; i < length; i++) {
            Result memory result = returnData[i];
            Call3 calldata call = calls[i];
            (result.success, result.returnData) = call.target.call(call.callData);
            require(call.allowFailure || result.success, "Multicall3: call failed");
        }
    }

    function getEthBalance(address addr) public view returns (uint256 balance) {
        balance = addr.balance;
    }

    function getChainId() public view returns (uint256 chainid) {
        chainid = block.chainid;
    }
}
