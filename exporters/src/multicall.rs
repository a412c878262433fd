//! ABI of Multicall3 (`aggregate3`, `getEthBalance`, `getChainId`) and ERC-20
//! (`balanceOf`, `decimals`, `symbol`), and the exact decimal conversion of balances.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, sol};

sol! {
    /// Multicall3 (https://github.com/mds1/multicall), the functions we call.
    interface IMulticall3 {
        struct Call3 {
            address target;
            bool allowFailure;
            bytes callData;
        }
        struct Result {
            bool success;
            bytes returnData;
        }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
        function getEthBalance(address addr) external view returns (uint256 balance);
        function getChainId() external view returns (uint256 chainid);
    }

    /// The ERC-20 functions we read.
    interface IERC20 {
        function balanceOf(address owner) external view returns (uint256);
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
    }
}

/// One read inside an `aggregate3` batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Multicall3's `getChainId()`: every batch checks the chain it ran on.
    ChainId,
    /// `getEthBalance(wallet)`.
    Eth {
        /// Index into the wallets.
        wallet: usize,
    },
    /// `token.balanceOf(wallet)`.
    TokenBalance {
        /// Index into the tokens.
        token: usize,
        /// Index into the wallets.
        wallet: usize,
    },
    /// `token.decimals()`.
    Decimals {
        /// Index into the tokens.
        token: usize,
    },
    /// `token.symbol()`.
    Symbol {
        /// Index into the tokens.
        token: usize,
    },
}

/// The calldata of one read.
pub fn call_for(
    read: Read,
    multicall: Address,
    tokens: &[Address],
    wallets: &[Address],
) -> IMulticall3::Call3 {
    let (target, data) = match read {
        Read::ChainId => (multicall, IMulticall3::getChainIdCall {}.abi_encode()),
        Read::Eth { wallet } => (
            multicall,
            IMulticall3::getEthBalanceCall {
                addr: wallets[wallet],
            }
            .abi_encode(),
        ),
        Read::TokenBalance { token, wallet } => (
            tokens[token],
            IERC20::balanceOfCall {
                owner: wallets[wallet],
            }
            .abi_encode(),
        ),
        Read::Decimals { token } => (tokens[token], IERC20::decimalsCall {}.abi_encode()),
        Read::Symbol { token } => (tokens[token], IERC20::symbolCall {}.abi_encode()),
    };
    IMulticall3::Call3 {
        target,
        allowFailure: true,
        callData: Bytes::from(data),
    }
}

/// The calldata of `aggregate3(calls)`.
pub fn encode_aggregate3(calls: Vec<IMulticall3::Call3>) -> Vec<u8> {
    IMulticall3::aggregate3Call { calls }.abi_encode()
}

/// Decodes `aggregate3`'s return data.
pub fn decode_aggregate3(data: &[u8]) -> Result<Vec<IMulticall3::Result>, String> {
    if data.is_empty() {
        // eth_call on an address without code returns nothing.
        return Err("empty return data: is Multicall3 deployed at the configured address?".into());
    }
    IMulticall3::aggregate3Call::abi_decode_returns(data).map_err(|e| e.to_string())
}

/// A decoded `uint256` return (balances, chain id).
pub fn decode_u256(data: &[u8]) -> Result<U256, String> {
    IMulticall3::getEthBalanceCall::abi_decode_returns(data).map_err(|e| e.to_string())
}

/// A decoded `decimals()` return.
pub fn decode_decimals(data: &[u8]) -> Result<u8, String> {
    IERC20::decimalsCall::abi_decode_returns(data).map_err(|e| e.to_string())
}

/// A decoded `symbol()` return: a string, or the `bytes32` some old tokens return.
pub fn decode_symbol(data: &[u8]) -> Result<String, String> {
    if let Ok(symbol) = IERC20::symbolCall::abi_decode_returns(data) {
        return Ok(symbol);
    }
    if data.len() == 32 {
        let end = data.iter().position(|&b| b == 0).unwrap_or(32);
        if let Ok(symbol) = std::str::from_utf8(&data[..end]) {
            return Ok(symbol.to_string());
        }
    }
    Err(format!(
        "symbol() returned {} undecodable bytes",
        data.len()
    ))
}

/// `value / 10^decimals` as the nearest f64, through the exact decimal string (so
/// 1.5 ETH is exactly 1.5, not the product of two rounded floats).
pub fn to_units(value: U256, decimals: u8) -> f64 {
    let digits = value.to_string();
    let decimals = usize::from(decimals);
    let text = if digits.len() > decimals {
        let (int, frac) = digits.split_at(digits.len() - decimals);
        format!("{int}.{frac}")
    } else {
        format!("0.{}{digits}", "0".repeat(decimals - digits.len()))
    };
    // The string is digits and one dot: parsing cannot fail.
    text.parse().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolValue;

    #[test]
    fn units_are_exact() {
        let wei = U256::from(1_500_000_000_000_000_000u128);
        assert_eq!(to_units(wei, 18), 1.5);
        assert_eq!(to_units(U256::from(1234567u64), 6), 1.234567);
        assert_eq!(to_units(U256::from(5u64), 18), 5e-18);
        assert_eq!(to_units(U256::ZERO, 18), 0.0);
        assert_eq!(to_units(U256::from(42u64), 0), 42.0);
    }

    #[test]
    fn aggregate3_round_trip() {
        let multicall: Address = "0xcA11bde05977b3631167028862bE2a173976CA11"
            .parse()
            .expect("addr");
        let wallets = [Address::repeat_byte(0x11)];
        let tokens = [Address::repeat_byte(0x22)];
        let data = encode_aggregate3(vec![
            call_for(Read::Eth { wallet: 0 }, multicall, &tokens, &wallets),
            call_for(
                Read::TokenBalance {
                    token: 0,
                    wallet: 0,
                },
                multicall,
                &tokens,
                &wallets,
            ),
        ]);
        // aggregate3((address,bool,bytes)[]) selector, as solc reports it.
        assert_eq!(&data[..4], &[0x82, 0xad, 0x56, 0xcb]);
        let results = vec![
            IMulticall3::Result {
                success: true,
                returnData: Bytes::from(U256::from(7u64).abi_encode()),
            },
            IMulticall3::Result {
                success: false,
                returnData: Bytes::new(),
            },
        ];
        let encoded = results.abi_encode();
        let decoded = decode_aggregate3(&encoded).expect("decode");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decode_u256(&decoded[0].returnData), Ok(U256::from(7u64)));
        assert!(!decoded[1].success);
        assert!(decode_aggregate3(&[]).is_err());
        assert!(decode_aggregate3(&[1, 2, 3]).is_err());
    }

    #[test]
    fn symbols_as_string_or_bytes32() {
        assert_eq!(
            decode_symbol(&"sITX".to_string().abi_encode()),
            Ok("sITX".into())
        );
        let mut raw = [0u8; 32];
        raw[..3].copy_from_slice(b"MKR");
        assert_eq!(decode_symbol(&raw), Ok("MKR".into()));
        assert!(decode_symbol(&[1, 2]).is_err());
    }
}
