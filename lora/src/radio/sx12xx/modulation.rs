//! Modulation settings as lora-phy's types, and what lora-phy can do on each chip
//! family.

use lora_phy::mod_params::{Bandwidth, CodingRate, SpreadingFactor};
use lora_phy::sx126x::TcxoCtrlVoltage;

use crate::airtime::Modulation;
use crate::radio::RadioError;

/// The spreading factor as lora-phy's type; 5–12 (SF5/SF6 only on SX126x, which
/// lora-phy checks when the modulation is applied).
pub fn spreading_factor(sf: u8) -> Result<SpreadingFactor, RadioError> {
    Ok(match sf {
        5 => SpreadingFactor::_5,
        6 => SpreadingFactor::_6,
        7 => SpreadingFactor::_7,
        8 => SpreadingFactor::_8,
        9 => SpreadingFactor::_9,
        10 => SpreadingFactor::_10,
        11 => SpreadingFactor::_11,
        12 => SpreadingFactor::_12,
        other => {
            return Err(RadioError::Device(format!(
                "modulation.spreading_factor = {other} is not supported (5–12)"
            )));
        }
    })
}

/// Every LoRa bandwidth, as lora-phy names it.
const BANDWIDTHS: [Bandwidth; 10] = [
    Bandwidth::_7KHz,
    Bandwidth::_10KHz,
    Bandwidth::_15KHz,
    Bandwidth::_20KHz,
    Bandwidth::_31KHz,
    Bandwidth::_41KHz,
    Bandwidth::_62KHz,
    Bandwidth::_125KHz,
    Bandwidth::_250KHz,
    Bandwidth::_500KHz,
];

/// The bandwidth as lora-phy's type: 125000, 250000, 500000 Hz, or one of the narrow
/// ones (7810, 10420, 15630, 20830, 31250, 41670, 62500 Hz; the rounded datasheet
/// figures such as 7800 or 62.5 kHz = 62500 are accepted within 0.5 %).
pub fn bandwidth(hz: u32) -> Result<Bandwidth, RadioError> {
    BANDWIDTHS
        .into_iter()
        .find(|bw| {
            let exact = u64::from(bw.hz());
            u64::from(hz).abs_diff(exact) * 200 <= exact
        })
        .ok_or_else(|| {
            RadioError::Device(format!(
                "modulation.bandwidth_hz = {hz} is not a LoRa bandwidth \
                 (125000, 250000, 500000, or 7810 … 62500)"
            ))
        })
}

/// The coding rate 4/N as lora-phy's type, N = 5–8.
pub fn coding_rate(denominator: u8) -> Result<CodingRate, RadioError> {
    Ok(match denominator {
        5 => CodingRate::_4_5,
        6 => CodingRate::_4_6,
        7 => CodingRate::_4_7,
        8 => CodingRate::_4_8,
        other => {
            return Err(RadioError::Device(format!(
                "modulation.coding_rate_denominator = {other} is not supported (5–8, for 4/5 … 4/8)"
            )));
        }
    })
}

/// The TCXO supply voltage an SX126x board needs on DIO3 (1.6, 1.7, 1.8, 2.2, 2.4,
/// 2.7, 3.0 or 3.3 V).
pub fn tcxo_voltage(volts: f32) -> Result<TcxoCtrlVoltage, RadioError> {
    const TABLE: [(f32, TcxoCtrlVoltage); 8] = [
        (1.6, TcxoCtrlVoltage::Ctrl1V6),
        (1.7, TcxoCtrlVoltage::Ctrl1V7),
        (1.8, TcxoCtrlVoltage::Ctrl1V8),
        (2.2, TcxoCtrlVoltage::Ctrl2V2),
        (2.4, TcxoCtrlVoltage::Ctrl2V4),
        (2.7, TcxoCtrlVoltage::Ctrl2V7),
        (3.0, TcxoCtrlVoltage::Ctrl3V0),
        (3.3, TcxoCtrlVoltage::Ctrl3V3),
    ];
    TABLE
        .iter()
        .find(|(v, _)| (v - volts).abs() < 0.05)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            RadioError::Device(format!(
                "sx126x_tcxo_volts = {volts} is not one the SX126x supplies \
                 (1.6, 1.7, 1.8, 2.2, 2.4, 2.7, 3.0, 3.3)"
            ))
        })
}

/// Which chip family, for the choices lora-phy makes differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChipFamily {
    /// SX1276/77/78/79 (and RFM95W/96W/98W).
    Sx127x,
    /// SX1261/SX1262.
    Sx126x,
}

/// Whether low-data-rate optimisation is on for a modulation as lora-phy sets it
/// (it offers no override): SX127x when a symbol lasts more than 16 ms in whole
/// milliseconds (SF12 at 125 kHz, not SF11); SX126x at SF11/SF12 on 125 kHz and SF12
/// on 250 kHz.
pub fn ldro_of(family: ChipFamily, sf: u8, bandwidth_hz: u32) -> bool {
    match family {
        ChipFamily::Sx127x => {
            let symbols_per_s = bandwidth_hz >> u32::from(sf.min(12));
            symbols_per_s > 0 && 1000 / symbols_per_s > 16
        }
        ChipFamily::Sx126x => {
            (matches!(sf, 11 | 12) && bandwidth_hz == 125_000)
                || (sf == 12 && bandwidth_hz == 250_000)
        }
    }
}

/// Checks a modulation against what lora-phy can do on a chip family: the
/// spreading factor, bandwidth and coding rate exist, and the low-data-rate
/// optimisation lora-phy will use is the one the modulation (and so the other end,
/// and the airtime budget) assumes.
pub fn check_modulation(family: ChipFamily, m: &Modulation) -> Result<(), RadioError> {
    m.validate()
        .map_err(|e| RadioError::Device(format!("modulation: {e}")))?;
    spreading_factor(m.spreading_factor)?;
    bandwidth(m.bandwidth_hz)?;
    coding_rate(m.coding_rate_denominator)?;
    if family == ChipFamily::Sx127x && m.spreading_factor == 5 {
        return Err(RadioError::Device(
            "modulation.spreading_factor = 5 is not supported by the SX127x (6–12)".into(),
        ));
    }
    let phy = ldro_of(family, m.spreading_factor, m.bandwidth_hz);
    let wanted = m.ldro();
    if phy != wanted {
        return Err(RadioError::Device(format!(
            "modulation: lora-phy turns low-data-rate optimisation {} at SF{} / {} Hz on this \
             chip, but the modulation wants it {}; set modulation.low_data_rate_optimize = {} \
             on every node and gateway, or pick another spreading factor",
            on_off(phy),
            m.spreading_factor,
            m.bandwidth_hz,
            on_off(wanted),
            phy,
        )));
    }
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
