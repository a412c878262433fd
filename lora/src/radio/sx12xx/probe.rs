//! Is a chip there? Reads one register with the blocking SPI device before lora-phy
//! takes over.

use std::time::Duration;

use embedded_hal::digital::InputPin;

use super::hal::POLL_INTERVAL;
use crate::radio::RadioError;

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
