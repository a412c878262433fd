//! The LoRa alert frame and the gateway's acknowledgement (design §4).
//!
//! Layout, all integers big-endian:
//!
//! | bytes        | field                                                        |
//! |--------------|--------------------------------------------------------------|
//! | 0            | version ([`VERSION`])                                        |
//! | 1            | state << 4 \| severity                                       |
//! | 2..6         | node id ([`NodeId`])                                         |
//! | 6..10        | sequence (u32)                                               |
//! | 10..14       | value (f32)                                                  |
//! | 14..18       | node time (u32 unix seconds, informational)                  |
//! | 18..len-8    | alert name (printable ASCII 0x21..=0x7e, 0..=25 bytes)       |
//! | len-8..len   | MAC: HMAC-SHA256(key, all preceding bytes), first 8 bytes    |
//!
//! The acknowledgement is version, `3 << 4` (severity 0), node id, sequence and MAC:
//! [`ACK_LEN`] = 18 bytes. The name's length is implied by the frame's length, so an
//! alert frame is 26..=51 bytes and an ack exactly 18.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The frame format's version (byte 0).
pub const VERSION: u8 = 1;
/// The longest frame: what fits one packet at EU868 SF12.
pub const MAX_FRAME_LEN: usize = 51;
/// The longest alert name, in bytes.
pub const MAX_NAME_LEN: usize = 25;
/// The truncated MAC's length.
pub const MAC_LEN: usize = 8;
/// An acknowledgement's length (and the shortest frame of any kind).
pub const ACK_LEN: usize = 18;
/// The alert frame's fixed part, before the name.
pub const ALERT_HEADER_LEN: usize = 18;
/// The shortest alert frame (empty name).
pub const MIN_ALERT_LEN: usize = ALERT_HEADER_LEN + MAC_LEN;
/// The shortest key [`Key::from_hex`] accepts, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// The state nibble of an acknowledgement.
const ACK_STATE: u8 = 3;

type HmacSha256 = Hmac<Sha256>;

/// A node's 4-byte id: the first bytes of SHA-256 of its name. Shown as 8 lowercase
/// hex digits (also in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub [u8; 4]);

impl NodeId {
    /// The id of the node called `name` (the first 4 bytes of its SHA-256).
    pub fn from_name(name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        let mut id = [0; 4];
        id.copy_from_slice(&digest[..4]);
        NodeId(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A string that is not 8 hex digits, given as a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} is not 8 hex digits")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNodeIdError(s.to_owned());
        if s.len() != 8 {
            return Err(err());
        }
        let bytes = decode_hex(s).ok_or_else(err)?;
        let mut id = [0; 4];
        id.copy_from_slice(&bytes);
        Ok(NodeId(id))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An alert's severity (the low nibble of byte 1). Ordered: `Info < Warning < Critical`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info = 0,
    /// Needs attention soon.
    Warning = 1,
    /// Needs attention now.
    Critical = 2,
}

impl Severity {
    /// The label value: `info`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    fn from_nibble(n: u8) -> Option<Self> {
        match n {
            0 => Some(Severity::Info),
            1 => Some(Severity::Warning),
            2 => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!(
                "severity {s:?} is not one of info, warning, critical"
            )),
        }
    }
}

/// What an alert frame says (the high nibble of byte 1; 3 is the acknowledgement).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AlertState {
    /// The alert fires (sent when it starts, and again while it lasts).
    Firing = 0,
    /// The alert has resolved.
    Resolved = 1,
    /// Nothing is wrong: the node is alive (the gateway resolves a node's alerts when
    /// these stop).
    Heartbeat = 2,
}

impl AlertState {
    /// A lowercase name for logs: `firing`, `resolved`, `heartbeat`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Heartbeat => "heartbeat",
        }
    }

    fn from_nibble(n: u8) -> Option<Self> {
        match n {
            0 => Some(AlertState::Firing),
            1 => Some(AlertState::Resolved),
            2 => Some(AlertState::Heartbeat),
            _ => None,
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's alert (or heartbeat).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertFrame {
    /// Firing, resolved or heartbeat.
    pub state: AlertState,
    /// The alert's severity.
    pub severity: Severity,
    /// The sending node.
    pub node: NodeId,
    /// The node's sequence number (strictly increasing, see [`crate::sequence`]).
    pub sequence: u32,
    /// The rule's value when it fired (NaN allowed).
    pub value: f32,
    /// The node's clock, unix seconds: informational only, since an offline Pi's
    /// clock may be wrong (the gateway stamps receipt time).
    pub node_time: u32,
    /// The alert's name: printable ASCII without spaces, at most [`MAX_NAME_LEN`]
    /// bytes (may be empty, e.g. for heartbeats).
    pub alertname: String,
}

impl AlertFrame {
    /// The encoded frame's length (valid or not).
    pub fn encoded_len(&self) -> usize {
        ALERT_HEADER_LEN + self.alertname.len() + MAC_LEN
    }
}

/// The gateway's acknowledgement of a node's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AckFrame {
    /// The node whose frame is acknowledged.
    pub node: NodeId,
    /// The acknowledged frame's sequence.
    pub sequence: u32,
}

/// A frame of either kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A node's alert or heartbeat.
    Alert(AlertFrame),
    /// The gateway's acknowledgement.
    Ack(AckFrame),
}

impl From<AlertFrame> for Frame {
    fn from(f: AlertFrame) -> Self {
        Frame::Alert(f)
    }
}

impl From<AckFrame> for Frame {
    fn from(f: AckFrame) -> Self {
        Frame::Ack(f)
    }
}

impl Frame {
    /// The node the frame is from (alert) or for (ack).
    pub fn node(&self) -> NodeId {
        match self {
            Frame::Alert(a) => a.node,
            Frame::Ack(a) => a.node,
        }
    }

    /// The frame's sequence (for an ack, the acknowledged one).
    pub fn sequence(&self) -> u32 {
        match self {
            Frame::Alert(a) => a.sequence,
            Frame::Ack(a) => a.sequence,
        }
    }

    /// The acknowledgement the gateway sends for this frame.
    pub fn ack(&self) -> AckFrame {
        AckFrame {
            node: self.node(),
            sequence: self.sequence(),
        }
    }

    /// Encodes and signs the frame with `key`.
    pub fn encode(&self, key: &Key) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(MAX_FRAME_LEN);
        match self {
            Frame::Alert(a) => {
                check_name(&a.alertname)?;
                out.push(VERSION);
                out.push(((a.state as u8) << 4) | a.severity as u8);
                out.extend_from_slice(&a.node.0);
                out.extend_from_slice(&a.sequence.to_be_bytes());
                out.extend_from_slice(&a.value.to_bits().to_be_bytes());
                out.extend_from_slice(&a.node_time.to_be_bytes());
                out.extend_from_slice(a.alertname.as_bytes());
            }
            Frame::Ack(a) => {
                out.push(VERSION);
                out.push(ACK_STATE << 4);
                out.extend_from_slice(&a.node.0);
                out.extend_from_slice(&a.sequence.to_be_bytes());
            }
        }
        let tag = key.mac(&out).finalize().into_bytes();
        out.extend_from_slice(&tag[..MAC_LEN]);
        Ok(out)
    }
}

fn check_name(name: &str) -> Result<(), EncodeError> {
    if name.len() > MAX_NAME_LEN {
        return Err(EncodeError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if !name.bytes().all(is_name_byte) {
        return Err(EncodeError::NameNotPrintable {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// An alert that cannot be put in a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The name does not fit.
    #[error("alert name {name:?} is {len} bytes, longer than the frame's {MAX_NAME_LEN}")]
    NameTooLong {
        /// The alert's name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name has bytes outside printable ASCII (0x21..=0x7e: no spaces).
    #[error("alert name {name:?} is not printable ASCII without spaces")]
    NameNotPrintable {
        /// The alert's name.
        name: String,
    },
}

/// A frame that is rejected. [`DecodeError::reason`] gives a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the shortest frame of its kind.
    #[error("frame of {len} bytes is shorter than {min}")]
    Truncated {
        /// The frame's length.
        len: usize,
        /// The shortest allowed.
        min: usize,
    },
    /// Longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is longer than {MAX_FRAME_LEN}")]
    Oversized {
        /// The frame's length.
        len: usize,
    },
    /// Another version of the format.
    #[error("frame version {0}, expected {VERSION}")]
    Version(u8),
    /// The fields do not make a frame (the message says which).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The MAC does not verify: another key, or altered bytes.
    #[error("frame's MAC does not verify (wrong key or altered frame)")]
    Mac,
}

impl DecodeError {
    /// A short label for metrics: `truncated`, `oversized`, `version`, `malformed`,
    /// `mac`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Version(_) => "version",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Mac => "mac",
        }
    }
}

/// The length and version checks shared by [`peek_node`] and [`decode`].
fn check_envelope(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() < ACK_LEN {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            min: ACK_LEN,
        });
    }
    if bytes.len() > MAX_FRAME_LEN {
        return Err(DecodeError::Oversized { len: bytes.len() });
    }
    if bytes[0] != VERSION {
        return Err(DecodeError::Version(bytes[0]));
    }
    Ok(())
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// The node id of a frame, before verifying it, so that the gateway can pick the
/// node's own key. Checks only length and version: the id is not authenticated.
pub fn peek_node(bytes: &[u8]) -> Result<NodeId, DecodeError> {
    check_envelope(bytes)?;
    let mut id = [0; 4];
    id.copy_from_slice(&bytes[2..6]);
    Ok(NodeId(id))
}

/// Checks and verifies a frame heard on the air. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8], key: &Key) -> Result<Frame, DecodeError> {
    check_envelope(bytes)?;
    let state = bytes[1] >> 4;
    let severity = bytes[1] & 0x0f;
    let node = peek_node(bytes)?;
    let sequence = be_u32(bytes, 6);
    if state == ACK_STATE {
        if severity != 0 {
            return Err(DecodeError::Malformed(format!(
                "ack with severity {severity}"
            )));
        }
        if bytes.len() != ACK_LEN {
            return Err(DecodeError::Malformed(format!(
                "ack of {} bytes, expected {ACK_LEN}",
                bytes.len()
            )));
        }
        verify(bytes, key)?;
        return Ok(Frame::Ack(AckFrame { node, sequence }));
    }
    let state = AlertState::from_nibble(state).ok_or_else(|| {
        DecodeError::Malformed(format!(
            "state {state} is none of firing (0), resolved (1), heartbeat (2), ack (3)"
        ))
    })?;
    let severity = Severity::from_nibble(severity).ok_or_else(|| {
        DecodeError::Malformed(format!(
            "severity {severity} is none of info (0), warning (1), critical (2)"
        ))
    })?;
    if bytes.len() < MIN_ALERT_LEN {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            min: MIN_ALERT_LEN,
        });
    }
    let name = &bytes[ALERT_HEADER_LEN..bytes.len() - MAC_LEN];
    if let Some(i) = name.iter().position(|&b| !is_name_byte(b)) {
        return Err(DecodeError::Malformed(format!(
            "alert name byte {:#04x} at offset {} is not printable ASCII",
            name[i],
            ALERT_HEADER_LEN + i
        )));
    }
    verify(bytes, key)?;
    Ok(Frame::Alert(AlertFrame {
        state,
        severity,
        node,
        sequence,
        value: f32::from_bits(be_u32(bytes, 10)),
        node_time: be_u32(bytes, 14),
        // Checked above: printable ASCII is UTF-8.
        alertname: name.iter().map(|&b| char::from(b)).collect(),
    }))
}

/// Constant-time check of the trailing MAC (`bytes.len() >= ACK_LEN` here).
fn verify(bytes: &[u8], key: &Key) -> Result<(), DecodeError> {
    let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    key.mac(body)
        .verify_truncated_left(tag)
        .map_err(|_| DecodeError::Mac)
}

/// A network or node key: secret bytes, never printed. Holds the keyed HMAC state,
/// so that each frame costs two SHA-256 compressions fewer.
#[derive(Clone)]
pub struct Key(HmacSha256);

impl Key {
    /// A key from hex digits (surrounding whitespace ignored), at least
    /// [`MIN_KEY_LEN`] bytes (32 digits).
    pub fn from_hex(hex: &str) -> Result<Key, KeyError> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) {
            return Err(KeyError::OddLength);
        }
        let bytes = decode_hex(hex).ok_or(KeyError::NotHex)?;
        Key::from_bytes(bytes)
    }

    /// A key from raw bytes, at least [`MIN_KEY_LEN`] of them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Key, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        // HMAC takes keys of any length; the error is kept rather than assumed away.
        HmacSha256::new_from_slice(&bytes)
            .map(Key)
            .map_err(|_| KeyError::TooShort(bytes.len()))
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(data);
        mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(redacted)")
    }
}

/// A key that cannot be used. The messages never include the key's digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An odd number of hex digits.
    #[error("key has an odd number of hex digits")]
    OddLength,
    /// Something other than hex digits.
    #[error("key is not hex digits")]
    NotHex,
    /// Too short to be a key.
    #[error("key is {0} bytes, at least {MIN_KEY_LEN} (32 hex digits) are needed")]
    TooShort(usize),
}

/// Hex digits to bytes; `None` unless `s` is an even number of hex digits.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .expect("key")
    }

    fn other_key() -> Key {
        Key::from_hex("ff0102030405060708090a0b0c0d0e0f").expect("key")
    }

    fn alert(state: AlertState, severity: Severity, name: &str) -> AlertFrame {
        AlertFrame {
            state,
            severity,
            node: NodeId::from_name("pi-1"),
            sequence: 0xdead_beef,
            value: 91.5,
            node_time: 1_790_000_000,
            alertname: name.to_owned(),
        }
    }

    #[test]
    fn round_trip_every_state_severity_and_name_length() {
        let names = ["", "a", "DiskFull", &"x".repeat(MAX_NAME_LEN)];
        for state in [
            AlertState::Firing,
            AlertState::Resolved,
            AlertState::Heartbeat,
        ] {
            for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
                for name in names {
                    let frame = Frame::Alert(alert(state, severity, name));
                    let bytes = frame.encode(&key()).expect("encode");
                    assert_eq!(bytes.len(), MIN_ALERT_LEN + name.len());
                    assert!(bytes.len() <= MAX_FRAME_LEN);
                    assert_eq!(bytes[0], VERSION);
                    assert_eq!(bytes[1], (state as u8) << 4 | severity as u8);
                    assert_eq!(decode(&bytes, &key()), Ok(frame.clone()));
                    assert_eq!(peek_node(&bytes), Ok(NodeId::from_name("pi-1")));
                }
            }
        }
    }

    #[test]
    fn layout_is_big_endian() {
        let bytes = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "Hot"))
            .encode(&key())
            .expect("encode");
        assert_eq!(&bytes[2..6], &NodeId::from_name("pi-1").0);
        assert_eq!(&bytes[6..10], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&bytes[10..14], &91.5f32.to_be_bytes());
        assert_eq!(&bytes[14..18], &1_790_000_000u32.to_be_bytes());
        assert_eq!(&bytes[18..21], b"Hot");
        assert_eq!(bytes.len(), 29);
    }

    #[test]
    fn ack_round_trip() {
        let ack = AckFrame {
            node: NodeId([1, 2, 3, 4]),
            sequence: 7,
        };
        let bytes = Frame::Ack(ack).encode(&key()).expect("encode");
        assert_eq!(bytes.len(), ACK_LEN);
        assert_eq!(bytes[1], 0x30);
        assert_eq!(decode(&bytes, &key()), Ok(Frame::Ack(ack)));
        let f = Frame::Alert(alert(AlertState::Firing, Severity::Info, "x"));
        assert_eq!(
            f.ack(),
            AckFrame {
                node: f.node(),
                sequence: f.sequence()
            }
        );
    }

    #[test]
    fn nan_and_extremes_survive() {
        let mut a = alert(AlertState::Firing, Severity::Warning, "Nan");
        a.value = f32::NAN;
        a.sequence = u32::MAX;
        a.node_time = 0;
        let bytes = Frame::Alert(a).encode(&key()).expect("encode");
        match decode(&bytes, &key()).expect("decode") {
            Frame::Alert(b) => {
                assert!(b.value.is_nan());
                assert_eq!(b.sequence, u32::MAX);
            }
            other => panic!("not an alert: {other:?}"),
        }
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        for frame in [
            Frame::Alert(alert(AlertState::Firing, Severity::Critical, "DiskFull")),
            Frame::Ack(AckFrame {
                node: NodeId([9; 4]),
                sequence: 1,
            }),
        ] {
            let bytes = frame.encode(&key()).expect("encode");
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut forged = bytes.clone();
                    forged[i] ^= 1 << bit;
                    assert!(
                        decode(&forged, &key()).is_err(),
                        "byte {i} bit {bit} flipped was accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_key_is_a_mac_error() {
        let bytes = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "DiskFull"))
            .encode(&other_key())
            .expect("encode");
        let err = decode(&bytes, &key()).expect_err("forged");
        assert_eq!(err, DecodeError::Mac);
        assert_eq!(err.reason(), "mac");
        // The node id can still be read to choose a per-node key.
        assert_eq!(peek_node(&bytes), Ok(NodeId::from_name("pi-1")));
    }

    #[test]
    fn forged_mac_and_swapped_bodies_are_rejected() {
        let a = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "A"))
            .encode(&key())
            .expect("encode");
        let b = Frame::Alert(alert(AlertState::Resolved, Severity::Critical, "A"))
            .encode(&key())
            .expect("encode");
        let mut spliced = b[..b.len() - MAC_LEN].to_vec();
        spliced.extend_from_slice(&a[a.len() - MAC_LEN..]);
        assert_eq!(decode(&spliced, &key()), Err(DecodeError::Mac));
        let mut zero = a.clone();
        let n = zero.len();
        zero[n - MAC_LEN..].fill(0);
        assert_eq!(decode(&zero, &key()), Err(DecodeError::Mac));
    }

    #[test]
    fn truncated_and_oversized_are_rejected() {
        let bytes = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "DiskFull"))
            .encode(&key())
            .expect("encode");
        for len in 0..ACK_LEN {
            let err = decode(&bytes[..len], &key()).expect_err("truncated");
            assert_eq!(err.reason(), "truncated", "{len}: {err}");
            assert!(peek_node(&bytes[..len]).is_err());
        }
        // Long enough for an ack but not an alert.
        for len in ACK_LEN..MIN_ALERT_LEN {
            let err = decode(&bytes[..len], &key()).expect_err("truncated");
            assert_eq!(err.reason(), "truncated", "{len}: {err}");
        }
        // Cut inside the name: the MAC no longer verifies.
        for len in MIN_ALERT_LEN..bytes.len() {
            assert!(decode(&bytes[..len], &key()).is_err());
        }
        let mut long = bytes.clone();
        long.resize(60, b'a');
        let err = decode(&long, &key()).expect_err("oversized");
        assert_eq!(err.reason(), "oversized");
        assert_eq!(err.to_string(), "frame of 60 bytes is longer than 51");
        assert_eq!(peek_node(&long), Err(DecodeError::Oversized { len: 60 }));
    }

    #[test]
    fn version_and_nibbles_are_checked() {
        let bytes = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "X"))
            .encode(&key())
            .expect("encode");
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(decode(&v, &key()), Err(DecodeError::Version(2)));
        assert_eq!(peek_node(&v), Err(DecodeError::Version(2)));
        for byte1 in [0x03, 0x0f, 0x40, 0xf0, 0x31] {
            let mut m = bytes.clone();
            m[1] = byte1;
            assert_eq!(
                decode(&m, &key()).expect_err("malformed").reason(),
                "malformed",
                "{byte1:#x}"
            );
        }
        let mut name = bytes.clone();
        name[ALERT_HEADER_LEN] = b' ';
        assert_eq!(
            decode(&name, &key()).expect_err("space").reason(),
            "malformed"
        );
        // An ack's state with an alert's length.
        let mut ack = bytes.clone();
        ack[1] = 0x30;
        assert_eq!(decode(&ack, &key()).expect_err("ack").reason(), "malformed");
    }

    #[test]
    fn bad_names_do_not_encode() {
        let long = Frame::Alert(alert(
            AlertState::Firing,
            Severity::Info,
            &"n".repeat(MAX_NAME_LEN + 1),
        ));
        let err = long.encode(&key()).expect_err("too long");
        assert!(
            err.to_string().contains("nnnnnnnnnnnnnnnnnnnnnnnnnn"),
            "{err}"
        );
        for name in ["disk full", "temp°C", "tab\t", "\u{7f}"] {
            let f = Frame::Alert(alert(AlertState::Firing, Severity::Info, name));
            let err = f.encode(&key()).expect_err("not printable");
            assert!(
                matches!(err, EncodeError::NameNotPrintable { .. }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap, deterministic stand-in for the fuzz target.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if len > 2 {
                buf[0] = VERSION;
                buf[1] &= 0x3f;
            }
            let _ = peek_node(&buf);
            let _ = decode(&buf, &key());
        }
    }

    #[test]
    fn node_ids() {
        let id = NodeId::from_name("pi-1");
        let hex = id.to_string();
        assert_eq!(hex.len(), 8);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(hex.parse::<NodeId>(), Ok(id));
        assert_eq!(hex.to_uppercase().parse::<NodeId>(), Ok(id));
        // SHA-256("abc") starts ba7816bf.
        assert_eq!(NodeId::from_name("abc").to_string(), "ba7816bf");
        for bad in ["", "ba7816b", "ba7816bf0", "ba7816bg", "+a7816bf"] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).expect("parse"), id);
    }

    #[test]
    fn keys() {
        assert!(Key::from_hex(" 000102030405060708090a0b0c0d0e0f\n").is_ok());
        assert_eq!(
            Key::from_hex("000102030405060708090a0b0c0d0e").expect_err("short"),
            KeyError::TooShort(15)
        );
        assert_eq!(
            Key::from_hex("000102030405060708090a0b0c0d0e0f0").expect_err("odd"),
            KeyError::OddLength
        );
        assert_eq!(
            Key::from_hex("zz0102030405060708090a0b0c0d0e0f").expect_err("hex"),
            KeyError::NotHex
        );
        assert_eq!(format!("{:?}", key()), "Key(redacted)");
    }

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        assert_eq!("Critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!("page".parse::<Severity>().is_err());
        assert_eq!(Severity::Warning.to_string(), "warning");
    }
}
