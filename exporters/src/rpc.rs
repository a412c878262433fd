//! A minimal blocking JSON-RPC client over HTTP(S) (ureq, rustls), with errors sorted
//! into the kinds the exporters export (`nodewatch_wallet_errors_total{kind}`).
//!
//! Blocking on purpose: a refresh is one request every few minutes, run on tokio's
//! blocking pool, and a small client keeps the binary and its build small.

use std::time::Duration;

use alloy_primitives::U256;
use serde_json::{Value, json};

/// Why a JSON-RPC request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// No answer within the timeout.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// Connection refused, DNS, TLS, reset…
    #[error("transport: {0}")]
    Transport(String),
    /// HTTP 429; `retry_after` from its `Retry-After` header (seconds or HTTP-date).
    #[error("rate limited (HTTP 429), retry after {retry_after:?}")]
    RateLimited {
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Any other non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is not the JSON-RPC answer we asked for.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// A JSON-RPC error object (including reverted `eth_call`s).
    #[error("JSON-RPC error {code}: {message}")]
    Rpc {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The endpoint is on another chain.
    #[error("wrong chain: expected chain id {expected}, the endpoint is on {actual}")]
    WrongChain {
        /// From the settings.
        expected: u64,
        /// What the endpoint said.
        actual: u64,
    },
    /// The result could not be ABI-decoded (e.g. no contract at the Multicall3 address).
    #[error("cannot decode the result: {0}")]
    Decode(String),
}

impl RpcError {
    /// The `kind` label of `nodewatch_wallet_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Timeout(_) => "timeout",
            RpcError::Transport(_) => "transport",
            RpcError::RateLimited { .. } => "rate_limited",
            RpcError::Status(_) => "http_status",
            RpcError::Malformed(_) => "malformed",
            RpcError::Rpc { .. } => "rpc_error",
            RpcError::WrongChain { .. } => "wrong_chain",
            RpcError::Decode(_) => "decode",
        }
    }
}

/// Every `kind` label value, so the error counters exist from the start at 0.
pub const ERROR_KINDS: &[&str] = &[
    "timeout",
    "transport",
    "rate_limited",
    "http_status",
    "malformed",
    "rpc_error",
    "wrong_chain",
    "decode",
    "reverted",
];

/// `scheme://host[:port]` of a URL: RPC URLs often carry an API key in their path or
/// query, so only this form is logged or shown.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("");
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

/// A JSON-RPC client with one timeout for every request.
#[derive(Debug, Clone)]
pub struct RpcClient {
    agent: ureq::Agent,
    timeout: Duration,
}

impl RpcClient {
    /// A client whose requests time out after `timeout` (connect to last byte).
    pub fn new(timeout: Duration) -> RpcClient {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("nodewatch-exporters/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        RpcClient { agent, timeout }
    }

    /// Posts `body` (one request object or a batch array) and returns the parsed JSON.
    pub fn post(&self, url: &str, body: &Value) -> Result<Value, RpcError> {
        let response = self
            .agent
            .post(url)
            .header("content-type", "application/json")
            .send(body.to_string());
        let mut response = match response {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Err(RpcError::Timeout(self.timeout)),
            Err(e) => return Err(RpcError::Transport(e.to_string())),
        };
        let status = response.status().as_u16();
        if status == 429 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            return Err(RpcError::RateLimited { retry_after });
        }
        if !(200..300).contains(&status) {
            return Err(RpcError::Status(status));
        }
        let text = match response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
        {
            Ok(t) => t,
            Err(ureq::Error::Timeout(_)) => return Err(RpcError::Timeout(self.timeout)),
            Err(e) => return Err(RpcError::Transport(e.to_string())),
        };
        serde_json::from_str(&text).map_err(|e| RpcError::Malformed(format!("not JSON: {e}")))
    }

    /// One call; returns its `result`.
    pub fn call(&self, url: &str, method: &str, params: Value) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        result_of(self.post(url, &body)?)
    }

    /// One call whose result is a quantity that fits `T`.
    pub fn call_quantity<T: TryFrom<U256>>(
        &self,
        url: &str,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let value = quantity(&self.call(url, method, params)?, method)?;
        T::try_from(value)
            .map_err(|_| RpcError::Malformed(format!("{method} result {value} is out of range")))
    }

    /// `eth_chainId`.
    pub fn chain_id(&self, url: &str) -> Result<u64, RpcError> {
        self.call_quantity(url, "eth_chainId", json!([]))
    }

    /// `eth_blockNumber`.
    pub fn block_number(&self, url: &str) -> Result<u64, RpcError> {
        self.call_quantity(url, "eth_blockNumber", json!([]))
    }

    /// `eth_call` at `latest`; returns the return data.
    pub fn eth_call(&self, url: &str, to: &str, data: &[u8]) -> Result<Vec<u8>, RpcError> {
        let result = self.call(
            url,
            "eth_call",
            json!([{"to": to, "data": hex_encode(data)}, "latest"]),
        )?;
        let text = result
            .as_str()
            .ok_or_else(|| RpcError::Malformed(format!("eth_call result {result}")))?;
        hex_data(text).ok_or_else(|| RpcError::Malformed("eth_call result is not hex".into()))
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date turned into
/// the time left from `now` (zero if it is past). `None` if it is neither.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `result` of a JSON-RPC response object, or its error.
pub fn result_of(mut response: Value) -> Result<Value, RpcError> {
    if !response.is_object() {
        return Err(RpcError::Malformed(format!(
            "expected a JSON-RPC response object, got {}",
            short(&response)
        )));
    }
    if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
        return Err(RpcError::Rpc {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    match response.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(RpcError::Malformed(format!(
            "no result in {}",
            short(&response)
        ))),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// A JSON-RPC quantity (a `"0x…"` hex string) as a number; `what` names it in the error.
/// Without `0x`, without digits, or beyond 256 bits it is refused (a bare `10` read as
/// hex would be a wrong value).
pub fn quantity(value: &Value, what: &str) -> Result<U256, RpcError> {
    value
        .as_str()
        .and_then(|t| t.strip_prefix("0x"))
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|digits| U256::from_str_radix(digits, 16).ok())
        .ok_or_else(|| RpcError::Malformed(format!("{what} result {value}")))
}

/// JSON-RPC data (`"0x…"`, an even number of hex digits) as bytes; `None` otherwise.
pub fn hex_data(text: &str) -> Option<Vec<u8>> {
    if text.starts_with("0x") {
        hex_decode(text)
    } else {
        None
    }
}

/// `0x`-prefixed lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("0x");
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Decodes `0x…` hex (either case); `None` if it is not hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x").unwrap_or(text).as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_keeps_only_scheme_and_host() {
        assert_eq!(
            redact("https://user:pw@scroll-mainnet.g.alchemy.com/v2/SECRET?x=1"),
            "https://scroll-mainnet.g.alchemy.com"
        );
        assert_eq!(redact("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        // 2015-10-21 07:28:00 UTC is `now`; 07:30:00 is 120 s later.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    /// Found by fuzzing (exporters/fuzz, rpc_batch): `"10"` and `"0x0x1"` were read
    /// as hex quantities.
    #[test]
    fn quantities_need_0x_and_digits() {
        assert_eq!(quantity(&json!("0x82750"), "q"), Ok(U256::from(534_352u64)));
        assert_eq!(quantity(&json!("0x00ff"), "q"), Ok(U256::from(255u64)));
        for bad in ["10", "0x", "0x0x1", "0x+1", "0x 1"] {
            assert!(
                matches!(quantity(&json!(bad), "q"), Err(RpcError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(hex_data("0x0102"), Some(vec![1, 2]));
        assert_eq!(hex_data("0102"), None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_encode(&[0, 0xab, 0x10]), "0x00ab10");
        assert_eq!(hex_decode("0x00AB10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(hex_decode("0x"), Some(vec![]));
        assert_eq!(hex_decode("0x0"), None);
        assert_eq!(hex_decode("0xzz"), None);
    }

    #[test]
    fn responses_are_checked() {
        assert_eq!(
            result_of(json!({"jsonrpc":"2.0","id":1,"result":"0x1"})),
            Ok(json!("0x1"))
        );
        assert!(matches!(
            result_of(
                json!({"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted"}})
            ),
            Err(RpcError::Rpc { code: 3, .. })
        ));
        assert!(matches!(result_of(json!([1])), Err(RpcError::Malformed(_))));
        assert!(matches!(
            result_of(json!({"id":1})),
            Err(RpcError::Malformed(_))
        ));
    }
}
