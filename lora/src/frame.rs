//! The LoRa frames (design §4), version 2: per-node keys, an epoch, and the firing
//! set's digest in heartbeats.
//!
//! Every frame starts with the same 12 bytes, all integers big-endian:
//!
//! | bytes  | field                                                              |
//! |--------|--------------------------------------------------------------------|
//! | 0      | version ([`VERSION`])                                              |
//! | 1      | kind << 4 \| low nibble (severity for alerts, flags for an ack)    |
//! | 2..6   | node id ([`NodeId`])                                               |
//! | 6..8   | epoch (u16): raised when a node lost its sequence ([`crate::replay`]) |
//! | 8..12  | sequence (u32, strictly increasing within an epoch)                |
//!
//! and ends with the MAC: HMAC-SHA256 under the node's key ([`MasterKey::node_key`]),
//! first [`MAC_LEN`] bytes, over everything before it. Between them, by kind:
//!
//! | kind | what                 | body                                   | length   |
//! |------|----------------------|----------------------------------------|----------|
//! | 0, 1 | firing, resolved     | value (f32) · alert name (0..=25 ASCII) | 24..=49 |
//! | 2    | heartbeat            | value (f32, names firing) · digest (u32, [`firing_digest`]) | 28 |
//! | 3    | ack (gateway → node) | none; flag [`ACK_RESYNC`]: re-announce | 20       |
//! | 4    | sync request         | none; epoch and sequence are a nonce   | 20       |
//! | 5    | sync reply (gateway → node) | the epoch the node must use (u16) | 22       |
//!
//! An ack and a sync reply carry the epoch and sequence of the frame they answer. A
//! sync reply answers a sync request, or a node's frame the gateway refused as a
//! replay or as too far ahead ([`crate::replay::MAX_STEP`]). Version 1 (one network
//! key, no epoch) is refused as `version`.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The frame format's version (byte 0).
pub const VERSION: u8 = 2;
/// The longest frame allowed on the air: what fits one packet at EU868 SF12.
pub const MAX_FRAME_LEN: usize = 51;
/// The longest alert name, in bytes.
pub const MAX_NAME_LEN: usize = 25;
/// The truncated MAC's length.
pub const MAC_LEN: usize = 8;
/// The part every frame starts with.
pub const HEADER_LEN: usize = 12;
/// An acknowledgement's length (and the shortest frame of any kind).
pub const ACK_LEN: usize = HEADER_LEN + MAC_LEN;
/// A sync request's length.
pub const SYNC_REQUEST_LEN: usize = HEADER_LEN + MAC_LEN;
/// A sync reply's length.
pub const SYNC_REPLY_LEN: usize = HEADER_LEN + 2 + MAC_LEN;
/// A heartbeat's length.
pub const HEARTBEAT_LEN: usize = HEADER_LEN + 8 + MAC_LEN;
/// The alert frame's fixed part, before the name.
pub const ALERT_HEADER_LEN: usize = HEADER_LEN + 4;
/// The shortest alert frame (empty name).
pub const MIN_ALERT_LEN: usize = ALERT_HEADER_LEN + MAC_LEN;
/// The longest alert frame (a name of [`MAX_NAME_LEN`]).
pub const MAX_ALERT_LEN: usize = ALERT_HEADER_LEN + MAX_NAME_LEN + MAC_LEN;
/// The shortest key [`Key::from_hex`] accepts, in bytes.
pub const MIN_KEY_LEN: usize = 16;
// Every kind of frame fits one packet.
const _: () = assert!(MAX_ALERT_LEN <= MAX_FRAME_LEN && HEARTBEAT_LEN <= MAX_FRAME_LEN);

/// Ack flag: the heartbeat's digest differs from the gateway's view; re-announce
/// every firing alert.
pub const ACK_RESYNC: u8 = 1;

const KIND_ACK: u8 = 3;
const KIND_SYNC_REQUEST: u8 = 4;
const KIND_SYNC_REPLY: u8 = 5;

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

/// An alert's severity: the low nibble of byte 1 ([`severity_nibble`]).
pub use nodewatch_severity::Severity;

/// The wire value of a severity (the low nibble of byte 1 of an alert frame). Fixed
/// by the frame format: it is not the order or layout of [`Severity`] itself.
fn severity_nibble(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

/// The severity a low nibble stands for; `None` for a value no severity has.
fn severity_from_nibble(nibble: u8) -> Option<Severity> {
    match nibble {
        0 => Some(Severity::Info),
        1 => Some(Severity::Warning),
        2 => Some(Severity::Critical),
        _ => None,
    }
}

/// What an alert frame says (the high nibble of byte 1; 3 is the acknowledgement).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AlertState {
    /// The alert fires (sent when it starts, and again while it lasts).
    Firing = 0,
    /// The alert has resolved.
    Resolved = 1,
    /// The node is alive; carries the digest of its firing set, so the gateway can
    /// tell whether its view of the node is complete.
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
    /// The node's epoch: raised when it lost its sequence (see [`crate::sequence`]).
    pub epoch: u16,
    /// The node's sequence number (strictly increasing within an epoch).
    pub sequence: u32,
    /// The rule's value when it fired (NaN allowed); a heartbeat's: how many alert
    /// names fire.
    pub value: f32,
    /// A heartbeat's [`firing_digest`] of the node's firing set (not sent, and 0 after
    /// decoding, for firing and resolved frames).
    pub digest: u32,
    /// The alert's name: printable ASCII without spaces, at most [`MAX_NAME_LEN`]
    /// bytes (empty for heartbeats).
    pub alertname: String,
}

impl AlertFrame {
    /// The encoded frame's length (valid or not).
    pub fn encoded_len(&self) -> usize {
        if self.state == AlertState::Heartbeat {
            HEARTBEAT_LEN
        } else {
            ALERT_HEADER_LEN + self.alertname.len() + MAC_LEN
        }
    }
}

/// The gateway's acknowledgement of a node's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AckFrame {
    /// The node whose frame is acknowledged.
    pub node: NodeId,
    /// The acknowledged frame's epoch.
    pub epoch: u16,
    /// The acknowledged frame's sequence.
    pub sequence: u32,
    /// The acknowledged heartbeat's digest does not match: re-announce the firing set.
    pub resync: bool,
}

/// A node asking which epoch to use (its sequence file is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncRequest {
    /// The asking node.
    pub node: NodeId,
    /// A fresh random number, echoed by the reply (in the epoch and sequence fields).
    pub nonce: (u16, u32),
}

/// The gateway's answer to a sync request, or to a refused frame: start `next_epoch`
/// at sequence 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncReply {
    /// The node it is for.
    pub node: NodeId,
    /// The epoch and sequence of the frame answered (a request's nonce).
    pub answers: (u16, u32),
    /// The epoch the node must use from now on.
    pub next_epoch: u16,
}

/// A frame of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A node's alert or heartbeat.
    Alert(AlertFrame),
    /// The gateway's acknowledgement.
    Ack(AckFrame),
    /// A node asking for its epoch.
    SyncRequest(SyncRequest),
    /// The gateway telling a node its epoch.
    SyncReply(SyncReply),
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
    /// The node the frame is from or for.
    pub fn node(&self) -> NodeId {
        match self {
            Frame::Alert(a) => a.node,
            Frame::Ack(a) => a.node,
            Frame::SyncRequest(r) => r.node,
            Frame::SyncReply(r) => r.node,
        }
    }

    /// The frame's epoch and sequence (an ack's or reply's: the answered frame's; a
    /// request's: its nonce).
    pub fn stamp(&self) -> (u16, u32) {
        match self {
            Frame::Alert(a) => (a.epoch, a.sequence),
            Frame::Ack(a) => (a.epoch, a.sequence),
            Frame::SyncRequest(r) => r.nonce,
            Frame::SyncReply(r) => r.answers,
        }
    }

    /// The frame's sequence (see [`stamp`](Self::stamp)).
    pub fn sequence(&self) -> u32 {
        self.stamp().1
    }

    /// The plain acknowledgement of this frame.
    pub fn ack(&self) -> AckFrame {
        let (epoch, sequence) = self.stamp();
        AckFrame {
            node: self.node(),
            epoch,
            sequence,
            resync: false,
        }
    }

    /// Encodes and signs the frame with `key` (the node's key).
    pub fn encode(&self, key: &Key) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(MAX_FRAME_LEN);
        let header = |out: &mut Vec<u8>, kind: u8, low: u8, node: NodeId, stamp: (u16, u32)| {
            out.push(VERSION);
            out.push((kind << 4) | low);
            out.extend_from_slice(&node.0);
            out.extend_from_slice(&stamp.0.to_be_bytes());
            out.extend_from_slice(&stamp.1.to_be_bytes());
        };
        match self {
            Frame::Alert(a) => {
                let stamp = (a.epoch, a.sequence);
                header(
                    &mut out,
                    a.state as u8,
                    severity_nibble(a.severity),
                    a.node,
                    stamp,
                );
                out.extend_from_slice(&a.value.to_bits().to_be_bytes());
                if a.state == AlertState::Heartbeat {
                    if !a.alertname.is_empty() {
                        return Err(EncodeError::HeartbeatWithName {
                            name: a.alertname.clone(),
                        });
                    }
                    out.extend_from_slice(&a.digest.to_be_bytes());
                } else {
                    check_name(&a.alertname)?;
                    out.extend_from_slice(a.alertname.as_bytes());
                }
            }
            Frame::Ack(a) => {
                let flags = if a.resync { ACK_RESYNC } else { 0 };
                header(&mut out, KIND_ACK, flags, a.node, (a.epoch, a.sequence));
            }
            Frame::SyncRequest(r) => header(&mut out, KIND_SYNC_REQUEST, 0, r.node, r.nonce),
            Frame::SyncReply(r) => {
                header(&mut out, KIND_SYNC_REPLY, 0, r.node, r.answers);
                out.extend_from_slice(&r.next_epoch.to_be_bytes());
            }
        }
        let tag = key.mac(&out).finalize().into_bytes();
        out.extend_from_slice(&tag[..MAC_LEN]);
        Ok(out)
    }
}

/// The digest of a node's firing set, as its heartbeat carries it: the first 4 bytes
/// (big-endian) of SHA-256 over the alerts sorted by name, each as name, NUL,
/// severity byte. Order does not matter; a change of severity does. The gateway
/// compares it with the digest of what it holds for the node.
pub fn firing_digest<'a>(alerts: impl IntoIterator<Item = (&'a str, Severity)>) -> u32 {
    let mut sorted: Vec<(&str, Severity)> = alerts.into_iter().collect();
    sorted.sort();
    let mut hash = Sha256::new();
    for (name, severity) in sorted {
        hash.update(name.as_bytes());
        hash.update([0, severity_nibble(severity)]);
    }
    let d = hash.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
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
    /// A heartbeat has no room for a name.
    #[error("a heartbeat carries no alert name, found {name:?}")]
    HeartbeatWithName {
        /// The name given.
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
    /// Another version of the format (version 1: a node or gateway not yet upgraded).
    #[error("frame version {0}, expected {VERSION}")]
    Version(u8),
    /// The fields do not make a frame (the message says which).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The MAC does not verify: another key (another node's), or altered bytes.
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
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The node id of a frame, before verifying it, so that the gateway can pick the
/// node's own key. Checks only length and version: the id is not authenticated.
pub fn peek_node(bytes: &[u8]) -> Result<NodeId, DecodeError> {
    check_envelope(bytes)?;
    let mut id = [0; 4];
    id.copy_from_slice(&bytes[2..6]);
    Ok(NodeId(id))
}

fn exact_len(bytes: &[u8], what: &str, len: usize) -> Result<(), DecodeError> {
    if bytes.len() != len {
        return Err(DecodeError::Malformed(format!(
            "{what} of {} bytes, expected {len}",
            bytes.len()
        )));
    }
    Ok(())
}

fn zero_low_nibble(what: &str, low: u8) -> Result<(), DecodeError> {
    if low != 0 {
        return Err(DecodeError::Malformed(format!(
            "{what} with low nibble {low}"
        )));
    }
    Ok(())
}

/// Checks and verifies a frame heard on the air. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8], key: &Key) -> Result<Frame, DecodeError> {
    let node = peek_node(bytes)?;
    let kind = bytes[1] >> 4;
    let low = bytes[1] & 0x0f;
    let stamp = (be_u16(bytes, 6), be_u32(bytes, 8));
    match kind {
        KIND_ACK => {
            if low & !ACK_RESYNC != 0 {
                return Err(DecodeError::Malformed(format!("ack with flags {low:#x}")));
            }
            exact_len(bytes, "ack", ACK_LEN)?;
            verify(bytes, key)?;
            return Ok(Frame::Ack(AckFrame {
                node,
                epoch: stamp.0,
                sequence: stamp.1,
                resync: low & ACK_RESYNC != 0,
            }));
        }
        KIND_SYNC_REQUEST => {
            zero_low_nibble("sync request", low)?;
            exact_len(bytes, "sync request", SYNC_REQUEST_LEN)?;
            verify(bytes, key)?;
            return Ok(Frame::SyncRequest(SyncRequest { node, nonce: stamp }));
        }
        KIND_SYNC_REPLY => {
            zero_low_nibble("sync reply", low)?;
            exact_len(bytes, "sync reply", SYNC_REPLY_LEN)?;
            verify(bytes, key)?;
            return Ok(Frame::SyncReply(SyncReply {
                node,
                answers: stamp,
                next_epoch: be_u16(bytes, HEADER_LEN),
            }));
        }
        _ => {}
    }
    let state = AlertState::from_nibble(kind).ok_or_else(|| {
        DecodeError::Malformed(format!(
            "kind {kind} is none of firing (0), resolved (1), heartbeat (2), ack (3), sync request (4), sync reply (5)"
        ))
    })?;
    let severity = severity_from_nibble(low).ok_or_else(|| {
        DecodeError::Malformed(format!(
            "severity {low} is none of info (0), warning (1), critical (2)"
        ))
    })?;
    let (digest, name) = if state == AlertState::Heartbeat {
        exact_len(bytes, "heartbeat", HEARTBEAT_LEN)?;
        (be_u32(bytes, ALERT_HEADER_LEN), &[][..])
    } else {
        if bytes.len() < MIN_ALERT_LEN {
            return Err(DecodeError::Truncated {
                len: bytes.len(),
                min: MIN_ALERT_LEN,
            });
        }
        if bytes.len() > MAX_ALERT_LEN {
            return Err(DecodeError::Malformed(format!(
                "alert frame of {} bytes: the name is longer than {MAX_NAME_LEN}",
                bytes.len()
            )));
        }
        (0, &bytes[ALERT_HEADER_LEN..bytes.len() - MAC_LEN])
    };
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
        epoch: stamp.0,
        sequence: stamp.1,
        value: f32::from_bits(be_u32(bytes, HEADER_LEN)),
        digest,
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

/// The network master key, held by the gateway only: each node's key is derived from
/// it and the node's id, so a key taken from one node signs for that node alone.
pub struct MasterKey(Vec<u8>);

/// HKDF's salt: fixed, naming the protocol (RFC 5869 §3.1 allows a constant).
const NODE_KEY_SALT: &[u8] = b"nodewatch-lora";
/// HKDF's info before the node id: names the key's use and the frame version.
const NODE_KEY_INFO: &[u8] = b"nodewatch-lora node key v2";

impl MasterKey {
    /// A master key from hex digits (surrounding whitespace ignored), at least
    /// [`MIN_KEY_LEN`] bytes.
    pub fn from_hex(hex: &str) -> Result<MasterKey, KeyError> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) {
            return Err(KeyError::OddLength);
        }
        let bytes = decode_hex(hex).ok_or(KeyError::NotHex)?;
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(MasterKey(bytes))
    }

    /// The key of `node`: HKDF-SHA256 (RFC 5869) with this key as input keying
    /// material, salt `nodewatch-lora`, info `nodewatch-lora node key v2` followed by
    /// the node's 4-byte id; 32 bytes.
    pub fn node_key_bytes(&self, node: NodeId) -> [u8; 32] {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(NODE_KEY_SALT), &self.0);
        let mut info = NODE_KEY_INFO.to_vec();
        info.extend_from_slice(&node.0);
        let mut okm = [0; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32.
        if hkdf.expand(&info, &mut okm).is_err() {
            unreachable!("HKDF-SHA256 expands to 32 bytes");
        }
        okm
    }

    /// The key `node` signs its frames with (and the gateway answers it with).
    pub fn node_key(&self, node: NodeId) -> Key {
        Key::from_bytes(self.node_key_bytes(node).to_vec())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid key"))
    }

    /// The node's key as the hex a node's key file holds.
    pub fn node_key_hex(&self, node: NodeId) -> String {
        self.node_key_bytes(node)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(redacted)")
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
            epoch: 0x0102,
            sequence: 0xdead_beef,
            value: 91.5,
            digest: if state == AlertState::Heartbeat {
                0x1234_5678
            } else {
                0
            },
            alertname: if state == AlertState::Heartbeat {
                String::new()
            } else {
                name.to_owned()
            },
        }
    }

    fn every_kind() -> Vec<Frame> {
        let node = NodeId([9; 4]);
        vec![
            Frame::Alert(alert(AlertState::Firing, Severity::Critical, "DiskFull")),
            Frame::Alert(alert(AlertState::Heartbeat, Severity::Info, "")),
            Frame::Ack(AckFrame {
                node,
                epoch: 3,
                sequence: 1,
                resync: true,
            }),
            Frame::SyncRequest(SyncRequest {
                node,
                nonce: (0xabcd, 0x0102_0304),
            }),
            Frame::SyncReply(SyncReply {
                node,
                answers: (7, 8),
                next_epoch: 9,
            }),
        ]
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
                    let expected = if state == AlertState::Heartbeat {
                        HEARTBEAT_LEN
                    } else {
                        MIN_ALERT_LEN + name.len()
                    };
                    assert_eq!(bytes.len(), expected);
                    assert!(bytes.len() <= MAX_FRAME_LEN);
                    assert_eq!(bytes[0], VERSION);
                    assert_eq!(bytes[1], (state as u8) << 4 | severity as u8);
                    assert_eq!(decode(&bytes, &key()), Ok(frame.clone()));
                    assert_eq!(peek_node(&bytes), Ok(NodeId::from_name("pi-1")));
                }
            }
        }
        for frame in every_kind() {
            let bytes = frame.encode(&key()).expect("encode");
            assert_eq!(decode(&bytes, &key()), Ok(frame.clone()), "{frame:?}");
        }
    }

    #[test]
    fn every_frame_fits_51_bytes() {
        assert_eq!(MAX_ALERT_LEN, 49);
        assert_eq!(
            (ACK_LEN, SYNC_REQUEST_LEN, SYNC_REPLY_LEN, HEARTBEAT_LEN),
            (20, 20, 22, 28)
        );
        let longest = Frame::Alert(alert(
            AlertState::Firing,
            Severity::Critical,
            &"n".repeat(MAX_NAME_LEN),
        ));
        assert_eq!(longest.encode(&key()).expect("encode").len(), MAX_ALERT_LEN);
    }

    #[test]
    fn layout_is_big_endian() {
        let bytes = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "Hot"))
            .encode(&key())
            .expect("encode");
        assert_eq!(&bytes[2..6], &NodeId::from_name("pi-1").0);
        assert_eq!(&bytes[6..8], &[0x01, 0x02]);
        assert_eq!(&bytes[8..12], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&bytes[12..16], &91.5f32.to_be_bytes());
        assert_eq!(&bytes[16..19], b"Hot");
        assert_eq!(bytes.len(), 27);
        let hb = Frame::Alert(alert(AlertState::Heartbeat, Severity::Info, ""))
            .encode(&key())
            .expect("encode");
        assert_eq!(&hb[16..20], &[0x12, 0x34, 0x56, 0x78]);
        let reply = every_kind()[4].encode(&key()).expect("encode");
        assert_eq!(reply[1], 0x50);
        assert_eq!(&reply[12..14], &[0, 9]);
    }

    #[test]
    fn ack_round_trip() {
        let ack = AckFrame {
            node: NodeId([1, 2, 3, 4]),
            epoch: 2,
            sequence: 7,
            resync: false,
        };
        let bytes = Frame::Ack(ack).encode(&key()).expect("encode");
        assert_eq!(bytes.len(), ACK_LEN);
        assert_eq!(bytes[1], 0x30);
        assert_eq!(decode(&bytes, &key()), Ok(Frame::Ack(ack)));
        let resync = AckFrame {
            resync: true,
            ..ack
        };
        let bytes = Frame::Ack(resync).encode(&key()).expect("encode");
        assert_eq!(bytes[1], 0x31);
        assert_eq!(decode(&bytes, &key()), Ok(Frame::Ack(resync)));
        let f = Frame::Alert(alert(AlertState::Firing, Severity::Info, "x"));
        assert_eq!(
            f.ack(),
            AckFrame {
                node: f.node(),
                epoch: 0x0102,
                sequence: f.sequence(),
                resync: false,
            }
        );
    }

    #[test]
    fn nan_and_extremes_survive() {
        let mut a = alert(AlertState::Firing, Severity::Warning, "Nan");
        a.value = f32::NAN;
        a.sequence = u32::MAX;
        a.epoch = u16::MAX;
        let bytes = Frame::Alert(a).encode(&key()).expect("encode");
        match decode(&bytes, &key()).expect("decode") {
            Frame::Alert(b) => {
                assert!(b.value.is_nan());
                assert_eq!((b.epoch, b.sequence), (u16::MAX, u32::MAX));
            }
            other => panic!("not an alert: {other:?}"),
        }
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        for frame in every_kind() {
            let bytes = frame.encode(&key()).expect("encode");
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut forged = bytes.clone();
                    forged[i] ^= 1 << bit;
                    assert!(
                        decode(&forged, &key()).is_err(),
                        "{frame:?}: byte {i} bit {bit} flipped was accepted"
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
        // The node id can still be read to choose the node's key.
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
        // 50 and 51 bytes fit the air but no alert: the name would be too long.
        let mut fifty = bytes.clone();
        fifty.resize(50, b'a');
        assert_eq!(
            decode(&fifty, &key()).expect_err("long").reason(),
            "malformed"
        );
    }

    #[test]
    fn version_1_and_bad_nibbles_are_refused() {
        let bytes = Frame::Alert(alert(AlertState::Firing, Severity::Critical, "X"))
            .encode(&key())
            .expect("encode");
        for version in [1, 3] {
            let mut v = bytes.clone();
            v[0] = version;
            assert_eq!(decode(&v, &key()), Err(DecodeError::Version(version)));
            assert_eq!(peek_node(&v), Err(DecodeError::Version(version)));
        }
        for byte1 in [0x03, 0x0f, 0x60, 0xf0, 0x32, 0x41, 0x51] {
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
        // A heartbeat's kind with an alert's length.
        let mut hb = bytes.clone();
        hb[1] = 0x20;
        assert_eq!(decode(&hb, &key()).expect_err("hb").reason(), "malformed");
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
        let mut hb = alert(AlertState::Heartbeat, Severity::Info, "");
        hb.alertname = "X".into();
        assert!(matches!(
            Frame::Alert(hb).encode(&key()),
            Err(EncodeError::HeartbeatWithName { .. })
        ));
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
                buf[1] &= 0x7f;
            }
            let _ = peek_node(&buf);
            let _ = decode(&buf, &key());
        }
    }

    #[test]
    fn firing_digest_is_order_free_and_sees_severity() {
        use Severity::*;
        let a = firing_digest([("DiskFull", Critical), ("MemoryLow", Warning)]);
        let b = firing_digest([("MemoryLow", Warning), ("DiskFull", Critical)]);
        assert_eq!(a, b, "order does not matter");
        assert_ne!(
            a,
            firing_digest([("DiskFull", Warning), ("MemoryLow", Warning)]),
            "severity matters"
        );
        assert_ne!(
            a,
            firing_digest([("DiskFull", Critical)]),
            "a missing alert"
        );
        let empty = firing_digest([]);
        assert_ne!(empty, firing_digest([("A", Info)]));
        // The separator keeps name boundaries: "AB" + "C" is not "A" + "BC".
        assert_ne!(
            firing_digest([("AB", Info), ("C", Info)]),
            firing_digest([("A", Info), ("BC", Info)])
        );
        // SHA-256 of nothing starts e3b0c442.
        assert_eq!(empty, 0xe3b0_c442);
    }

    #[test]
    fn node_keys_are_derived_per_node() {
        let master = MasterKey::from_hex(&"42".repeat(32)).expect("master");
        let a = NodeId::from_name("pi-a");
        let b = NodeId::from_name("pi-b");
        assert_ne!(master.node_key_bytes(a), master.node_key_bytes(b));
        assert_eq!(master.node_key_bytes(a), master.node_key_bytes(a));
        let other = MasterKey::from_hex(&"43".repeat(32)).expect("master");
        assert_ne!(master.node_key_bytes(a), other.node_key_bytes(a));
        assert_eq!(master.node_key_hex(a).len(), 64);
        // What a node's key signs, only that node's derived key verifies.
        let frame = Frame::Alert(AlertFrame {
            node: b,
            ..alert(AlertState::Resolved, Severity::Critical, "X")
        });
        let by_a = frame.encode(&master.node_key(a)).expect("encode");
        assert_eq!(decode(&by_a, &master.node_key(b)), Err(DecodeError::Mac));
        let by_b = frame.encode(&master.node_key(b)).expect("encode");
        assert!(decode(&by_b, &master.node_key(b)).is_ok());
        // The node key file's hex is the same key.
        let from_file = Key::from_hex(&master.node_key_hex(b)).expect("hex");
        assert!(decode(&by_b, &from_file).is_ok());
        assert_eq!(format!("{master:?}"), "MasterKey(redacted)");
        assert_eq!(
            MasterKey::from_hex("00").expect_err("short"),
            KeyError::TooShort(1)
        );
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

    #[test]
    fn severity_nibbles_are_the_wire_format() {
        let nibbles = [
            (Severity::Info, 0),
            (Severity::Warning, 1),
            (Severity::Critical, 2),
        ];
        for (severity, nibble) in nibbles {
            assert_eq!(severity_nibble(severity), nibble);
            assert_eq!(severity_from_nibble(nibble), Some(severity));
        }
        assert_eq!(severity_from_nibble(3), None);
        assert_eq!(severity_from_nibble(15), None);
    }
}
