//! SX127x (RFM95W, Dragino and Adafruit HATs) and SX126x (SX1262/SX1261 modules) over
//! SPI, through the maintained `lora-phy` driver (async, embedded-hal-async 1.0).
//!
//! The driver is async; the Pi's SPI and GPIO (rppal, at the agent's edge) are blocking
//! embedded-hal 1.0 parts. Three small adapters bridge them (`hal.rs`):
//!
//! - [`BlockingSpi`]: a blocking `SpiDevice` as an async one. A register access is a
//!   few bytes at 2 MHz (microseconds), so running it inline on the runtime is cheaper
//!   than a thread hop, and it never yields half way through a transaction.
//! - [`PolledWait`]: an `InputPin` (DIO0 / DIO1 / BUSY) as an async `Wait`, polled
//!   about every millisecond with `tokio::time::sleep` (no GPIO interrupts needed).
//! - [`TokioDelay`]: `DelayNs` on tokio's timer.
//!
//! [`Sx12xxRadio`] drives either chip family with the frequency, power and
//! [`Modulation`] of the config, and implements [`Radio`] once for both
//! ([`Sx127xRadio`] and [`Sx126xRadio`] name it by the chip it was opened for). It
//! holds lora-phy's `LoRa` for the one family it was opened with, and every step
//! (open, transmit, receive) is written once, generic over lora-phy's chip kind. The
//! radio is not itself generic over the chip kind because lora-phy's trait has `async
//! fn`s with no `Send` bound: their futures are `Send` only for a concrete chip, so
//! the one [`Radio`] impl matches on the family and calls the shared step with it.
//!
//! Both ends use the private-network sync word (0x12 / 0x1424): nodewatch's radios
//! talk to each other, not to LoRaWAN. lora-phy chooses low-data-rate optimisation
//! itself; [`ldro_of`] says what it chooses, and a [`Modulation`] asking for something
//! else is refused rather than silently mismatched (both ends must agree;
//! `modulation.rs`). [`probe_sx127x`] and [`probe_sx126x`] check that a chip answers
//! before lora-phy takes over (`probe.rs`).
//!
//! Cancellation: [`Radio::receive`] stops at its timeout. With [`BlockingSpi`] the
//! driver only yields while waiting for an interrupt, BUSY or a delay, never inside a
//! register access, so dropping it there leaves the chip in a state the next
//! `prepare_for_tx` / `prepare_for_rx` resets.

use std::time::Duration;

use embedded_hal::digital::{InputPin, OutputPin};
use embedded_hal::spi::SpiDevice;
use lora_phy::mod_params::{ModulationParams, PacketParams, RadioError as PhyError};
use lora_phy::mod_traits::RadioKind;
use lora_phy::sx126x::{self, Sx126x, Sx126xVariant};
use lora_phy::sx127x::{self, Sx127x, Sx1276};
use lora_phy::{LoRa, RxMode};

use super::{Radio, RadioError, Received};
use crate::airtime::{Modulation, time_on_air};

mod hal;
mod modulation;
mod probe;
#[cfg(test)]
mod tests;

pub use hal::{BlockingSpi, NoPin, POLL_INTERVAL, PolledWait, TokioDelay};
pub use modulation::{
    ChipFamily, bandwidth, check_modulation, coding_rate, ldro_of, spreading_factor, tcxo_voltage,
};
pub use probe::{probe_sx126x, probe_sx127x};

/// The largest LoRa payload the chips' FIFOs take.
pub const MAX_PAYLOAD: usize = 255;

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

/// The SX127x as lora-phy's radio kind, on blocking parts: `S` the SPI device, `O`
/// the reset pin, `I` DIO0.
pub type Sx127xKind<S, O, I> =
    Sx127x<BlockingSpi<S>, lora_phy::iv::GenericSx127xInterfaceVariant<O, PolledWait<I>>, Sx1276>;

/// The SX126x as lora-phy's radio kind, on blocking parts: `S` the SPI device, `O`
/// the reset pin, `I` DIO1 and BUSY.
pub type Sx126xKind<S, O, I> = Sx126x<
    BlockingSpi<S>,
    lora_phy::iv::GenericSx126xInterfaceVariant<O, PolledWait<I>>,
    Sx126xChip,
>;

/// lora-phy's driver for the chip family the radio was opened with.
enum Driver<S, O, I>
where
    S: SpiDevice<u8>,
    O: OutputPin,
    I: InputPin,
{
    Sx127x(LoRa<Sx127xKind<S, O, I>, TokioDelay>),
    Sx126x(LoRa<Sx126xKind<S, O, I>, TokioDelay>),
}

/// An SX127x or SX126x driven by lora-phy, with the settings of the config: `S` the
/// SPI device, `O` the reset pin, `I` the interrupt (and, on an SX126x, BUSY) pins.
/// Opened by [`open_sx127x`] or [`open_sx126x`].
pub struct Sx12xxRadio<S, O, I>
where
    S: SpiDevice<u8>,
    O: OutputPin,
    I: InputPin,
{
    driver: Driver<S, O, I>,
    link: Link,
}

/// An SX1276/77/78/79 (RFM95W/96W/98W) radio.
pub type Sx127xRadio<S, O, I> = Sx12xxRadio<S, O, I>;

/// An SX1262/SX1261 radio.
pub type Sx126xRadio<S, O, I> = Sx12xxRadio<S, O, I>;

impl<S, O, I> std::fmt::Debug for Sx12xxRadio<S, O, I>
where
    S: SpiDevice<u8>,
    O: OutputPin,
    I: InputPin,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sx12xxRadio")
            .field("settings", &self.link.settings)
            .finish_non_exhaustive()
    }
}

impl<S, O, I> Radio for Sx12xxRadio<S, O, I>
where
    S: SpiDevice<u8> + Send,
    O: OutputPin + Send,
    I: InputPin + Send,
{
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        match &mut self.driver {
            Driver::Sx127x(lora) => self.link.transmit(lora, frame).await,
            Driver::Sx126x(lora) => self.link.transmit(lora, frame).await,
        }
    }

    async fn receive(&mut self, timeout: Duration) -> Result<Option<Received>, RadioError> {
        match &mut self.driver {
            Driver::Sx127x(lora) => self.link.receive(lora, timeout).await,
            Driver::Sx126x(lora) => self.link.receive(lora, timeout).await,
        }
    }

    fn describe(&self) -> String {
        self.link.settings.name.clone()
    }
}

/// What lora-phy was told when the chip was opened, and the receive buffer: every
/// step on the air, written once for any lora-phy chip kind.
struct Link {
    settings: Sx12xxSettings,
    modulation_params: ModulationParams,
    tx_params: PacketParams,
    rx_params: PacketParams,
    buffer: [u8; MAX_PAYLOAD],
}

impl Link {
    /// Resets and initialises the chip (lora-phy's `LoRa::new`) and prepares the
    /// modulation and packet parameters. The modulation should have been checked with
    /// [`check_modulation`] for the chip family.
    async fn open<RK: RadioKind>(
        radio_kind: RK,
        settings: Sx12xxSettings,
    ) -> Result<(LoRa<RK, TokioDelay>, Self), RadioError> {
        let m = settings.modulation;
        let sf = spreading_factor(m.spreading_factor)?;
        let bw = bandwidth(m.bandwidth_hz)?;
        let cr = coding_rate(m.coding_rate_denominator)?;
        let name = settings.name.clone();
        let mut lora = LoRa::new(radio_kind, false, TokioDelay)
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
        let link = Self {
            settings,
            modulation_params,
            tx_params,
            rx_params,
            buffer: [0; MAX_PAYLOAD],
        };
        Ok((lora, link))
    }

    /// How long a transmit may take before the missing TxDone interrupt is an error.
    fn tx_deadline(&self, len: usize) -> Duration {
        time_on_air(&self.settings.modulation, len) * 2 + Duration::from_secs(1)
    }

    /// Sends one frame ([`Radio::transmit`]).
    async fn transmit<RK: RadioKind>(
        &mut self,
        lora: &mut LoRa<RK, TokioDelay>,
        frame: &[u8],
    ) -> Result<(), RadioError> {
        if frame.len() > MAX_PAYLOAD {
            return Err(RadioError::TooLong {
                len: frame.len(),
                max: MAX_PAYLOAD,
            });
        }
        let deadline = self.tx_deadline(frame.len());
        let name = &self.settings.name;
        lora.prepare_for_tx(
            &self.modulation_params,
            &mut self.tx_params,
            self.settings.tx_power_dbm,
            frame,
        )
        .await
        .map_err(|e| phy_error(name, "preparing to transmit", e))?;
        match tokio::time::timeout(deadline, lora.tx()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(phy_error(name, "transmitting", e)),
            Err(_) => Err(RadioError::Device(format!(
                "{name}: no TxDone interrupt within {} ms; check the interrupt pin (irq_gpio: \
                 DIO0 on SX127x, DIO1 on SX126x)",
                deadline.as_millis()
            ))),
        }
    }

    /// Listens for up to `timeout` ([`Radio::receive`]).
    async fn receive<RK: RadioKind>(
        &mut self,
        lora: &mut LoRa<RK, TokioDelay>,
        timeout: Duration,
    ) -> Result<Option<Received>, RadioError> {
        let name = &self.settings.name;
        lora.prepare_for_rx(RxMode::Continuous, &self.modulation_params, &self.rx_params)
            .await
            .map_err(|e| phy_error(name, "preparing to receive", e))?;
        match tokio::time::timeout(timeout, lora.rx(&self.rx_params, &mut self.buffer)).await {
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
}

// ---------------------------------------------------------------------------------
// The concrete chips
// ---------------------------------------------------------------------------------

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
    let (lora, link) = Link::open(kind, settings).await?;
    Ok(Sx12xxRadio {
        driver: Driver::Sx127x(lora),
        link,
    })
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
    let (lora, link) = Link::open(kind, settings).await?;
    Ok(Sx12xxRadio {
        driver: Driver::Sx126x(lora),
        link,
    })
}
