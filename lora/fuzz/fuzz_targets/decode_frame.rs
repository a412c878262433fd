//! Arbitrary bytes into the frame decoder (version 2: alerts, heartbeats, acks, sync
//! requests and replies): it must never panic, and whatever it accepts must encode
//! back to the same bytes.
//!
//! The fuzzer cannot forge a MAC, so each input is tried twice: as it is, and with
//! its last 8 bytes replaced by the right MAC under the test key, which reaches the
//! field checks and the round trip behind the MAC check.

#![no_main]

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use nodewatch_lora::frame::{ACK_LEN, Key, MAC_LEN, MAX_FRAME_LEN, decode, peek_node};
use sha2::Sha256;

const KEY_BYTES: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| Key::from_bytes(KEY_BYTES.to_vec()).expect("a valid key"))
}

/// `data` with its trailing MAC made valid (when it is long enough to have one).
fn signed(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < ACK_LEN || data.len() > MAX_FRAME_LEN {
        return None;
    }
    let (body, _) = data.split_at(data.len() - MAC_LEN);
    let mut mac = Hmac::<Sha256>::new_from_slice(&KEY_BYTES).expect("any key length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = body.to_vec();
    out.extend_from_slice(&tag[..MAC_LEN]);
    Some(out)
}

fn check(data: &[u8]) {
    let peeked = peek_node(data);
    match decode(data, key()) {
        Ok(frame) => {
            assert_eq!(peeked, Ok(frame.node()), "peek_node disagrees with decode");
            let again = frame.encode(key()).expect("a decoded frame encodes");
            assert_eq!(again, data, "the round trip changed the frame");
        }
        Err(e) => {
            // What peek_node refuses, decode refuses for the same reason.
            if let Err(p) = peeked {
                assert_eq!(p, e);
            }
            assert!(!e.to_string().is_empty());
            assert!(
                ["truncated", "oversized", "version", "malformed", "mac"].contains(&e.reason())
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(signed) = signed(data) {
        check(&signed);
    }
});
