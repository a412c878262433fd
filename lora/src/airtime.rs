//! Time on air of a LoRa frame (Semtech's formula, SX1276 datasheet §4.1.1.7).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The LoRa modulation both ends use. The defaults are design §4's: SF12, 125 kHz,
/// CR 4/5, 8-symbol preamble, explicit header, CRC on, low-data-rate optimisation
/// automatic (on when a symbol lasts 16 ms or more, as at SF11/SF12 on 125 kHz).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Modulation {
    /// Spreading factor, 7–12 (SX126x also 5–6).
    pub spreading_factor: u8,
    /// Bandwidth in Hz: 125000, 250000 or 500000 (others on some chips).
    pub bandwidth_hz: u32,
    /// Coding rate 4/N: N = 5–8.
    pub coding_rate_denominator: u8,
    /// Preamble length in symbols.
    pub preamble_symbols: u16,
    /// Explicit header (LoRa's default).
    pub explicit_header: bool,
    /// Payload CRC.
    pub crc: bool,
    /// Low-data-rate optimisation; `None` chooses it from the symbol time.
    pub low_data_rate_optimize: Option<bool>,
}

impl Default for Modulation {
    fn default() -> Self {
        Self {
            spreading_factor: 12,
            bandwidth_hz: 125_000,
            coding_rate_denominator: 5,
            preamble_symbols: 8,
            explicit_header: true,
            crc: true,
            low_data_rate_optimize: None,
        }
    }
}
