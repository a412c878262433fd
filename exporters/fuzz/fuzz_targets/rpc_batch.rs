//! Arbitrary bytes as an endpoint's answer to a JSON-RPC batch (the body `RpcClient::post`
//! parses as JSON), through `batch::parse`, and each answer object through
//! `rpc::result_of` and `rpc::quantity`.
//!
//! - Nothing panics.
//! - An answer item that is an error object is never turned into a value: its read
//!   fails, or the whole batch is refused.
//! - A read that succeeds holds exactly what its answer says, checked here on its own:
//!   a quantity (`eth_chainId`, `eth_getBalance`) is a `0x` hex number that fits 256
//!   bits, as one 32-byte word; an `eth_call` result is its hex bytes.
//! - Every read is answered exactly once, or the batch is refused.

#![no_main]

use alloy_primitives::{Address, U256};
use libfuzzer_sys::fuzz_target;
use nodewatch_exporters::batch::{self, BatchCall};
use nodewatch_exporters::rpc::{self, RpcError};
use serde_json::Value;

fn calls() -> [BatchCall; 4] {
    [
        BatchCall::ChainId,
        BatchCall::Balance(Address::repeat_byte(1)),
        BatchCall::Call {
            target: Address::repeat_byte(2),
            data: vec![0x31, 0x3c, 0xe5, 0x67],
        },
        BatchCall::Balance(Address::repeat_byte(3)),
    ]
}

/// A JSON-RPC quantity as the spec writes it: `0x`, then 1 to 64 hex digits.
fn strict_quantity(text: &str) -> Option<U256> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    U256::from_str_radix(digits, 16).ok()
}

/// `0x`-prefixed hex bytes (either case), an even number of digits.
fn strict_data(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x")?.as_bytes();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

fn is_error_object(item: &Value) -> bool {
    item.get("error").is_some_and(|e| !e.is_null())
}

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = serde_json::from_slice::<Value>(data) else {
        return; // RpcClient::post refuses what is not JSON.
    };

    // One answer object, as for single calls.
    match rpc::result_of(answer.clone()) {
        Ok(result) => {
            assert!(!is_error_object(&answer), "an error object gave a result");
            assert_eq!(answer.get("result"), Some(&result));
            if let Ok(value) = rpc::quantity(&result, "fuzz") {
                let text = result.as_str().expect("a quantity is a string");
                assert_eq!(strict_quantity(text), Some(value), "quantity {text:?}");
            }
        }
        Err(RpcError::Rpc { .. }) => assert!(is_error_object(&answer)),
        Err(RpcError::Malformed(_)) => {}
        Err(other) => panic!("result_of gave {other:?}"),
    }

    let calls = calls();
    let Ok(results) = batch::parse(&calls, answer.clone()) else {
        return;
    };
    assert_eq!(results.len(), calls.len());
    let items = answer.as_array().expect("a batch answer is an array");
    for (id, (call, result)) in calls.iter().zip(&results).enumerate() {
        let answers: Vec<&Value> = items
            .iter()
            .filter(|item| item.get("id").and_then(Value::as_u64) == Some(id as u64))
            .collect();
        let [item] = answers.as_slice() else {
            panic!("read {id} answered {} times, yet accepted", answers.len());
        };
        if is_error_object(item) {
            assert!(!result.success, "read {id}: an error became a value");
            continue;
        }
        assert!(result.success, "read {id}: a result became a failure");
        let text = item["result"]
            .as_str()
            .expect("an accepted result is a string");
        let got = result.returnData.as_ref();
        match call {
            BatchCall::ChainId | BatchCall::Balance(_) => {
                let value = strict_quantity(text)
                    .unwrap_or_else(|| panic!("read {id}: quantity {text:?} accepted"));
                assert_eq!(
                    got,
                    value.to_be_bytes::<32>().as_slice(),
                    "read {id}: {text:?}"
                );
            }
            BatchCall::Call { .. } => {
                let bytes = strict_data(text)
                    .unwrap_or_else(|| panic!("read {id}: data {text:?} accepted"));
                assert_eq!(got, bytes.as_slice(), "read {id}: {text:?}");
            }
        }
    }
});
