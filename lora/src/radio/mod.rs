//! Radios: one trait, several backends.
//!
//! - [`udp`]: the simulated "air" over UDP on loopback (development and tests).
//! - [`ebyte`]: Ebyte E22/E220 modules in transparent mode over a UART.
//! - [`sx12xx`]: SX127x / SX126x over SPI, through the `lora-phy` driver.
//!
//! A radio is half duplex: one task owns it and alternates between sending and
//! listening.

use std::future::Future;
use std::time::Duration;

pub mod ebyte;
pub mod sx12xx;
pub mod udp;

/// A frame heard on the air.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The frame's bytes, as the radio delivered them (not yet verified).
    pub bytes: Vec<u8>,
    /// Signal strength in dBm, when the radio reports it.
    pub rssi_dbm: Option<f32>,
    /// Signal-to-noise ratio in dB, when the radio reports it.
    pub snr_db: Option<f32>,
}

/// A radio failure (the frame is not lost by the caller: it may be sent again).
#[derive(Debug, thiserror::Error)]
pub enum RadioError {
    /// The device or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the device.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The radio chip or module reported an error.
    #[error("{0}")]
    Device(String),
    /// The frame cannot be sent by this radio (too long for its packet size).
    #[error("frame of {len} bytes is longer than this radio's {max}-byte packets")]
    TooLong {
        /// The frame's length.
        len: usize,
        /// The radio's limit.
        max: usize,
    },
}

/// A half-duplex LoRa radio.
pub trait Radio: Send {
    /// Sends one frame; returns once it has left (after its airtime, on real radios).
    fn transmit(&mut self, frame: &[u8]) -> impl Future<Output = Result<(), RadioError>> + Send;

    /// Listens for up to `timeout`; `Ok(None)` when nothing arrived in time.
    /// Cancel-safe at the caller's level: the task never drops it half way except at
    /// shutdown.
    fn receive(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Received>, RadioError>> + Send;

    /// A short description for logs and health (`udp 127.0.0.1:7001`, `sx1276 spi0.0`).
    fn describe(&self) -> String;
}
