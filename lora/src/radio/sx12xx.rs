//! SX127x (RFM95W, Dragino and Adafruit HATs) and SX126x (SX1262/SX1261 modules) over
//! SPI, through the maintained `lora-phy` driver (async, embedded-hal-async 1.0).
//!
//! The driver is async; the Pi's SPI and GPIO (rppal, at the agent's edge) are blocking
//! embedded-hal 1.0 parts. Three small adapters bridge them:
//!
//! - [`BlockingSpi`]: a blocking `SpiDevice` as an async one. A register access is a
//!   few bytes at 2 MHz (microseconds), so running it inline on the runtime is cheaper
//!   than a thread hop, and it never yields half way through a transaction.
//! - [`PolledWait`]: an `InputPin` (DIO0 / DIO1 / BUSY) as an async `Wait`, polled
//!   about every millisecond with `tokio::time::sleep` (no GPIO interrupts needed).
//! - [`TokioDelay`]: `DelayNs` on tokio's timer.
//!
//! [`Sx12xxRadio`] wraps `lora_phy::LoRa` with the frequency, power and
//! [`Modulation`] of the config, and implements [`Radio`] for the two concrete chips
//! ([`Sx127xRadio`], [`Sx126xRadio`]): the generic driver's futures cannot be proven
//! `Send` for an arbitrary chip kind, but they are for these.
//!
//! Both ends use the private-network sync word (0x12 / 0x1424): nodewatch's radios
//! talk to each other, not to LoRaWAN. lora-phy chooses low-data-rate optimisation
//! itself; [`ldro_of`] says what it chooses, and a [`Modulation`] asking for something
//! else is refused rather than silently mismatched (both ends must agree).
//!
//! Cancellation: [`Radio::receive`] stops at its timeout. With [`BlockingSpi`] the
//! driver only yields while waiting for an interrupt, BUSY or a delay, never inside a
//! register access, so dropping it there leaves the chip in a state the next
//! `prepare_for_tx` / `prepare_for_rx` resets.

use std::convert::Infallible;
use std::time::Duration;

use embedded_hal::digital::{InputPin, OutputPin};
use lora_phy::mod_params::{
    Bandwidth, CodingRate, ModulationParams, PacketParams, RadioError as PhyError, SpreadingFactor,
};
use lora_phy::mod_traits::RadioKind;
use lora_phy::sx126x::{self, Sx126x, Sx126xVariant, TcxoCtrlVoltage};
use lora_phy::sx127x::{self, Sx127x, Sx1276};
use lora_phy::{LoRa, RxMode};

use super::{Radio, RadioError, Received};
use crate::airtime::{Modulation, time_on_air};

/// The largest LoRa payload the chips' FIFOs take.
pub const MAX_PAYLOAD: usize = 255;

// ---------------------------------------------------------------------------------
// Modulation mapping
// ---------------------------------------------------------------------------------

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

/// lora-phy's error as ours, naming the device and the step.
pub fn phy_error(device: &str, step: &str, e: PhyError) -> RadioError {
    let why = match e {
        PhyError::SPI => "SPI transfer failed".to_string(),
        PhyError::Reset => "could not drive the reset pin".to_string(),
        PhyError::Busy => "the BUSY pin could not be read".to_string(),
        PhyError::Irq | PhyError::DIO1 => "the interrupt pin (DIO0/DIO1) could not be read".into(),
        PhyError::RfSwitchRx | PhyError::RfSwitchTx => "could not drive the RF switch".into(),
        PhyError::UnavailableSpreadingFactor => {
            "this chip does not support the spreading factor".into()
        }
        PhyError::UnavailableBandwidth => "this chip does not support the bandwidth".into(),
        PhyError::InvalidBandwidthForFrequency => {
            "250/500 kHz bandwidths need a frequency of 400 MHz or more".into()
        }
        PhyError::InvalidSF6ExplicitHeaderRequest => {
            "SF6 needs an implicit header (modulation.explicit_header = false)".into()
        }
        PhyError::InvalidOutputPowerForFrequency => {
            "the output power is not allowed at this frequency".into()
        }
        PhyError::TransmitTimeout => "the chip reported a transmit timeout".into(),
        PhyError::ReceiveTimeout => "the chip reported a receive timeout".into(),
        PhyError::PayloadSizeUnexpected(n) => format!("unexpected payload size {n}"),
        PhyError::PayloadSizeMismatch(a, b) => format!("payload size mismatch ({a} vs {b})"),
        PhyError::OpError(status) => {
            format!("the chip reported a command error (status {status:#04x})")
        }
        other => format!("{other:?}"),
    };
    RadioError::Device(format!("{device}: {step}: {why}"))
}

// ---------------------------------------------------------------------------------
// Is a chip there?
// ---------------------------------------------------------------------------------

fn no_answer(device: &str, register: &str, value: u8, hint: &str) -> RadioError {
    RadioError::Device(format!(
        "{device}: no chip answers on SPI ({register} reads {value:#04x}); check the \
         wiring, {hint}"
    ))
}

/// Reads an SX127x's version register (0x42: 0x12 on SX1276/77/78/79, 0x22 on
/// SX1272) with the blocking SPI device, before lora-phy (which never reads it) takes
/// over: a bus with no chip reads 0x00 or 0xff, and the radio would otherwise only
/// fail later, waiting for an interrupt that never comes.
pub fn probe_sx127x<S: embedded_hal::spi::SpiDevice<u8>>(
    spi: &mut S,
    device: &str,
) -> Result<u8, RadioError> {
    let mut version = [0u8];
    spi.transaction(&mut [
        embedded_hal::spi::Operation::Write(&[0x42]),
        embedded_hal::spi::Operation::Read(&mut version),
    ])
    .map_err(|e| RadioError::Device(format!("{device}: SPI transfer failed: {e:?}")))?;
    match version[0] {
        v @ (0x00 | 0xff) => Err(no_answer(
            device,
            "the version register",
            v,
            "spi_chip_select / spi_cs_gpio and reset_gpio",
        )),
        v => Ok(v),
    }
}

/// Reads an SX126x's LoRa sync word MSB (register 0x0740: 0x14 private, 0x34
/// public) once BUSY is low, for the same reason as [`probe_sx127x`].
pub async fn probe_sx126x<S, I>(spi: &mut S, busy: &mut I, device: &str) -> Result<u8, RadioError>
where
    S: embedded_hal::spi::SpiDevice<u8>,
    I: InputPin,
{
    let ready = async {
        loop {
            match busy.is_high() {
                Ok(false) => return Ok(()),
                Ok(true) => tokio::time::sleep(POLL_INTERVAL).await,
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(200), ready).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(RadioError::Device(format!("{device}: reading BUSY: {e}")));
        }
        Err(_) => {
            return Err(RadioError::Device(format!(
                "{device}: BUSY stayed high for 200 ms after reset; check busy_gpio and \
                 reset_gpio"
            )));
        }
    }
    // ReadRegister: opcode, address, then a status byte before the data.
    let mut answer = [0u8; 2];
    spi.transaction(&mut [
        embedded_hal::spi::Operation::Write(&[0x1d, 0x07, 0x40]),
        embedded_hal::spi::Operation::Read(&mut answer),
    ])
    .map_err(|e| RadioError::Device(format!("{device}: SPI transfer failed: {e:?}")))?;
    match answer[1] {
        v @ (0x00 | 0xff) => Err(no_answer(
            device,
            "the sync word register",
            v,
            "spi_chip_select / spi_cs_gpio, reset_gpio and busy_gpio",
        )),
        v => Ok(v),
    }
}

// ---------------------------------------------------------------------------------
// Adapters: blocking embedded-hal 1.0 parts for the async driver
// ---------------------------------------------------------------------------------

/// A blocking embedded-hal 1.0 `SpiDevice` as an embedded-hal-async one.
#[derive(Debug)]
pub struct BlockingSpi<S>(pub S);

impl<S: embedded_hal::spi::SpiDevice<u8>> embedded_hal_async::spi::ErrorType for BlockingSpi<S> {
    type Error = S::Error;
}

impl<S: embedded_hal::spi::SpiDevice<u8>> embedded_hal_async::spi::SpiDevice<u8>
    for BlockingSpi<S>
{
    async fn transaction(
        &mut self,
        operations: &mut [embedded_hal_async::spi::Operation<'_, u8>],
    ) -> Result<(), Self::Error> {
        self.0.transaction(operations)
    }
}

/// How many times [`PolledWait`] reads its pin back to back before it starts
/// sleeping between reads.
const SPIN_READS: usize = 16;

/// How often [`PolledWait`] looks at its pin.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// A blocking `InputPin` as an async `Wait`: a few reads back to back, then one every
/// [`POLL_INTERVAL`].
#[derive(Debug)]
pub struct PolledWait<P> {
    pin: P,
    interval: Duration,
}

impl<P: InputPin> PolledWait<P> {
    /// Polls `pin` every [`POLL_INTERVAL`].
    pub fn new(pin: P) -> Self {
        Self::with_interval(pin, POLL_INTERVAL)
    }

    /// Polls `pin` every `interval` (at least 100 µs).
    pub fn with_interval(pin: P, interval: Duration) -> Self {
        Self {
            pin,
            interval: interval.max(Duration::from_micros(100)),
        }
    }

    /// The pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }

    async fn wait_level(&mut self, high: bool) -> Result<(), P::Error> {
        // BUSY usually drops within microseconds of a command: look a few times before
        // paying for a timer tick.
        for _ in 0..SPIN_READS {
            if self.pin.is_high()? == high {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        loop {
            if self.pin.is_high()? == high {
                return Ok(());
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

impl<P: InputPin> embedded_hal::digital::ErrorType for PolledWait<P> {
    type Error = P::Error;
}

impl<P: InputPin> embedded_hal_async::digital::Wait for PolledWait<P> {
    async fn wait_for_high(&mut self) -> Result<(), Self::Error> {
        self.wait_level(true).await
    }

    async fn wait_for_low(&mut self) -> Result<(), Self::Error> {
        self.wait_level(false).await
    }

    async fn wait_for_rising_edge(&mut self) -> Result<(), Self::Error> {
        self.wait_level(false).await?;
        self.wait_level(true).await
    }

    async fn wait_for_falling_edge(&mut self) -> Result<(), Self::Error> {
        self.wait_level(true).await?;
        self.wait_level(false).await
    }

    async fn wait_for_any_edge(&mut self) -> Result<(), Self::Error> {
        let now = self.pin.is_high()?;
        self.wait_level(!now).await
    }
}

/// `DelayNs` on tokio's timer (millisecond resolution: shorter delays last about a
/// millisecond, which the chips' reset and wake-up timings allow).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioDelay;

impl embedded_hal_async::delay::DelayNs for TokioDelay {
    async fn delay_ns(&mut self, ns: u32) {
        tokio::time::sleep(Duration::from_nanos(u64::from(ns))).await;
    }

    async fn delay_us(&mut self, us: u32) {
        tokio::time::sleep(Duration::from_micros(u64::from(us))).await;
    }

    async fn delay_ms(&mut self, ms: u32) {
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
}

/// A pin that is not there: as an output (no RF-switch pins: lora-phy's generic
/// interface wants one type for reset and switches) it ignores what it is told; as an
/// input it reads high (an absent Ebyte AUX line: never busy).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPin;

impl embedded_hal::digital::ErrorType for NoPin {
    type Error = Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl InputPin for NoPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(true)
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------
// The radio
// ---------------------------------------------------------------------------------

/// What a chip is told besides its wiring.
#[derive(Debug, Clone, PartialEq)]
pub struct Sx12xxSettings {
    /// For logs and errors: `sx1276 spi0.0`.
    pub name: String,
    /// Carrier frequency in Hz (868_100_000 for EU868's first channel).
    pub frequency_hz: u32,
    /// Output power in dBm (lora-phy clamps it to the chip's range: SX1276 PA_BOOST
    /// 2–20, SX1262 −9…22, SX1261 −17…15).
    pub tx_power_dbm: i32,
    /// Modulation (both ends must agree).
    pub modulation: Modulation,
}

/// A LoRa chip driven by lora-phy, with the settings of the config.
pub struct Sx12xxRadio<RK, DLY>
where
    RK: RadioKind,
    DLY: embedded_hal_async::delay::DelayNs,
{
    lora: LoRa<RK, DLY>,
    settings: Sx12xxSettings,
    modulation_params: ModulationParams,
    tx_params: PacketParams,
    rx_params: PacketParams,
    buffer: [u8; MAX_PAYLOAD],
}

impl<RK, DLY> std::fmt::Debug for Sx12xxRadio<RK, DLY>
where
    RK: RadioKind,
    DLY: embedded_hal_async::delay::DelayNs,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sx12xxRadio")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<RK, DLY> Sx12xxRadio<RK, DLY>
where
    RK: RadioKind,
    DLY: embedded_hal_async::delay::DelayNs,
{
    /// Resets and initialises the chip (lora-phy's `LoRa::new`) and prepares the
    /// modulation and packet parameters. The modulation should have been checked with
    /// [`check_modulation`] for the chip family.
    pub async fn new(
        radio_kind: RK,
        delay: DLY,
        settings: Sx12xxSettings,
    ) -> Result<Self, RadioError> {
        let m = settings.modulation;
        let sf = spreading_factor(m.spreading_factor)?;
        let bw = bandwidth(m.bandwidth_hz)?;
        let cr = coding_rate(m.coding_rate_denominator)?;
        let name = settings.name.clone();
        let mut lora = LoRa::new(radio_kind, false, delay)
            .await
            .map_err(|e| phy_error(&name, "initialising the chip", e))?;
        let modulation_params = lora
            .create_modulation_params(sf, bw, cr, settings.frequency_hz)
            .map_err(|e| phy_error(&name, "modulation", e))?;
        let tx_params = lora
            .create_tx_packet_params(
                m.preamble_symbols,
                !m.explicit_header,
                m.crc,
                false,
                &modulation_params,
            )
            .map_err(|e| phy_error(&name, "packet parameters", e))?;
        let rx_params = lora
            .create_rx_packet_params(
                m.preamble_symbols,
                !m.explicit_header,
                MAX_PAYLOAD as u8,
                m.crc,
                false,
                &modulation_params,
            )
            .map_err(|e| phy_error(&name, "packet parameters", e))?;
        Ok(Self {
            lora,
            settings,
            modulation_params,
            tx_params,
            rx_params,
            buffer: [0; MAX_PAYLOAD],
        })
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &Sx12xxSettings {
        &self.settings
    }

    /// How long a transmit may take before the missing TxDone interrupt is an error.
    fn tx_deadline(&self, len: usize) -> Duration {
        time_on_air(&self.settings.modulation, len) * 2 + Duration::from_secs(1)
    }

    /// Sends one frame (the generic body of [`Radio::transmit`]).
    pub async fn transmit_frame(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        if frame.len() > MAX_PAYLOAD {
            return Err(RadioError::TooLong {
                len: frame.len(),
                max: MAX_PAYLOAD,
            });
        }
        let deadline = self.tx_deadline(frame.len());
        let name = &self.settings.name;
        self.lora
            .prepare_for_tx(
                &self.modulation_params,
                &mut self.tx_params,
                self.settings.tx_power_dbm,
                frame,
            )
            .await
            .map_err(|e| phy_error(name, "preparing to transmit", e))?;
        match tokio::time::timeout(deadline, self.lora.tx()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(phy_error(name, "transmitting", e)),
            Err(_) => Err(RadioError::Device(format!(
                "{name}: no TxDone interrupt within {} ms; check the interrupt pin (irq_gpio: \
                 DIO0 on SX127x, DIO1 on SX126x)",
                deadline.as_millis()
            ))),
        }
    }

    /// Listens for up to `timeout` (the generic body of [`Radio::receive`]).
    pub async fn receive_frame(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Received>, RadioError> {
        let name = &self.settings.name;
        self.lora
            .prepare_for_rx(RxMode::Continuous, &self.modulation_params, &self.rx_params)
            .await
            .map_err(|e| phy_error(name, "preparing to receive", e))?;
        match tokio::time::timeout(timeout, self.lora.rx(&self.rx_params, &mut self.buffer)).await {
            Err(_) => Ok(None),
            Ok(Err(PhyError::ReceiveTimeout)) => Ok(None),
            Ok(Err(e)) => Err(phy_error(name, "receiving", e)),
            Ok(Ok((len, status))) => {
                let len = usize::from(len).min(MAX_PAYLOAD);
                Ok(Some(Received {
                    bytes: self.buffer[..len].to_vec(),
                    rssi_dbm: Some(f32::from(status.rssi)),
                    snr_db: Some(f32::from(status.snr)),
                }))
            }
        }
    }

    /// Puts the chip to sleep (at shutdown).
    pub async fn sleep(&mut self) -> Result<(), RadioError> {
        let name = &self.settings.name;
        self.lora
            .sleep(false)
            .await
            .map_err(|e| phy_error(name, "sleep", e))
    }
}

// ---------------------------------------------------------------------------------
// The concrete chips
// ---------------------------------------------------------------------------------

/// The SX127x as lora-phy's radio kind, on blocking parts: `S` the SPI device, `O`
/// the reset pin, `I` DIO0.
pub type Sx127xKind<S, O, I> =
    Sx127x<BlockingSpi<S>, lora_phy::iv::GenericSx127xInterfaceVariant<O, PolledWait<I>>, Sx1276>;

/// An SX1276/77/78/79 (RFM95W/96W/98W) radio.
pub type Sx127xRadio<S, O, I> = Sx12xxRadio<Sx127xKind<S, O, I>, TokioDelay>;

/// The SX126x as lora-phy's radio kind, on blocking parts: `S` the SPI device, `O`
/// the reset pin, `I` DIO1 and BUSY.
pub type Sx126xKind<S, O, I> = Sx126x<
    BlockingSpi<S>,
    lora_phy::iv::GenericSx126xInterfaceVariant<O, PolledWait<I>>,
    Sx126xChip,
>;

/// An SX1262/SX1261 radio.
pub type Sx126xRadio<S, O, I> = Sx12xxRadio<Sx126xKind<S, O, I>, TokioDelay>;

/// Which SX126x, and whether its DIO2 drives the board's RF switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sx126xChip {
    /// SX1262 (high-power PA, up to 22 dBm) rather than SX1261 (low-power PA, 15 dBm).
    pub high_power: bool,
    /// DIO2 switches the antenna between TX and RX (most SX1262 modules).
    pub dio2_rf_switch: bool,
}

impl Sx126xVariant for Sx126xChip {
    fn get_device_sel(&self) -> sx126x::DeviceSel {
        if self.high_power {
            sx126x::DeviceSel::HighPowerPA
        } else {
            sx126x::DeviceSel::LowPowerPA
        }
    }

    fn use_dio2_as_rfswitch(&self) -> bool {
        self.dio2_rf_switch
    }
}

/// The SX126x board's options.
#[derive(Debug, Clone, Copy)]
pub struct Sx126xOptions {
    /// The chip and its DIO2 use.
    pub chip: Sx126xChip,
    /// TCXO powered from DIO3 at this voltage (most SX1262 modules: 1.8 V); `None` for
    /// a crystal. See [`tcxo_voltage`] for the values.
    pub tcxo_volts: Option<f32>,
    /// The module has the DC-DC regulator's inductor.
    pub use_dcdc: bool,
}

/// The SX127x board's options.
#[derive(Debug, Clone, Copy)]
pub struct Sx127xOptions {
    /// Transmit through PA_BOOST (RFM95W and the common HATs: the RFO pins are not
    /// connected) rather than RFO.
    pub pa_boost: bool,
    /// The board has a TCXO rather than a crystal.
    pub tcxo: bool,
}

impl Default for Sx127xOptions {
    fn default() -> Self {
        Self {
            pa_boost: true,
            tcxo: false,
        }
    }
}

/// Opens an SX1276/77/78/79 (RFM95W …): `spi` on its chip select, `reset` (active
/// low), `dio0` the TxDone/RxDone interrupt line.
pub async fn open_sx127x<S, O, I>(
    spi: S,
    reset: O,
    dio0: I,
    options: Sx127xOptions,
    settings: Sx12xxSettings,
) -> Result<Sx127xRadio<S, O, I>, RadioError>
where
    S: embedded_hal::spi::SpiDevice<u8>,
    O: OutputPin,
    I: InputPin,
{
    check_modulation(ChipFamily::Sx127x, &settings.modulation)
        .map_err(|e| RadioError::Device(format!("{}: {e}", settings.name)))?;
    let iv =
        lora_phy::iv::GenericSx127xInterfaceVariant::new(reset, PolledWait::new(dio0), None, None)
            .map_err(|e| phy_error(&settings.name, "pins", e))?;
    let config = sx127x::Config {
        chip: Sx1276,
        tcxo_used: options.tcxo,
        tx_boost: options.pa_boost,
        rx_boost: false,
    };
    let kind = Sx127x::new(BlockingSpi(spi), iv, config);
    Sx12xxRadio::new(kind, TokioDelay, settings).await
}

/// Opens an SX1262/SX1261: `spi` on its chip select, `reset` (active low), `dio1`
/// the interrupt line, `busy` the BUSY line (the chip needs it between commands).
pub async fn open_sx126x<S, O, I>(
    spi: S,
    reset: O,
    dio1: I,
    busy: I,
    options: Sx126xOptions,
    settings: Sx12xxSettings,
) -> Result<Sx126xRadio<S, O, I>, RadioError>
where
    S: embedded_hal::spi::SpiDevice<u8>,
    O: OutputPin,
    I: InputPin,
{
    check_modulation(ChipFamily::Sx126x, &settings.modulation)
        .map_err(|e| RadioError::Device(format!("{}: {e}", settings.name)))?;
    let tcxo_ctrl = options
        .tcxo_volts
        .map(tcxo_voltage)
        .transpose()
        .map_err(|e| RadioError::Device(format!("{}: {e}", settings.name)))?;
    let iv = lora_phy::iv::GenericSx126xInterfaceVariant::new(
        reset,
        PolledWait::new(dio1),
        PolledWait::new(busy),
        None,
        None,
    )
    .map_err(|e| phy_error(&settings.name, "pins", e))?;
    let config = sx126x::Config {
        chip: options.chip,
        tcxo_ctrl,
        use_dcdc: options.use_dcdc,
        rx_boost: false,
    };
    let kind = Sx126x::new(BlockingSpi(spi), iv, config);
    Sx12xxRadio::new(kind, TokioDelay, settings).await
}

impl<S, O, I> Radio for Sx127xRadio<S, O, I>
where
    S: embedded_hal::spi::SpiDevice<u8> + Send,
    O: OutputPin + Send,
    I: InputPin + Send,
{
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        self.transmit_frame(frame).await
    }

    async fn receive(&mut self, timeout: Duration) -> Result<Option<Received>, RadioError> {
        self.receive_frame(timeout).await
    }

    fn describe(&self) -> String {
        self.settings.name.clone()
    }
}

impl<S, O, I> Radio for Sx126xRadio<S, O, I>
where
    S: embedded_hal::spi::SpiDevice<u8> + Send,
    O: OutputPin + Send,
    I: InputPin + Send,
{
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        self.transmit_frame(frame).await
    }

    async fn receive(&mut self, timeout: Duration) -> Result<Option<Received>, RadioError> {
        self.receive_frame(timeout).await
    }

    fn describe(&self) -> String {
        self.settings.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use embedded_hal::spi::Operation;
    use embedded_hal_async::digital::Wait;

    fn settings() -> Sx12xxSettings {
        Sx12xxSettings {
            name: "sx1276 spi0.0".into(),
            frequency_hz: 868_100_000,
            tx_power_dbm: 14,
            modulation: Modulation::default(),
        }
    }

    #[test]
    fn maps_spreading_factors_bandwidths_and_coding_rates() {
        assert_eq!(spreading_factor(7).ok(), Some(SpreadingFactor::_7));
        assert_eq!(spreading_factor(12).ok(), Some(SpreadingFactor::_12));
        let err = spreading_factor(13).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("spreading_factor = 13")));
        assert!(spreading_factor(4).is_err());

        assert_eq!(bandwidth(125_000).ok(), Some(Bandwidth::_125KHz));
        assert_eq!(bandwidth(250_000).ok(), Some(Bandwidth::_250KHz));
        assert_eq!(bandwidth(500_000).ok(), Some(Bandwidth::_500KHz));
        assert_eq!(bandwidth(62_500).ok(), Some(Bandwidth::_62KHz));
        assert_eq!(
            bandwidth(7_800).ok(),
            Some(Bandwidth::_7KHz),
            "rounded datasheet value"
        );
        let err = bandwidth(200_000).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bandwidth_hz = 200000")));

        assert_eq!(coding_rate(5).ok(), Some(CodingRate::_4_5));
        assert_eq!(coding_rate(8).ok(), Some(CodingRate::_4_8));
        let err = coding_rate(9).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("coding_rate_denominator = 9")));
    }

    #[test]
    fn tcxo_voltages() {
        assert!(matches!(tcxo_voltage(1.8), Ok(TcxoCtrlVoltage::Ctrl1V8)));
        assert!(matches!(tcxo_voltage(3.3), Ok(TcxoCtrlVoltage::Ctrl3V3)));
        let err = tcxo_voltage(2.0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("sx126x_tcxo_volts = 2")));
    }

    #[test]
    fn low_data_rate_optimisation_must_match_lora_phy() {
        let m = Modulation::default(); // SF12 / 125 kHz: on everywhere
        assert!(check_modulation(ChipFamily::Sx127x, &m).is_ok());
        assert!(check_modulation(ChipFamily::Sx126x, &m).is_ok());
        let sf7 = Modulation {
            spreading_factor: 7,
            ..m
        };
        assert!(check_modulation(ChipFamily::Sx127x, &sf7).is_ok());
        assert!(check_modulation(ChipFamily::Sx126x, &sf7).is_ok());
        // SF11 / 125 kHz: a 16.4 ms symbol; lora-phy's SX127x leaves LDRO off.
        let sf11 = Modulation {
            spreading_factor: 11,
            ..m
        };
        assert!(check_modulation(ChipFamily::Sx126x, &sf11).is_ok());
        let err = check_modulation(ChipFamily::Sx127x, &sf11)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("low_data_rate_optimize = false")));
        let forced = Modulation {
            low_data_rate_optimize: Some(false),
            ..m
        };
        assert!(check_modulation(ChipFamily::Sx126x, &forced).is_err());
        let sf5 = Modulation {
            spreading_factor: 5,
            ..sf7
        };
        assert!(check_modulation(ChipFamily::Sx127x, &sf5).is_err());
        assert!(check_modulation(ChipFamily::Sx126x, &sf5).is_ok());
    }

    #[test]
    fn phy_errors_name_the_device_and_step() {
        let e = phy_error("sx1262 spi0.0", "transmitting", PhyError::SPI).to_string();
        assert_eq!(e, "sx1262 spi0.0: transmitting: SPI transfer failed");
    }

    /// A blocking SpiDevice that records what it was asked to do.
    #[derive(Debug, Default, Clone)]
    struct RecordingSpi {
        log: Arc<Mutex<Vec<String>>>,
    }

    impl embedded_hal::spi::ErrorType for RecordingSpi {
        type Error = Infallible;
    }

    impl embedded_hal::spi::SpiDevice<u8> for RecordingSpi {
        fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.push("begin".into());
            for op in operations.iter_mut() {
                match op {
                    Operation::Write(w) => log.push(format!("write {w:02x?}")),
                    Operation::Read(r) => {
                        r.fill(0xa5);
                        log.push(format!("read {}", r.len()));
                    }
                    Operation::Transfer(r, w) => {
                        r.fill(0x5a);
                        log.push(format!("transfer {w:02x?}"));
                    }
                    Operation::TransferInPlace(b) => log.push(format!("in place {b:02x?}")),
                    Operation::DelayNs(ns) => log.push(format!("delay {ns}")),
                }
            }
            log.push("end".into());
            Ok(())
        }
    }

    #[tokio::test]
    async fn blocking_spi_passes_whole_transactions_through() {
        use embedded_hal_async::spi::SpiDevice as _;
        let inner = RecordingSpi::default();
        let mut spi = BlockingSpi(inner.clone());
        let mut read = [0u8; 2];
        let mut ops = [
            Operation::Write(&[0x42]),
            Operation::Read(&mut read),
            Operation::DelayNs(100),
        ];
        let r = spi.transaction(&mut ops).await;
        assert!(r.is_ok());
        assert_eq!(read, [0xa5, 0xa5]);
        spi.write(&[0x81, 0x01]).await.ok();
        let log = inner.log.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(
            log,
            [
                "begin",
                "write [42]",
                "read 2",
                "delay 100",
                "end",
                "begin",
                "write [81, 01]",
                "end"
            ]
        );
    }

    /// An input pin another task can flip.
    #[derive(Debug, Clone, Default)]
    struct SharedPin(Arc<AtomicBool>);

    impl SharedPin {
        fn set(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    impl embedded_hal::digital::ErrorType for SharedPin {
        type Error = Infallible;
    }

    impl InputPin for SharedPin {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            Ok(self.0.load(Ordering::SeqCst))
        }

        fn is_low(&mut self) -> Result<bool, Infallible> {
            Ok(!self.0.load(Ordering::SeqCst))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polled_wait_sees_a_pin_flipped_by_another_task() {
        let pin = SharedPin::default();
        let flipper = pin.clone();
        let mut wait = PolledWait::new(pin.clone());
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            flipper.set(true);
        });
        assert!(wait.wait_for_high().await.is_ok());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited <= Duration::from_millis(252),
            "{waited:?}"
        );
        // Already high: no wait.
        let t = tokio::time::Instant::now();
        assert!(wait.wait_for_high().await.is_ok());
        assert_eq!(t.elapsed(), Duration::ZERO);

        let flipper = pin.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            flipper.set(false);
            tokio::time::sleep(Duration::from_millis(10)).await;
            flipper.set(true);
        });
        assert!(wait.wait_for_rising_edge().await.is_ok());
        assert!(start.elapsed() >= Duration::from_millis(270));

        let flipper = pin.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            flipper.set(false);
        });
        assert!(wait.wait_for_any_edge().await.is_ok());
        assert!(pin.clone().is_low().unwrap_or(false));
    }

    #[tokio::test(start_paused = true)]
    async fn polled_wait_can_be_given_up() {
        let mut wait = PolledWait::new(SharedPin::default());
        let r = tokio::time::timeout(Duration::from_secs(1), wait.wait_for_high()).await;
        assert!(r.is_err(), "never went high");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_delay_sleeps() {
        use embedded_hal_async::delay::DelayNs as _;
        let start = tokio::time::Instant::now();
        TokioDelay.delay_ms(10).await;
        TokioDelay.delay_us(2_000).await;
        assert!(start.elapsed() >= Duration::from_millis(12));
    }

    /// Enough of an SX127x's register file for lora-phy to init, send and receive.
    #[derive(Debug, Default)]
    struct FakeChip {
        registers: HashMap<u8, u8>,
        fifo_written: Vec<u8>,
        rx_payload: Vec<u8>,
        irq_flags: u8,
    }

    #[derive(Debug, Clone, Default)]
    struct FakeSx127x(Arc<Mutex<FakeChip>>);

    impl embedded_hal::spi::ErrorType for FakeSx127x {
        type Error = Infallible;
    }

    impl embedded_hal::spi::SpiDevice<u8> for FakeSx127x {
        fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
            let mut chip = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let mut address: Option<(u8, bool)> = None;
            for op in operations.iter_mut() {
                match op {
                    Operation::Write(bytes) => {
                        let mut bytes = bytes.iter().copied();
                        if address.is_none()
                            && let Some(first) = bytes.next()
                        {
                            address = Some((first & 0x7f, first & 0x80 != 0));
                        }
                        for b in bytes {
                            match address {
                                Some((0x00, true)) => chip.fifo_written.push(b),
                                Some((reg, true)) => {
                                    if reg == 0x12 {
                                        chip.irq_flags &= !b; // write 1 to clear
                                    } else {
                                        chip.registers.insert(reg, b);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Operation::Read(buf) => {
                        let reg = address.map(|(r, _)| r).unwrap_or(0);
                        for (i, b) in buf.iter_mut().enumerate() {
                            *b = match reg {
                                0x00 => chip.rx_payload.get(i).copied().unwrap_or(0),
                                0x12 => chip.irq_flags,
                                0x13 => chip.rx_payload.len() as u8,
                                0x19 => 40,   // SNR 10 dB (quarter dB)
                                0x1a => 100,  // packet RSSI register
                                0x42 => 0x12, // version
                                r => chip.registers.get(&r).copied().unwrap_or(0),
                            };
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    #[test]
    fn probing_finds_the_chip_or_says_nothing_answers() {
        let mut chip = FakeSx127x::default();
        assert_eq!(probe_sx127x(&mut chip, "sx1276 spi0.0").ok(), Some(0x12));
        let mut nothing = RecordingSpi::default(); // reads 0xa5…
        assert!(probe_sx127x(&mut nothing, "x").is_ok());
        let mut floating = FloatingSpi;
        let err = probe_sx127x(&mut floating, "sx1276 spi0.0")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("sx1276 spi0.0: no chip answers") && e.contains("0xff"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probing_an_sx126x_waits_for_busy() {
        let busy = SharedPin::default();
        busy.set(true);
        let mut floating = FloatingSpi;
        let mut pin = busy.clone();
        let err = probe_sx126x(&mut floating, &mut pin, "sx1262 spi0.0").await;
        assert!(err.is_err_and(|e| e.to_string().contains("BUSY stayed high")));
        busy.set(false);
        let err = probe_sx126x(&mut floating, &mut pin, "sx1262 spi0.0").await;
        assert!(err.is_err_and(|e| e.to_string().contains("no chip answers")));
        let mut chip = RecordingSpi::default();
        assert_eq!(
            probe_sx126x(&mut chip, &mut pin, "x").await.ok(),
            Some(0xa5)
        );
    }

    /// SPI with nothing on it: MISO pulled high.
    #[derive(Debug)]
    struct FloatingSpi;

    impl embedded_hal::spi::ErrorType for FloatingSpi {
        type Error = Infallible;
    }

    impl embedded_hal::spi::SpiDevice<u8> for FloatingSpi {
        fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
            for op in operations.iter_mut() {
                if let Operation::Read(r) = op {
                    r.fill(0xff);
                }
            }
            Ok(())
        }
    }

    async fn fake_radio(
        dio0: SharedPin,
    ) -> (
        FakeSx127x,
        Result<Sx127xRadio<FakeSx127x, NoPin, SharedPin>, RadioError>,
    ) {
        let spi = FakeSx127x::default();
        let radio = open_sx127x(
            spi.clone(),
            NoPin,
            dio0,
            Sx127xOptions::default(),
            settings(),
        )
        .await;
        (spi, radio)
    }

    fn assert_radio<R: Radio>(_: &R) {}

    #[tokio::test(start_paused = true)]
    async fn transmits_through_lora_phy_on_a_fake_sx1276() {
        let dio0 = SharedPin::default();
        let (chip, radio) = fake_radio(dio0.clone()).await;
        let Ok(mut radio) = radio else {
            panic!("open: {:?}", radio.err());
        };
        assert_radio(&radio);
        assert_eq!(radio.describe(), "sx1276 spi0.0");
        // TxDone raised a little after the transmission starts.
        let irq = chip.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            irq.0.lock().unwrap_or_else(|e| e.into_inner()).irq_flags = 0x08;
            dio0.set(true);
        });
        let r = radio.transmit(b"hello nodewatch").await;
        assert!(r.is_ok(), "{r:?}");
        let written = chip
            .0
            .lock()
            .map(|c| c.fifo_written.clone())
            .unwrap_or_default();
        assert_eq!(written, b"hello nodewatch");
        assert!(matches!(
            radio.transmit(&[0; 256]).await,
            Err(RadioError::TooLong { len: 256, max: 255 })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_tx_done_interrupt_is_an_error_naming_the_pin() {
        let (_chip, radio) = fake_radio(SharedPin::default()).await;
        let Ok(mut radio) = radio else {
            panic!("open: {:?}", radio.err());
        };
        let err = radio.transmit(b"x").await.err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no TxDone") && e.contains("irq_gpio")));
    }

    #[tokio::test(start_paused = true)]
    async fn receives_with_rssi_and_snr_and_times_out() {
        let dio0 = SharedPin::default();
        let (chip, radio) = fake_radio(dio0.clone()).await;
        let Ok(mut radio) = radio else {
            panic!("open: {:?}", radio.err());
        };
        let nothing = radio.receive(Duration::from_secs(3)).await;
        assert!(matches!(nothing, Ok(None)), "{nothing:?}");

        {
            let mut c = chip.0.lock().unwrap_or_else(|e| e.into_inner());
            c.rx_payload = vec![1, 2, 3, 4];
            c.irq_flags = 0x40; // RxDone
        }
        dio0.set(true);
        let got = radio.receive(Duration::from_secs(3)).await;
        let Ok(Some(got)) = got else {
            panic!("{got:?}");
        };
        assert_eq!(got.bytes, [1, 2, 3, 4]);
        assert_eq!(got.snr_db, Some(10.0));
        assert!(got.rssi_dbm.is_some_and(|r| r < 0.0));
    }
}
