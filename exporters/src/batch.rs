//! The JSON-RPC batch both exporters fall back to when Multicall3 is absent: the same
//! reads as an `aggregate3`, sent as one HTTP request holding a JSON array, and the
//! answers returned as `aggregate3` results so the callers decode one shape.

use alloy_primitives::Address;
use serde_json::{Value, json};

use crate::multicall::IMulticall3;
use crate::rpc::{RpcError, hex_encode, result_of};

/// One read of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchCall {
    /// `eth_chainId` (every batch checks the chain it ran on).
    ChainId,
    /// `eth_getBalance(address, latest)`.
    Balance(Address),
    /// `eth_call` of `target` with `data`, at `latest`.
    Call {
        /// The contract.
        target: Address,
        /// The calldata.
        data: Vec<u8>,
    },
}

impl BatchCall {
    /// Quantities (`eth_chainId`, `eth_getBalance`) come back as minimal hex numbers.
    fn is_quantity(&self) -> bool {
        matches!(self, BatchCall::ChainId | BatchCall::Balance(_))
    }
}

/// The batch body: one request object per call, with the call's index as id.
pub fn body(calls: &[BatchCall]) -> Value {
    let items: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(id, call)| {
            let (method, params) = match call {
                BatchCall::ChainId => ("eth_chainId", json!([])),
                BatchCall::Balance(address) => {
                    ("eth_getBalance", json!([address.to_string(), "latest"]))
                }
                BatchCall::Call { target, data } => (
                    "eth_call",
                    json!([{"to": target.to_string(), "data": hex_encode(data)}, "latest"]),
                ),
            };
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        })
        .collect();
    Value::Array(items)
}

/// A batch answer as `aggregate3` results, in the order of `calls` (answers may come in
/// any order): quantities become 32-byte words, error objects failed reads.
pub fn parse(calls: &[BatchCall], answer: Value) -> Result<Vec<IMulticall3::Result>, RpcError> {
    let Value::Array(items) = answer else {
        return Err(RpcError::Malformed(
            "a JSON-RPC batch must be answered with an array".into(),
        ));
    };
    let count = calls.len();
    let mut results: Vec<Option<IMulticall3::Result>> = vec![None; count];
    for item in items {
        let id = item
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| usize::try_from(id).ok())
            .filter(|id| *id < count)
            .ok_or_else(|| RpcError::Malformed(format!("batch item without a known id: {item}")))?;
        // A second answer for a read would overwrite the first, so an error could be
        // replaced by a value (found by fuzzing): the batch is malformed.
        if results[id].is_some() {
            return Err(RpcError::Malformed(format!(
                "batch item {id} answered twice"
            )));
        }
        let quantity = calls[id].is_quantity();
        let data = match result_of(item) {
            // Quantities are padded to a word; one that is not `0x` hex or does not fit
            // 256 bits is refused, never cut to a word (found by fuzzing).
            Ok(value) if quantity => Some(
                crate::rpc::quantity(&value, "batch")?
                    .to_be_bytes::<32>()
                    .to_vec(),
            ),
            // eth_call returns stay as they are ("0x" from an address without code
            // fails to decode; it is never 0).
            Ok(Value::String(text)) => Some(
                crate::rpc::hex_data(&text)
                    .ok_or_else(|| RpcError::Malformed(format!("not hex: {text:?}")))?,
            ),
            Ok(other) => return Err(RpcError::Malformed(format!("batch result {other}"))),
            Err(RpcError::Rpc { .. }) => None,
            Err(e) => return Err(e),
        };
        results[id] = Some(IMulticall3::Result {
            success: data.is_some(),
            returnData: data.unwrap_or_default().into(),
        });
    }
    results
        .into_iter()
        .enumerate()
        .map(|(id, r)| r.ok_or_else(|| RpcError::Malformed(format!("batch item {id} missing"))))
        .collect()
}

/// The batch form of `aggregate3` calls: a call to `multicall` itself becomes the
/// JSON-RPC method it stands for (`getChainId` → `eth_chainId`, `getEthBalance(a)` →
/// `eth_getBalance`), any other call an `eth_call`.
pub fn from_calls(calls: &[IMulticall3::Call3], multicall: Address) -> Vec<BatchCall> {
    use alloy_sol_types::SolCall;
    calls
        .iter()
        .map(|call| {
            let data = call.callData.as_ref();
            if call.target == multicall {
                if data == (IMulticall3::getChainIdCall {}).abi_encode().as_slice() {
                    return BatchCall::ChainId;
                }
                if let Ok(c) = IMulticall3::getEthBalanceCall::abi_decode(data) {
                    return BatchCall::Balance(c.addr);
                }
            }
            BatchCall::Call {
                target: call.target,
                data: data.to_vec(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicall;
    use alloy_primitives::U256;

    #[test]
    fn answers_in_any_order() {
        let calls = [
            BatchCall::ChainId,
            BatchCall::Balance(Address::repeat_byte(1)),
            BatchCall::Call {
                target: Address::repeat_byte(2),
                data: vec![1, 2, 3, 4],
            },
        ];
        let request = body(&calls);
        assert_eq!(request[0]["method"], "eth_chainId");
        assert_eq!(request[1]["method"], "eth_getBalance");
        assert_eq!(request[2]["method"], "eth_call");
        assert_eq!(request[2]["params"][0]["data"], "0x01020304");
        let answer = json!([
            {"jsonrpc": "2.0", "id": 2, "error": {"code": 3, "message": "execution reverted"}},
            {"jsonrpc": "2.0", "id": 0, "result": "0x82750"},
            {"jsonrpc": "2.0", "id": 1, "result": "0xde0b6b3a7640000"},
        ]);
        let results = parse(&calls, answer).expect("batch");
        assert_eq!(
            multicall::decode_u256(&results[0].returnData),
            Ok(U256::from(534_352u64))
        );
        assert_eq!(
            multicall::decode_u256(&results[1].returnData),
            Ok(U256::from(10u64).pow(U256::from(18u64)))
        );
        assert!(!results[2].success);
        assert!(matches!(
            parse(&calls, json!({"error": "x"})),
            Err(RpcError::Malformed(_))
        ));
        assert!(matches!(
            parse(&calls, json!([{"id": 0, "result": "0x1"}])),
            Err(RpcError::Malformed(_))
        ));
        // An eth_call answered "0x" (no contract) is not a zero.
        let calls = [BatchCall::Call {
            target: Address::ZERO,
            data: vec![],
        }];
        let results = parse(&calls, json!([{"id": 0, "result": "0x"}])).expect("batch");
        assert!(multicall::decode_u256(&results[0].returnData).is_err());
    }

    /// Found by fuzzing (exporters/fuzz, rpc_batch): quantities without `0x` were read
    /// as hex, and one longer than a word was cut to its first 32 bytes.
    #[test]
    fn quantities_are_0x_hex_that_fits_a_word() {
        let calls = [BatchCall::ChainId];
        let one = |result: &str| parse(&calls, json!([{"id": 0, "result": result}]));
        for bad in ["0", "10", "0x", "0x0x1", &format!("0x1{}", "0".repeat(64))] {
            assert!(matches!(one(bad), Err(RpcError::Malformed(_))), "{bad}");
        }
        let padded = format!("0x{}82750", "0".repeat(70));
        let results = one(&padded).expect("leading zeros are a number");
        assert_eq!(
            multicall::decode_u256(&results[0].returnData),
            Ok(U256::from(534_352u64))
        );
        let calls = [BatchCall::Call {
            target: Address::ZERO,
            data: vec![],
        }];
        let call = |result: &str| parse(&calls, json!([{"id": 0, "result": result}]));
        assert!(call("0x0x12").is_err());
        assert!(call("12").is_err());
        assert_eq!(call("0x12").expect("data")[0].returnData.as_ref(), [0x12]);
    }

    /// Found by fuzzing (exporters/fuzz, rpc_batch): a read answered twice, first with
    /// an error, then with a value, came out as the value.
    #[test]
    fn a_read_answered_twice_is_refused() {
        let calls = [BatchCall::Call {
            target: Address::ZERO,
            data: vec![],
        }];
        let answer = json!([
            {"jsonrpc": "2.0", "id": 0, "error": {"code": 3, "message": "execution reverted"}},
            {"jsonrpc": "2.0", "id": 0, "result": "0x01"},
        ]);
        assert!(matches!(
            parse(&calls, answer),
            Err(RpcError::Malformed(m)) if m.contains("answered twice")
        ));
    }

    #[test]
    fn multicall_reads_map_to_methods() {
        let m = Address::repeat_byte(0xca);
        let wallets = [Address::repeat_byte(1)];
        let tokens = [Address::repeat_byte(2)];
        let calls: Vec<_> = [
            multicall::Read::ChainId,
            multicall::Read::Eth { wallet: 0 },
            multicall::Read::Decimals { token: 0 },
        ]
        .into_iter()
        .map(|r| multicall::call_for(r, m, &tokens, &wallets))
        .collect();
        let batch = from_calls(&calls, m);
        assert_eq!(batch[0], BatchCall::ChainId);
        assert_eq!(batch[1], BatchCall::Balance(wallets[0]));
        assert!(matches!(batch[2], BatchCall::Call { target, .. } if target == tokens[0]));
    }
}
