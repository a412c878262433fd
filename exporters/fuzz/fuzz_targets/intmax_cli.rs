//! Arbitrary bytes as the INTMAX CLI's `balance` output (stdout, read as the reward
//! exporter reads it: UTF-8 with invalid bytes replaced), through `intmax_cli::parse_balance`.
//!
//! - Nothing panics.
//! - An accepted output gives exactly the amounts of its `ETH:` and `sITX:` lines, read
//!   here on their own: finite, not negative, every other line `SYMBOL: AMOUNT`.
//! - No error message carries what looks like a private key (64 hex digits in a row):
//!   errors are logged and shown on /api/health.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodewatch_exporters::intmax_cli::{looks_like_key, parse_balance};

/// A plain decimal: digits with at most one dot, at least one digit, finite as an f64
/// (over about 309 digits it is not an amount, whatever its symbol).
fn plain_decimal(text: &str) -> Option<f64> {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let dots = text.chars().filter(|c| *c == '.').count();
    if digits == 0 || dots > 1 || digits + dots != text.chars().count() {
        return None;
    }
    text.parse().ok().filter(|v: &f64| v.is_finite())
}

/// What the output says, read independently: `(eth, sitx)`, or `None` when it is not
/// the expected shape.
fn expected(output: &str) -> Option<(f64, Option<f64>)> {
    let mut eth = None;
    let mut sitx = None;
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (symbol, value) = line.split_once(':')?;
        let symbol = symbol.trim();
        if symbol.is_empty()
            || symbol.len() > 16
            || !symbol.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return None;
        }
        let value = plain_decimal(value.trim())?;
        let slot = match symbol {
            "ETH" => &mut eth,
            "sITX" => &mut sitx,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    Some((eth?, sitx))
}

fuzz_target!(|data: &[u8]| {
    let output = String::from_utf8_lossy(data);
    match parse_balance(&output) {
        Ok(balances) => {
            assert!(
                balances.eth.is_finite() && balances.eth >= 0.0,
                "ETH {} accepted",
                balances.eth
            );
            if let Some(sitx) = balances.sitx {
                assert!(sitx.is_finite() && sitx >= 0.0, "sITX {sitx} accepted");
            }
            let (eth, sitx) = expected(&output).expect("accepted output of another shape");
            assert_eq!(balances.eth.to_bits(), eth.to_bits(), "ETH differs");
            assert_eq!(
                balances.sitx.map(f64::to_bits),
                sitx.map(f64::to_bits),
                "sITX differs"
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!looks_like_key(&message), "a key in the error: {message}");
            if expected(&output).is_some() {
                panic!("well-formed output refused: {message}");
            }
        }
    }
});
