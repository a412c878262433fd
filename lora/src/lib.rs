//! nodewatch's LoRa alert link (design §4), independent of the agent so that the
//! codec can be fuzzed and the radios tested on their own.
//!
//! - [`frame`]: the ≤ 51-byte frames (version 2: alerts, heartbeats with the firing
//!   set's digest, acks, sync requests and replies), each with a truncated
//!   HMAC-SHA256 under the node's own key, derived from the gateway's master key.
//! - [`replay`]: the gateway's per-node replay window (epoch, sequence, step cap),
//!   persisted.
//! - [`sequence`]: the node's strictly increasing (epoch, sequence), persisted.
//! - [`airtime`]: time on air of a frame for given LoRa parameters.
//! - [`duty`]: the duty-cycle budget (EU868: 1 % over a sliding hour).
//! - [`queue`]: outgoing frames, critical first.
//! - [`radio`]: the [`radio::Radio`] trait and its backends.
//!
//! The decoder's fuzz target is `fuzz/` (cargo-fuzz, its own workspace): run
//! `tests/fuzz.sh decode_frame` from the repository root (docs/fuzzing.md).

pub mod airtime;
pub mod duty;
pub mod frame;
pub mod queue;
pub mod radio;
pub mod replay;
pub mod sequence;

pub mod persist;
