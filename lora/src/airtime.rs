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

/// The bandwidths LoRa chips offer (SX127x; SX126x adds none below 500 kHz).
const BANDWIDTHS_HZ: [u32; 10] = [
    7_800, 10_400, 15_600, 20_800, 31_250, 41_700, 62_500, 125_000, 250_000, 500_000,
];

/// Symbols this long or longer need low-data-rate optimisation (Semtech's rule).
const LDRO_THRESHOLD: Duration = Duration::from_millis(16);

impl Modulation {
    /// Checks the parameters against what LoRa chips support.
    pub fn validate(&self) -> Result<(), String> {
        if !(5..=12).contains(&self.spreading_factor) {
            return Err(format!(
                "spreading factor {} is not 5–12 (7–12 on SX127x)",
                self.spreading_factor
            ));
        }
        if !BANDWIDTHS_HZ.contains(&self.bandwidth_hz) {
            return Err(format!(
                "bandwidth {} Hz is not one of {}",
                self.bandwidth_hz,
                BANDWIDTHS_HZ.map(|b| b.to_string()).join(", ")
            ));
        }
        if !(5..=8).contains(&self.coding_rate_denominator) {
            return Err(format!(
                "coding rate 4/{} is not 4/5–4/8",
                self.coding_rate_denominator
            ));
        }
        if self.preamble_symbols < 6 {
            return Err(format!(
                "preamble of {} symbols is shorter than 6",
                self.preamble_symbols
            ));
        }
        Ok(())
    }

    /// How long one symbol lasts: 2^SF / bandwidth.
    pub fn symbol_time(&self) -> Duration {
        Duration::from_nanos(self.symbol_nanos().round() as u64)
    }

    fn symbol_nanos(&self) -> f64 {
        // Clamped so that invalid settings give a figure instead of a division by zero.
        let sf = self.spreading_factor.clamp(5, 12);
        let bw = self.bandwidth_hz.max(1);
        f64::from(1u32 << sf) * 1e9 / f64::from(bw)
    }

    /// Whether low-data-rate optimisation is on: as configured, else when a symbol
    /// lasts 16 ms or more.
    pub fn ldro(&self) -> bool {
        self.low_data_rate_optimize
            .unwrap_or_else(|| self.symbol_time() >= LDRO_THRESHOLD)
    }
}

/// Time on air of a `payload_len`-byte packet (Semtech's formula: SX1276 datasheet
/// §4.1.1.7 for SF7–12, SX1261/2 datasheet §6.1.4 for SF5–6). Invalid parameters are
/// clamped into range rather than rejected; see [`Modulation::validate`].
pub fn time_on_air(m: &Modulation, payload_len: usize) -> Duration {
    let sf = i64::from(m.spreading_factor.clamp(5, 12));
    let cr = i64::from(m.coding_rate_denominator.clamp(5, 8)) - 4;
    let pl = i64::try_from(payload_len).unwrap_or(i64::MAX / 16);
    let crc = i64::from(m.crc);
    let explicit = i64::from(m.explicit_header);
    let de = i64::from(m.ldro());
    let (preamble_extra, numerator) = if sf >= 7 {
        (4.25, 8 * pl - 4 * sf + 28 + 16 * crc - 20 * (1 - explicit))
    } else {
        // SF5/SF6 (SX126x): a longer preamble sync, and no 8-bit term.
        (6.25, 8 * pl - 4 * sf + 16 * crc + 20 * explicit)
    };
    let denominator = (4 * (sf - 2 * de)).unsigned_abs();
    let blocks = numerator.max(0).unsigned_abs().div_ceil(denominator);
    let payload_symbols = 8 + blocks * (cr + 4).unsigned_abs();
    let symbols = f64::from(m.preamble_symbols) + preamble_extra + payload_symbols as f64;
    Duration::from_nanos((symbols * m.symbol_nanos()).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    fn at(sf: u8) -> Modulation {
        Modulation {
            spreading_factor: sf,
            ..Modulation::default()
        }
    }

    #[test]
    fn design_figures_at_sf12() {
        let m = Modulation::default();
        assert!(m.validate().is_ok());
        assert!(m.ldro());
        assert!((ms(time_on_air(&m, 12)) - 1155.0).abs() < 1.0);
        assert!((ms(time_on_air(&m, 51)) - 2466.0).abs() < 1.0);
        assert_eq!(time_on_air(&m, 12), Duration::from_micros(1_155_072));
        assert_eq!(time_on_air(&m, 51), Duration::from_micros(2_465_792));
        assert_eq!(m.symbol_time(), Duration::from_micros(32_768));
    }

    #[test]
    fn table_per_spreading_factor() {
        // (SF, 12 bytes, 51 bytes) in µs at 125 kHz, CR 4/5, 8 symbols, explicit, CRC.
        let table = [
            (7, 41_216, 102_656),
            (8, 82_432, 184_832),
            (9, 144_384, 328_704),
            (10, 288_768, 616_448),
            (11, 577_536, 1_314_816),
            (12, 1_155_072, 2_465_792),
        ];
        for (sf, short, long) in table {
            let m = at(sf);
            assert!(m.validate().is_ok());
            assert_eq!(m.ldro(), sf >= 11, "SF{sf}");
            assert_eq!(
                time_on_air(&m, 12),
                Duration::from_micros(short),
                "SF{sf} 12 B"
            );
            assert_eq!(
                time_on_air(&m, 51),
                Duration::from_micros(long),
                "SF{sf} 51 B"
            );
        }
    }

    #[test]
    fn other_settings() {
        // Longer frames take longer; wider bandwidth is faster.
        let m = at(9);
        assert!(time_on_air(&m, 20) > time_on_air(&m, 10));
        let wide = Modulation {
            bandwidth_hz: 250_000,
            ..m
        };
        assert_eq!(time_on_air(&wide, 20) * 2, time_on_air(&m, 20));
        // Forcing LDRO off at SF12 shortens the frame.
        let no_ldro = Modulation {
            low_data_rate_optimize: Some(false),
            ..Modulation::default()
        };
        assert!(time_on_air(&no_ldro, 51) < time_on_air(&Modulation::default(), 51));
        // Implicit header and no CRC: 20 + 16 fewer bits.
        let bare = Modulation {
            explicit_header: false,
            crc: false,
            ..at(7)
        };
        assert!(time_on_air(&bare, 12) < time_on_air(&at(7), 12));
        // SF5 (SX126x): 2^5 / 125 kHz = 256 µs.
        assert_eq!(at(5).symbol_time(), Duration::from_micros(256));
        assert!(time_on_air(&at(5), 12) < time_on_air(&at(7), 12));
    }

    #[test]
    fn validation() {
        assert!(at(13).validate().is_err());
        assert!(at(4).validate().is_err());
        let bw = Modulation {
            bandwidth_hz: 0,
            ..Modulation::default()
        };
        let err = bw.validate().expect_err("bandwidth");
        assert!(err.contains("bandwidth 0 Hz"), "{err}");
        // Invalid settings still give a figure, not a panic.
        let _ = time_on_air(&bw, usize::MAX);
        let cr = Modulation {
            coding_rate_denominator: 9,
            ..Modulation::default()
        };
        assert!(cr.validate().is_err());
    }

    #[test]
    fn deserializes_with_defaults() {
        let m: Modulation = serde_json::from_str(r#"{"spreading_factor": 9}"#).expect("modulation");
        assert_eq!(m, at(9));
        assert!(serde_json::from_str::<Modulation>(r#"{"sf": 9}"#).is_err());
    }
}
