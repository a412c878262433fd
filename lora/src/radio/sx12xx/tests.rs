use super::*;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lora_phy::mod_params::{Bandwidth, CodingRate, SpreadingFactor};
use lora_phy::sx126x::TcxoCtrlVoltage;

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
