// Compiles the test contracts with solc-js for the `paris` EVM (portable bytecode) and
// writes artifacts/<Name>.json = {abi, bytecode, deployedBytecode, methods}. The artifacts
// are committed, so the tests need no compiler.
//   cd tests/evm && npm ci && node compile.cjs
const solc = require('solc');
const fs = require('fs');
const path = require('path');
const contracts = [['Token.sol', 'Token'], ['Multicall3.sol', 'Multicall3'], ['BlockBuilderReward.sol', 'BlockBuilderReward']];
const sources = {};
for (const [file] of contracts) sources[file] = { content: fs.readFileSync(path.join(__dirname, file), 'utf8') };
const input = {
  language: 'Solidity', sources,
  settings: {
    optimizer: { enabled: true, runs: 200 }, evmVersion: 'paris',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'evm.methodIdentifiers'] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
let failed = false;
for (const e of out.errors || []) { console.error(e.formattedMessage); if (e.severity === 'error') failed = true; }
if (failed) process.exit(1);
fs.mkdirSync(path.join(__dirname, 'artifacts'), { recursive: true });
for (const [file, name] of contracts) {
  const c = out.contracts[file][name];
  const artifact = {
    compiler: `solc ${solc.version()}`, evmVersion: 'paris', methods: c.evm.methodIdentifiers, abi: c.abi,
    bytecode: '0x' + c.evm.bytecode.object, deployedBytecode: '0x' + c.evm.deployedBytecode.object,
  };
  fs.writeFileSync(path.join(__dirname, 'artifacts', `${name}.json`), JSON.stringify(artifact, null, 1) + '\n');
  console.error(`${name}: ${c.evm.deployedBytecode.object.length / 2} bytes runtime`);
}
