//! The LoRa radio at the agent's edge: the `[lora.radio]` section, and opening the
//! radio it names. SPI through rppal (`/dev/spidevB.C`), the GPIO pins through
//! [`crate::outputs::gpio`] (`/dev/gpiochipN`); the radios themselves
//! (`nodewatch_lora::radio`) are generic over embedded-hal and tokio's I/O traits.
//!
//! - `udp`: the simulated air over UDP (loopback; development and tests). Default.
//! - `sx127x`: an SX1276/77/78/79 (RFM95W, Dragino or Adafruit HATs) on SPI, with
//!   reset and DIO0 on GPIOs.
//! - `sx126x`: an SX1262/SX1261 module on SPI, with reset, DIO1 and BUSY on GPIOs.
//! - `ebyte`: an Ebyte E22/E220 module (or a HAT built on one) in transparent mode on
//!   a UART, with AUX, M0 and M1 optionally on GPIOs.
//!
//! The modulation is a sub-table, `[lora.radio.modulation]` (see
//! [`nodewatch_lora::airtime::Modulation`]); `docs/lora-wiring.md` has the wiring and
//! a config for each kind.

use std::net::SocketAddr;
use std::time::Duration;

use nodewatch_lora::airtime::Modulation;
use nodewatch_lora::radio::udp::UdpAir;
use nodewatch_lora::radio::{Radio, RadioError, Received};
use serde::Deserialize;

/// Which radio `[lora.radio]` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RadioKind {
    /// The simulated air over UDP.
    #[default]
    Udp,
    /// SX1276/77/78/79 over SPI.
    Sx127x,
    /// SX1262/SX1261 over SPI.
    Sx126x,
    /// Ebyte E22/E220 over a UART, transparent mode.
    Ebyte,
}

impl RadioKind {
    fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Sx127x => "sx127x",
            Self::Sx126x => "sx126x",
            Self::Ebyte => "ebyte",
        }
    }
}

/// Which SX126x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sx126xModel {
    /// SX1262: high-power PA, −9 … 22 dBm. Most modules and HATs.
    #[default]
    Sx1262,
    /// SX1261: low-power PA, −17 … 15 dBm.
    Sx1261,
}

/// The `[lora.radio]` section. Defaults: the simulated UDP air on loopback; for the
/// SPI kinds a hand-wired module on SPI0 CE0 with reset on BCM 22, the interrupt
/// line (DIO0 / DIO1) on BCM 4 and BUSY on BCM 23; for `ebyte` the Pi's primary UART
/// at 9600 baud (the modules' default), transparent mode.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RadioConfig {
    /// `udp`, `sx127x`, `sx126x` or `ebyte`. Default `udp`.
    pub kind: RadioKind,
    /// Carrier frequency in Hz. Default 868_100_000 (EU868's first channel).
    pub frequency_hz: u32,
    /// Transmit power in dBm (SPI kinds). Default 14 (EU868's 25 mW ERP with a
    /// 0–2 dBi antenna).
    pub tx_power_dbm: i32,
    /// `[lora.radio.modulation]`: spreading factor, bandwidth, coding rate, …, the same
    /// on every node and gateway. Default SF12, 125 kHz, 4/5.
    pub modulation: Modulation,

    /// UDP: the local address. Default `127.0.0.1:7101`.
    pub udp_bind: String,
    /// UDP: where frames go. Default `["127.0.0.1:7102"]`.
    pub udp_peers: Vec<String>,
    /// UDP: take each frame's airtime as a real radio would. Default false.
    pub simulate_airtime: bool,

    /// SPI bus (`/dev/spidev<bus>.<cs>`). Default 0.
    pub spi_bus: u8,
    /// SPI chip select: 0 = CE0 (BCM 8), 1 = CE1 (BCM 7). Default 0.
    pub spi_chip_select: u8,
    /// A GPIO driven as chip select instead (the Dragino LoRa/GPS HAT wires NSS to
    /// BCM 25). Default none.
    pub spi_cs_gpio: Option<u8>,
    /// SPI clock in Hz. Default 2_000_000 (SX127x take up to 10 MHz, SX126x 16 MHz).
    pub spi_clock_hz: u32,
    /// The chip's reset line (BCM). Default 22.
    pub reset_gpio: u8,
    /// The interrupt line (BCM): DIO0 on SX127x, DIO1 on SX126x. Default 4.
    pub irq_gpio: u8,
    /// The SX126x's BUSY line (BCM). Default 23.
    pub busy_gpio: u8,
    /// SX127x: transmit through PA_BOOST (RFM95W and the common HATs). Default true.
    pub sx127x_pa_boost: bool,
    /// SX126x: `sx1262` or `sx1261`. Default `sx1262`.
    pub sx126x_chip: Sx126xModel,
    /// SX126x: the TCXO's supply on DIO3, in volts (1.6, 1.7, 1.8, 2.2, 2.4, 2.7, 3.0,
    /// 3.3), or 0 for a crystal. Default 1.8 (most SX1262 modules).
    pub sx126x_tcxo_volts: f32,
    /// SX126x: DIO2 drives the antenna switch. Default true.
    pub sx126x_dio2_rf_switch: bool,
    /// SX126x: the module has the DC-DC regulator's inductor. Default true.
    pub sx126x_dcdc: bool,

    /// Ebyte: the UART. Default `/dev/serial0` (the Pi's primary UART, BCM 14/15).
    pub uart_path: String,
    /// Ebyte: the UART's baud rate, as set in the module. Default 9600.
    pub uart_baud: u32,
    /// Ebyte: the module's AUX line (BCM); without it transmit waits the airtime.
    /// Default none.
    pub ebyte_aux_gpio: Option<u8>,
    /// Ebyte: a GPIO wired to M0, driven low (transparent mode). Default none (tied
    /// low).
    pub ebyte_m0_gpio: Option<u8>,
    /// Ebyte: a GPIO wired to M1, driven low (transparent mode). Default none (tied
    /// low).
    pub ebyte_m1_gpio: Option<u8>,
    /// Ebyte: the module appends an RSSI byte to received packets (its "RSSI byte"
    /// option). Default false.
    pub ebyte_rssi_byte: bool,
    /// Ebyte: the module's sub-packet size in bytes. Default 200 (E220; E22: 240).
    pub ebyte_packet_size: usize,
}

impl Default for RadioConfig {
    fn default() -> Self {
        Self {
            kind: RadioKind::Udp,
            frequency_hz: 868_100_000,
            tx_power_dbm: 14,
            modulation: Modulation::default(),
            udp_bind: "127.0.0.1:7101".into(),
            udp_peers: vec!["127.0.0.1:7102".into()],
            simulate_airtime: false,
            spi_bus: 0,
            spi_chip_select: 0,
            spi_cs_gpio: None,
            spi_clock_hz: 2_000_000,
            reset_gpio: 22,
            irq_gpio: 4,
            busy_gpio: 23,
            sx127x_pa_boost: true,
            sx126x_chip: Sx126xModel::Sx1262,
            sx126x_tcxo_volts: 1.8,
            sx126x_dio2_rf_switch: true,
            sx126x_dcdc: true,
            uart_path: "/dev/serial0".into(),
            uart_baud: 9600,
            ebyte_aux_gpio: None,
            ebyte_m0_gpio: None,
            ebyte_m1_gpio: None,
            ebyte_rssi_byte: false,
            ebyte_packet_size: nodewatch_lora::radio::ebyte::DEFAULT_PACKET_SIZE,
        }
    }
}

/// The GPIOs on the 40-pin header (BCM numbering).
const HEADER_GPIOS: std::ops::RangeInclusive<u8> = 0..=27;
/// SPI0's pins (MISO, MOSI, SCLK, CE0, CE1).
const SPI0_GPIOS: [u8; 5] = [9, 10, 11, 8, 7];
/// The primary UART's pins (TXD, RXD).
const UART_GPIOS: [u8; 2] = [14, 15];
/// The UART baud rates the Ebyte modules offer.
const EBYTE_BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200];

impl RadioConfig {
    /// Checks the section: ranges, addresses, pins (on the header, distinct, not the
    /// bus's own). Errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        let kind = self.kind.name();
        if !(137_000_000..=1_020_000_000).contains(&self.frequency_hz) {
            return Err(format!(
                "lora.radio.frequency_hz must be 137–1020 MHz, found {}",
                self.frequency_hz
            ));
        }
        self.modulation
            .validate()
            .map_err(|e| format!("lora.radio.modulation: {e}"))?;
        match self.kind {
            RadioKind::Udp => {
                parse_addr("lora.radio.udp_bind", &self.udp_bind)?;
                if self.udp_peers.is_empty() {
                    return Err("lora.radio.udp_peers: give at least one peer address".into());
                }
                for peer in &self.udp_peers {
                    parse_addr("lora.radio.udp_peers", peer)?;
                }
            }
            RadioKind::Sx127x | RadioKind::Sx126x => {
                use nodewatch_lora::radio::sx12xx::{ChipFamily, check_modulation, tcxo_voltage};
                let family = if self.kind == RadioKind::Sx127x {
                    ChipFamily::Sx127x
                } else {
                    ChipFamily::Sx126x
                };
                check_modulation(family, &self.modulation)
                    .map_err(|e| format!("lora.radio ({kind}): {e}"))?;
                let (lo, hi) = match (self.kind, self.sx126x_chip) {
                    (RadioKind::Sx127x, _) if self.sx127x_pa_boost => (2, 20),
                    (RadioKind::Sx127x, _) => (-4, 14),
                    (_, Sx126xModel::Sx1262) => (-9, 22),
                    (_, Sx126xModel::Sx1261) => (-17, 15),
                };
                if !(lo..=hi).contains(&self.tx_power_dbm) {
                    return Err(format!(
                        "lora.radio.tx_power_dbm must be {lo}…{hi} dBm for this {kind}, found {}",
                        self.tx_power_dbm
                    ));
                }
                if self.spi_bus > 6 {
                    return Err(format!(
                        "lora.radio.spi_bus must be 0–6, found {}",
                        self.spi_bus
                    ));
                }
                if self.spi_chip_select > 2 {
                    return Err(format!(
                        "lora.radio.spi_chip_select must be 0–2, found {}",
                        self.spi_chip_select
                    ));
                }
                let max_clock = if self.kind == RadioKind::Sx127x {
                    10_000_000
                } else {
                    16_000_000
                };
                if !(100_000..=max_clock).contains(&self.spi_clock_hz) {
                    return Err(format!(
                        "lora.radio.spi_clock_hz must be 100 kHz … {} MHz for this {kind}, found {}",
                        max_clock / 1_000_000,
                        self.spi_clock_hz
                    ));
                }
                if self.kind == RadioKind::Sx126x && self.sx126x_tcxo_volts != 0.0 {
                    tcxo_voltage(self.sx126x_tcxo_volts).map_err(|e| format!("lora.radio.{e}"))?;
                }
                let mut pins = vec![("reset_gpio", self.reset_gpio), ("irq_gpio", self.irq_gpio)];
                if self.kind == RadioKind::Sx126x {
                    pins.push(("busy_gpio", self.busy_gpio));
                }
                if let Some(cs) = self.spi_cs_gpio {
                    pins.push(("spi_cs_gpio", cs));
                }
                let reserved: &[u8] = if self.spi_bus == 0 { &SPI0_GPIOS } else { &[] };
                check_pins(&pins, reserved, "SPI0")?;
            }
            RadioKind::Ebyte => {
                if self.uart_path.trim().is_empty() {
                    return Err("lora.radio.uart_path must name the UART device".into());
                }
                if !EBYTE_BAUDS.contains(&self.uart_baud) {
                    return Err(format!(
                        "lora.radio.uart_baud must be one the modules offer ({}), found {}",
                        EBYTE_BAUDS.map(|b| b.to_string()).join(", "),
                        self.uart_baud
                    ));
                }
                if !(1..=240).contains(&self.ebyte_packet_size) {
                    return Err(format!(
                        "lora.radio.ebyte_packet_size must be 1–240 bytes, found {}",
                        self.ebyte_packet_size
                    ));
                }
                let pins: Vec<(&str, u8)> = [
                    ("ebyte_aux_gpio", self.ebyte_aux_gpio),
                    ("ebyte_m0_gpio", self.ebyte_m0_gpio),
                    ("ebyte_m1_gpio", self.ebyte_m1_gpio),
                ]
                .into_iter()
                .filter_map(|(name, pin)| Some((name, pin?)))
                .collect();
                check_pins(&pins, &UART_GPIOS, "the UART")?;
            }
        }
        Ok(())
    }
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{field}: {text:?} is not an address like 127.0.0.1:7101 ({e})"))
}

/// Pins on the header, distinct, and not among `reserved` (the bus's own).
fn check_pins(pins: &[(&str, u8)], reserved: &[u8], bus: &str) -> Result<(), String> {
    for (i, (name, pin)) in pins.iter().enumerate() {
        if !HEADER_GPIOS.contains(pin) {
            return Err(format!(
                "lora.radio.{name} must be a BCM GPIO 0–27, found {pin}"
            ));
        }
        if reserved.contains(pin) {
            return Err(format!(
                "lora.radio.{name} = {pin} is one of {bus}'s own pins"
            ));
        }
        if let Some((other, _)) = pins[..i].iter().find(|(_, p)| p == pin) {
            return Err(format!(
                "lora.radio.{name} and lora.radio.{other} are both GPIO {pin}"
            ));
        }
    }
    Ok(())
}

/// Whichever radio the config names.
#[derive(Debug)]
pub enum AnyRadio {
    /// The simulated air.
    Udp(UdpAir),
    /// SX1276/77/78/79 on the Pi's SPI and GPIO.
    #[cfg(target_os = "linux")]
    Sx127x(Box<pi::PiSx127x>),
    /// SX1262/SX1261 on the Pi's SPI and GPIO.
    #[cfg(target_os = "linux")]
    Sx126x(Box<pi::PiSx126x>),
    /// An Ebyte module on a UART.
    #[cfg(target_os = "linux")]
    Ebyte(Box<pi::PiEbyte>),
}

impl Radio for AnyRadio {
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        match self {
            Self::Udp(r) => r.transmit(frame).await,
            #[cfg(target_os = "linux")]
            Self::Sx127x(r) => r.transmit(frame).await,
            #[cfg(target_os = "linux")]
            Self::Sx126x(r) => r.transmit(frame).await,
            #[cfg(target_os = "linux")]
            Self::Ebyte(r) => r.radio.transmit(frame).await,
        }
    }

    async fn receive(&mut self, timeout: Duration) -> Result<Option<Received>, RadioError> {
        match self {
            Self::Udp(r) => r.receive(timeout).await,
            #[cfg(target_os = "linux")]
            Self::Sx127x(r) => r.receive(timeout).await,
            #[cfg(target_os = "linux")]
            Self::Sx126x(r) => r.receive(timeout).await,
            #[cfg(target_os = "linux")]
            Self::Ebyte(r) => r.radio.receive(timeout).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Udp(r) => r.describe(),
            #[cfg(target_os = "linux")]
            Self::Sx127x(r) => r.describe(),
            #[cfg(target_os = "linux")]
            Self::Sx126x(r) => r.describe(),
            #[cfg(target_os = "linux")]
            Self::Ebyte(r) => r.radio.describe(),
        }
    }
}

/// Opens the radio `config` names (after [`RadioConfig::validate`]). `Err` says which
/// device failed and why (`sx127x: cannot open SPI bus 0 CS 0: …`); on a machine that
/// is not a Pi the SPI and UART kinds fail here, never panic.
pub async fn open(config: &RadioConfig) -> Result<AnyRadio, String> {
    config.validate()?;
    match config.kind {
        RadioKind::Udp => {
            let local = parse_addr("lora.radio.udp_bind", &config.udp_bind)?;
            let peers = config
                .udp_peers
                .iter()
                .map(|p| parse_addr("lora.radio.udp_peers", p))
                .collect::<Result<Vec<_>, _>>()?;
            let air = UdpAir::bind(local, peers)
                .await
                .map_err(|e| format!("udp: cannot bind {local}: {e}"))?;
            let air = if config.simulate_airtime {
                air.with_airtime(config.modulation)
            } else {
                air
            };
            Ok(AnyRadio::Udp(air))
        }
        #[cfg(target_os = "linux")]
        RadioKind::Sx127x => pi::open_sx127x(config)
            .await
            .map(|r| AnyRadio::Sx127x(Box::new(r))),
        #[cfg(target_os = "linux")]
        RadioKind::Sx126x => pi::open_sx126x(config)
            .await
            .map(|r| AnyRadio::Sx126x(Box::new(r))),
        #[cfg(target_os = "linux")]
        RadioKind::Ebyte => pi::open_ebyte(config)
            .await
            .map(|r| AnyRadio::Ebyte(Box::new(r))),
        #[cfg(not(target_os = "linux"))]
        other => Err(format!(
            "{}: SPI and UART radios are only supported on Linux",
            other.name()
        )),
    }
}

/// The Pi's side: rppal's SPI, the GPIO character device, tokio-serial's UART.
#[cfg(target_os = "linux")]
mod pi {
    use std::time::Duration;

    use embedded_hal::digital::OutputPin as _;
    use nodewatch_lora::radio::ebyte::{EbyteRadio, EbyteSettings};
    use nodewatch_lora::radio::sx12xx::{
        self, Sx12xxSettings, Sx126xChip, Sx126xOptions, Sx126xRadio, Sx127xOptions, Sx127xRadio,
    };
    use rppal::spi::{Bus, Mode, SimpleHalSpiDevice, SlaveSelect, Spi};

    use super::{RadioConfig, Sx126xModel};
    use crate::outputs::gpio::{Gpio, InputLine, OutputLine, Pull};

    /// The SPI device: the controller's own chip select, or a GPIO driven around each
    /// transaction.
    pub struct PiSpi {
        inner: SimpleHalSpiDevice,
        cs: Option<OutputLine>,
        cs_gpio: Option<u8>,
    }

    impl std::fmt::Debug for PiSpi {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PiSpi")
                .field("cs_gpio", &self.cs_gpio)
                .finish_non_exhaustive()
        }
    }

    fn cs_error(e: crate::outputs::gpio::LineError) -> rppal::spi::Error {
        rppal::spi::Error::Io(std::io::Error::other(format!("chip select: {e}")))
    }

    impl embedded_hal::spi::ErrorType for PiSpi {
        type Error = rppal::spi::Error;
    }

    impl embedded_hal::spi::SpiDevice<u8> for PiSpi {
        fn transaction(
            &mut self,
            operations: &mut [embedded_hal::spi::Operation<'_, u8>],
        ) -> Result<(), rppal::spi::Error> {
            if let Some(cs) = self.cs.as_mut() {
                cs.set_low().map_err(cs_error)?;
            }
            let result = self.inner.transaction(operations);
            if let Some(cs) = self.cs.as_mut() {
                cs.set_high().map_err(cs_error)?;
            }
            result
        }
    }

    /// An SX127x on the Pi.
    pub type PiSx127x = Sx127xRadio<PiSpi, OutputLine, InputLine>;
    /// An SX126x on the Pi.
    pub type PiSx126x = Sx126xRadio<PiSpi, OutputLine, InputLine>;

    /// An Ebyte module on the Pi's UART, holding its M0/M1 pins low.
    #[derive(Debug)]
    pub struct PiEbyte {
        /// The radio.
        pub radio: EbyteRadio<tokio_serial::SerialStream, InputLine>,
        _mode_pins: Vec<OutputLine>,
    }

    fn spi_name(config: &RadioConfig) -> String {
        match config.spi_cs_gpio {
            Some(cs) => format!("spi{} cs GPIO{cs}", config.spi_bus),
            None => format!("spi{}.{}", config.spi_bus, config.spi_chip_select),
        }
    }

    fn open_spi(config: &RadioConfig, device: &str, gpio: &Gpio) -> Result<PiSpi, String> {
        let bus = match config.spi_bus {
            0 => Bus::Spi0,
            1 => Bus::Spi1,
            2 => Bus::Spi2,
            3 => Bus::Spi3,
            4 => Bus::Spi4,
            5 => Bus::Spi5,
            _ => Bus::Spi6,
        };
        let ss = match config.spi_chip_select {
            0 => SlaveSelect::Ss0,
            1 => SlaveSelect::Ss1,
            _ => SlaveSelect::Ss2,
        };
        let spi = Spi::new(bus, ss, config.spi_clock_hz, Mode::Mode0).map_err(|e| {
            format!(
                "{device}: cannot open SPI bus {} CS {} (/dev/spidev{}.{}; is dtparam=spi=on \
                 set?): {e}",
                config.spi_bus, config.spi_chip_select, config.spi_bus, config.spi_chip_select
            )
        })?;
        let cs = match config.spi_cs_gpio {
            Some(pin) => Some(output(gpio, device, "spi_cs_gpio", pin)?),
            None => None,
        };
        Ok(PiSpi {
            inner: SimpleHalSpiDevice::new(spi),
            cs,
            cs_gpio: config.spi_cs_gpio,
        })
    }

    /// The machine's GPIO chips (a radio on SPI or with pins needs them).
    fn open_gpio() -> Gpio {
        Gpio::scan()
    }

    fn no_line(device: &str, field: &str, pin: u8) -> String {
        format!(
            "{device}: {field} GPIO {pin}: no GPIO line GPIO{pin} on this machine (not a Raspberry Pi?)"
        )
    }

    /// An output at `high` (reset and chip select idle high: they are active low).
    fn output_at(
        gpio: &Gpio,
        device: &str,
        field: &str,
        pin: u8,
        high: bool,
    ) -> Result<OutputLine, String> {
        gpio.output(&format!("nodewatch-{device}"), pin, high)
            .map_err(|e| format!("{device}: {field} GPIO {pin}: {e}"))?
            .ok_or_else(|| no_line(device, field, pin))
    }

    /// An output, idle high (reset and chip select are active low).
    fn output(gpio: &Gpio, device: &str, field: &str, pin: u8) -> Result<OutputLine, String> {
        output_at(gpio, device, field, pin, true)
    }

    fn input(
        gpio: &Gpio,
        device: &str,
        field: &str,
        pin: u8,
        pull_down: bool,
    ) -> Result<InputLine, String> {
        let pull = if pull_down { Pull::Down } else { Pull::None };
        gpio.input(&format!("nodewatch-{device}"), pin, pull)
            .map_err(|e| format!("{device}: {field} GPIO {pin}: {e}"))?
            .ok_or_else(|| no_line(device, field, pin))
    }

    fn settings(config: &RadioConfig, name: String) -> Sx12xxSettings {
        Sx12xxSettings {
            name,
            frequency_hz: config.frequency_hz,
            tx_power_dbm: config.tx_power_dbm,
            modulation: config.modulation,
        }
    }

    /// Releases reset (a pulse first, so a chip left mid-command by an earlier run
    /// starts clean) and waits for the chip to boot.
    async fn pulse_reset(reset: &mut OutputLine) -> Result<(), String> {
        reset.set_low().map_err(|e| format!("reset: {e}"))?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        reset.set_high().map_err(|e| format!("reset: {e}"))?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    }

    pub async fn open_sx127x(config: &RadioConfig) -> Result<PiSx127x, String> {
        let name = format!("sx1276 {}", spi_name(config));
        let device = "sx127x";
        let gpio = open_gpio();
        let mut spi = open_spi(config, device, &gpio)?;
        let mut reset = output(&gpio, device, "reset_gpio", config.reset_gpio)?;
        let dio0 = input(&gpio, device, "irq_gpio (DIO0)", config.irq_gpio, true)?;
        pulse_reset(&mut reset)
            .await
            .map_err(|e| format!("{device}: {e}"))?;
        let version = sx12xx::probe_sx127x(&mut spi, &name).map_err(|e| e.to_string())?;
        tracing::debug!(device = name.as_str(), version, "SX127x found.");
        let options = Sx127xOptions {
            pa_boost: config.sx127x_pa_boost,
            tcxo: false,
        };
        sx12xx::open_sx127x(spi, reset, dio0, options, settings(config, name))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn open_sx126x(config: &RadioConfig) -> Result<PiSx126x, String> {
        let chip_name = match config.sx126x_chip {
            Sx126xModel::Sx1262 => "sx1262",
            Sx126xModel::Sx1261 => "sx1261",
        };
        let name = format!("{chip_name} {}", spi_name(config));
        let device = "sx126x";
        let gpio = open_gpio();
        let mut spi = open_spi(config, device, &gpio)?;
        let mut reset = output(&gpio, device, "reset_gpio", config.reset_gpio)?;
        let dio1 = input(&gpio, device, "irq_gpio (DIO1)", config.irq_gpio, true)?;
        let mut busy = input(&gpio, device, "busy_gpio", config.busy_gpio, false)?;
        pulse_reset(&mut reset)
            .await
            .map_err(|e| format!("{device}: {e}"))?;
        let sync = sx12xx::probe_sx126x(&mut spi, &mut busy, &name)
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(
            device = name.as_str(),
            sync_word_msb = sync,
            "SX126x found."
        );
        let options = Sx126xOptions {
            chip: Sx126xChip {
                high_power: config.sx126x_chip == Sx126xModel::Sx1262,
                dio2_rf_switch: config.sx126x_dio2_rf_switch,
            },
            tcxo_volts: (config.sx126x_tcxo_volts != 0.0).then_some(config.sx126x_tcxo_volts),
            use_dcdc: config.sx126x_dcdc,
        };
        sx12xx::open_sx126x(spi, reset, dio1, busy, options, settings(config, name))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn open_ebyte(config: &RadioConfig) -> Result<PiEbyte, String> {
        let device = "ebyte";
        let path = config.uart_path.as_str();
        let needs_gpio = config.ebyte_aux_gpio.is_some()
            || config.ebyte_m0_gpio.is_some()
            || config.ebyte_m1_gpio.is_some();
        let gpio = needs_gpio.then(open_gpio);
        let mut mode_pins = Vec::new();
        let mut aux = None;
        if let Some(gpio) = &gpio {
            for (field, pin) in [
                ("ebyte_m0_gpio", config.ebyte_m0_gpio),
                ("ebyte_m1_gpio", config.ebyte_m1_gpio),
            ] {
                if let Some(pin) = pin {
                    mode_pins.push(output_at(gpio, device, field, pin, false)?);
                }
            }
            if let Some(pin) = config.ebyte_aux_gpio {
                aux = Some(input(gpio, device, "ebyte_aux_gpio", pin, false)?);
            }
            if !mode_pins.is_empty() {
                // The module switches modes once AUX is high, a few ms after M0/M1 change.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let uart = tokio_serial::SerialStream::open(&tokio_serial::new(path, config.uart_baud))
            .map_err(|e| {
                format!(
                    "{device}: cannot open UART {path} at {} baud (enable_uart=1 and no serial \
                     console?): {e}",
                    config.uart_baud
                )
            })?;
        let mut settings = EbyteSettings::new(format!("ebyte {path}"), config.uart_baud);
        settings.packet_size = config.ebyte_packet_size;
        settings.rssi_byte = config.ebyte_rssi_byte;
        settings.modulation = config.modulation;
        Ok(PiEbyte {
            radio: EbyteRadio::with_optional_aux(uart, aux, settings),
            _mode_pins: mode_pins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RadioConfig, String> {
        toml::from_str::<RadioConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_section_is_the_defaults() {
        let config = parse("").expect("parses");
        assert_eq!(config, RadioConfig::default());
        assert_eq!(config.kind, RadioKind::Udp);
        assert_eq!(config.frequency_hz, 868_100_000);
        assert_eq!(config.tx_power_dbm, 14);
        assert_eq!(config.modulation, Modulation::default());
        assert_eq!(config.udp_bind, "127.0.0.1:7101");
        assert_eq!(config.udp_peers, ["127.0.0.1:7102"]);
        assert!(!config.simulate_airtime);
        assert_eq!((config.spi_bus, config.spi_chip_select), (0, 0));
        assert_eq!(config.spi_clock_hz, 2_000_000);
        assert_eq!(
            (config.reset_gpio, config.irq_gpio, config.busy_gpio),
            (22, 4, 23)
        );
        assert_eq!(config.uart_path, "/dev/serial0");
        assert_eq!(config.uart_baud, 9600);
        assert_eq!(config.ebyte_packet_size, 200);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn parses_each_kind_with_a_modulation_sub_table() {
        let config = parse(
            r#"
            kind = "sx126x"
            frequency_hz = 869_525_000
            tx_power_dbm = 22
            reset_gpio = 18
            irq_gpio = 16
            busy_gpio = 20
            sx126x_tcxo_volts = 0
            [modulation]
            spreading_factor = 10
            bandwidth_hz = 250000
            "#,
        )
        .expect("parses");
        assert_eq!(config.kind, RadioKind::Sx126x);
        assert_eq!(config.modulation.spreading_factor, 10);
        assert_eq!(config.modulation.bandwidth_hz, 250_000);
        assert_eq!(
            config.modulation.coding_rate_denominator, 5,
            "rest defaulted"
        );
        assert!(config.validate().is_ok(), "{:?}", config.validate());

        let config = parse(
            r#"
            kind = "ebyte"
            uart_path = "/dev/ttyAMA0"
            uart_baud = 115200
            ebyte_aux_gpio = 25
            ebyte_m0_gpio = 22
            ebyte_m1_gpio = 27
            ebyte_rssi_byte = true
            ebyte_packet_size = 240
            "#,
        )
        .expect("parses");
        assert_eq!(config.kind, RadioKind::Ebyte);
        assert!(config.validate().is_ok(), "{:?}", config.validate());

        let config = parse("kind = \"sx127x\"\nspi_cs_gpio = 25\nreset_gpio = 17").expect("parses");
        assert!(config.validate().is_ok(), "{:?}", config.validate());
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        let err = parse("irq_pin = 4").err().unwrap_or_default();
        assert!(err.contains("irq_pin"), "{err}");
        let err = parse("kind = \"rfm69\"").err().unwrap_or_default();
        assert!(err.contains("rfm69"), "{err}");
        let err = parse("[modulation]\nsf = 12").err().unwrap_or_default();
        assert!(err.contains("sf"), "{err}");
    }

    fn invalid(edit: impl FnOnce(&mut RadioConfig)) -> String {
        let mut config = RadioConfig::default();
        edit(&mut config);
        config.validate().err().unwrap_or_default()
    }

    #[test]
    fn validation_errors_name_the_field() {
        assert!(invalid(|c| c.udp_bind = "localhost".into()).contains("lora.radio.udp_bind"));
        assert!(invalid(|c| c.udp_peers = vec!["1.2.3.4".into()]).contains("lora.radio.udp_peers"));
        assert!(invalid(|c| c.udp_peers.clear()).contains("lora.radio.udp_peers"));
        assert!(invalid(|c| c.frequency_hz = 50_000_000).contains("lora.radio.frequency_hz"));
        assert!(invalid(|c| c.modulation.spreading_factor = 13).contains("lora.radio.modulation"));

        let sx127x = |edit: fn(&mut RadioConfig)| {
            invalid(|c| {
                c.kind = RadioKind::Sx127x;
                edit(c);
            })
        };
        assert!(sx127x(|c| c.tx_power_dbm = 23).contains("lora.radio.tx_power_dbm"));
        assert!(
            sx127x(|c| c.irq_gpio = 22).contains("lora.radio.irq_gpio and lora.radio.reset_gpio")
        );
        assert!(sx127x(|c| c.reset_gpio = 8).contains("SPI0's own pins"));
        assert!(sx127x(|c| c.irq_gpio = 30).contains("BCM GPIO 0–27"));
        assert!(sx127x(|c| c.spi_clock_hz = 20_000_000).contains("lora.radio.spi_clock_hz"));
        assert!(sx127x(|c| c.spi_chip_select = 3).contains("lora.radio.spi_chip_select"));
        assert!(sx127x(|c| c.modulation.spreading_factor = 11).contains("low_data_rate_optimize"));
        assert_eq!(sx127x(|_| {}), "");

        let sx126x = |edit: fn(&mut RadioConfig)| {
            invalid(|c| {
                c.kind = RadioKind::Sx126x;
                edit(c);
            })
        };
        assert!(sx126x(|c| c.busy_gpio = 4).contains("lora.radio.busy_gpio"));
        assert!(sx126x(|c| c.sx126x_tcxo_volts = 2.0).contains("lora.radio.sx126x_tcxo_volts"));
        assert!(
            sx126x(|c| {
                c.sx126x_chip = Sx126xModel::Sx1261;
                c.tx_power_dbm = 20;
            })
            .contains("-17…15")
        );
        assert_eq!(sx126x(|_| {}), "");

        let ebyte = |edit: fn(&mut RadioConfig)| {
            invalid(|c| {
                c.kind = RadioKind::Ebyte;
                edit(c);
            })
        };
        assert!(ebyte(|c| c.uart_baud = 12345).contains("lora.radio.uart_baud"));
        assert!(ebyte(|c| c.ebyte_packet_size = 0).contains("lora.radio.ebyte_packet_size"));
        assert!(ebyte(|c| c.uart_path = " ".into()).contains("lora.radio.uart_path"));
        assert!(ebyte(|c| c.ebyte_aux_gpio = Some(14)).contains("the UART's own pins"));
        assert_eq!(ebyte(|_| {}), "");
    }

    #[tokio::test]
    async fn opens_the_udp_air_and_says_so() {
        let config = RadioConfig {
            udp_bind: "127.0.0.1:0".into(),
            ..RadioConfig::default()
        };
        let radio = open(&config).await;
        let radio = match radio {
            Ok(r) => r,
            Err(e) => panic!("udp: {e}"),
        };
        assert!(matches!(radio, AnyRadio::Udp(_)));
        assert!(radio.describe().contains("udp"), "{}", radio.describe());
    }

    #[tokio::test]
    async fn a_bad_config_is_refused_before_opening() {
        let config = RadioConfig {
            udp_bind: "nowhere".into(),
            ..RadioConfig::default()
        };
        let err = open(&config).await.err().unwrap_or_default();
        assert!(err.contains("lora.radio.udp_bind"), "{err}");
    }

    /// Off a Pi (CI, a PC) the hardware kinds fail with the device's name, and do not
    /// panic.
    #[tokio::test]
    async fn hardware_kinds_fail_cleanly_off_a_pi() {
        if std::path::Path::new("/dev/spidev0.0").exists() {
            return; // a real Pi: opening would drive its pins
        }
        for (kind, device) in [(RadioKind::Sx127x, "sx127x"), (RadioKind::Sx126x, "sx126x")] {
            let config = RadioConfig {
                kind,
                ..RadioConfig::default()
            };
            let err = open(&config).await.err().unwrap_or_default();
            assert!(err.starts_with(device), "{err}");
        }
        let config = RadioConfig {
            kind: RadioKind::Ebyte,
            uart_path: "/dev/nodewatch-no-such-uart".into(),
            ..RadioConfig::default()
        };
        let err = open(&config).await.err().unwrap_or_default();
        assert!(
            err.starts_with("ebyte: cannot open UART /dev/nodewatch-no-such-uart"),
            "{err}"
        );
    }
}
