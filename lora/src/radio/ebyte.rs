//! Ebyte E22 (SX1262/SX1268) and E220 (LLCC68) UART modules in transparent mode
//! (M0 = M1 = low), such as the E22-900T22S and the Waveshare "SX1262 LoRa HAT" built
//! on it.
//!
//! In transparent mode the module sends whatever arrives on its RX line as one LoRa
//! packet (up to its sub-packet size: E22 240 bytes by default, E220 200; the default
//! here is 200, which fits both) and writes each packet it hears to its TX line in
//! one go. So a received frame is delimited by an idle gap on the UART (see
//! [`idle_gap`]); with the module's "RSSI byte" option on, one more byte follows the
//! packet: RSSI in dBm = −(256 − byte). The modules report no SNR.
//!
//! Sending: the module's AUX line is low while it has data to send. With an AUX pin
//! the radio waits for AUX high before writing and until AUX is high again after the
//! packet has left; without one it sleeps the UART transfer time plus an airtime
//! estimate from the configured [`Modulation`] (which should match the module's air
//! data rate).
//!
//! The module's own settings (air rate, channel, sub-packet size, RSSI byte) are made
//! with Ebyte's configuration tool or in configuration mode (M0 = M1 = high); this
//! backend only uses transparent mode.

use std::time::Duration;

use embedded_hal::digital::InputPin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::sx12xx::{NoPin, PolledWait};
use super::{Radio, RadioError, Received};
use crate::airtime::{Modulation, time_on_air};

/// The default largest packet: the E220's 200 bytes (the E22 takes 240).
pub const DEFAULT_PACKET_SIZE: usize = 200;

/// The idle time on the UART that ends a received packet: ten byte-times at the baud
/// rate (a byte is 10 bits in 8N1), and at least 20 ms (well above the kernel's UART
/// receive-timeout chunking, well below the airtime that separates two packets).
pub fn idle_gap(baud: u32) -> Duration {
    let byte_times = Duration::from_secs_f64(100.0 / f64::from(baud.max(1)));
    byte_times.max(Duration::from_millis(20))
}

/// An Ebyte module's settings on our side.
#[derive(Debug, Clone, PartialEq)]
pub struct EbyteSettings {
    /// For logs and errors: `ebyte /dev/serial0`.
    pub name: String,
    /// The UART's baud rate (the module's default: 9600).
    pub baud: u32,
    /// The module's sub-packet size: longer frames are refused.
    pub packet_size: usize,
    /// The module appends an RSSI byte to each packet it outputs.
    pub rssi_byte: bool,
    /// The modulation matching the module's air rate, for the airtime wait when there
    /// is no AUX pin.
    pub modulation: Modulation,
    /// The UART idle time that ends a packet ([`idle_gap`] of the baud rate).
    pub idle_gap: Duration,
}

impl EbyteSettings {
    /// Settings with the defaults for a UART at `baud`.
    pub fn new(name: impl Into<String>, baud: u32) -> Self {
        Self {
            name: name.into(),
            baud,
            packet_size: DEFAULT_PACKET_SIZE,
            rssi_byte: false,
            modulation: Modulation::default(),
            idle_gap: idle_gap(baud),
        }
    }
}

/// An Ebyte module on a UART `T`, with an optional AUX pin `A`.
#[derive(Debug)]
pub struct EbyteRadio<T, A = NoPin> {
    uart: T,
    aux: Option<PolledWait<A>>,
    settings: EbyteSettings,
}

impl<T, A> EbyteRadio<T, A>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
    A: InputPin + Send,
{
    /// A module whose AUX line is on `aux` when there is one (without, transmit
    /// sleeps the airtime).
    pub fn with_optional_aux(uart: T, aux: Option<A>, settings: EbyteSettings) -> Self {
        Self {
            uart,
            aux: aux.map(PolledWait::new),
            settings,
        }
    }

    /// How long `len` bytes take on the UART.
    fn uart_time(&self, len: usize) -> Duration {
        Duration::from_secs_f64(len as f64 * 10.0 / f64::from(self.settings.baud.max(1)))
    }

    async fn wait_aux_high(&mut self, limit: Duration, when: &str) -> Result<(), RadioError> {
        let name = &self.settings.name;
        let Some(aux) = self.aux.as_mut() else {
            return Ok(());
        };
        use embedded_hal_async::digital::Wait as _;
        match tokio::time::timeout(limit, aux.wait_for_high()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RadioError::Device(format!(
                "{name}: reading AUX {when}: {e:?}"
            ))),
            Err(_) => Err(RadioError::Device(format!(
                "{name}: AUX stayed low {when} for {} ms (module busy, or ebyte_aux_gpio \
                 miswired; M0/M1 must be low for transparent mode)",
                limit.as_millis()
            ))),
        }
    }

    fn io_error(&self, what: &str, source: std::io::Error) -> RadioError {
        RadioError::Io {
            what: format!("{}: {what}", self.settings.name),
            source,
        }
    }
}

impl<T, A> Radio for EbyteRadio<T, A>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
    A: InputPin + Send,
{
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        if frame.len() > self.settings.packet_size {
            return Err(RadioError::TooLong {
                len: frame.len(),
                max: self.settings.packet_size,
            });
        }
        let airtime = time_on_air(&self.settings.modulation, frame.len());
        let uart_time = self.uart_time(frame.len());
        let limit = (airtime + uart_time) * 2 + Duration::from_secs(1);
        self.wait_aux_high(limit, "before sending").await?;
        if let Err(e) = self.uart.write_all(frame).await {
            return Err(self.io_error("writing", e));
        }
        if let Err(e) = self.uart.flush().await {
            return Err(self.io_error("writing", e));
        }
        // The bytes reach the module, which lowers AUX until the packet has left.
        tokio::time::sleep(uart_time + Duration::from_millis(2)).await;
        if self.aux.is_some() {
            self.wait_aux_high(limit, "after sending").await?;
            // The datasheets ask for 2 ms after AUX rises before the next command.
            tokio::time::sleep(Duration::from_millis(2)).await;
        } else {
            tokio::time::sleep(airtime).await;
        }
        Ok(())
    }

    async fn receive(&mut self, timeout: Duration) -> Result<Option<Received>, RadioError> {
        let max = (self.settings.packet_size + 1) * 4;
        let mut frame = Vec::with_capacity(self.settings.packet_size + 1);
        let mut chunk = [0u8; 256];
        match tokio::time::timeout(timeout, self.uart.read(&mut chunk)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) => {
                return Err(self.io_error(
                    "reading",
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the UART closed"),
                ));
            }
            Ok(Ok(n)) => frame.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(self.io_error("reading", e)),
        }
        // The rest of the packet follows without a pause; a gap ends it.
        while frame.len() < max {
            match tokio::time::timeout(self.settings.idle_gap, self.uart.read(&mut chunk)).await {
                Err(_) | Ok(Ok(0)) => break,
                Ok(Ok(n)) => frame.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(self.io_error("reading", e)),
            }
        }
        let mut rssi_dbm = None;
        if self.settings.rssi_byte
            && frame.len() >= 2
            && let Some(byte) = frame.pop()
        {
            rssi_dbm = Some(-(256.0 - f32::from(byte)));
        }
        Ok(Some(Received {
            bytes: frame,
            rssi_dbm,
            snr_db: None,
        }))
    }

    fn describe(&self) -> String {
        self.settings.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::DuplexStream;
    use tokio::time::Instant;

    fn radio(rssi_byte: bool) -> (EbyteRadio<DuplexStream>, DuplexStream) {
        let (ours, module) = tokio::io::duplex(1024);
        let mut settings = EbyteSettings::new("ebyte /dev/serial0", 9600);
        settings.rssi_byte = rssi_byte;
        (EbyteRadio::with_optional_aux(ours, None, settings), module)
    }

    #[test]
    fn the_idle_gap_follows_the_baud_rate() {
        assert_eq!(idle_gap(9600), Duration::from_millis(20));
        assert_eq!(idle_gap(115_200), Duration::from_millis(20));
        assert!(idle_gap(1200) > Duration::from_millis(80));
    }

    #[tokio::test(start_paused = true)]
    async fn two_frames_back_to_back_separated_by_a_gap() {
        let (mut radio, mut module) = radio(false);
        tokio::spawn(async move {
            module.write_all(b"first frame").await.ok();
            tokio::time::sleep(Duration::from_millis(300)).await;
            module.write_all(b"second").await.ok();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let first = radio.receive(Duration::from_secs(5)).await;
        let Ok(Some(first)) = first else {
            panic!("{first:?}");
        };
        assert_eq!(first.bytes, b"first frame");
        assert_eq!((first.rssi_dbm, first.snr_db), (None, None));
        let second = radio.receive(Duration::from_secs(5)).await;
        assert!(
            matches!(second, Ok(Some(ref r)) if r.bytes == b"second"),
            "{second:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_with_an_rssi_byte() {
        let (mut radio, mut module) = radio(true);
        tokio::spawn(async move {
            module.write_all(&[0xde, 0xad, 0xbe, 0xef, 0xb0]).await.ok();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let got = radio.receive(Duration::from_secs(5)).await;
        let Ok(Some(got)) = got else {
            panic!("{got:?}");
        };
        assert_eq!(got.bytes, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(got.rssi_dbm, Some(-80.0)); // -(256 - 0xb0)
        assert_eq!(got.snr_db, None);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_heard_is_a_timeout() {
        let (mut radio, _module) = radio(false);
        let start = Instant::now();
        let got = radio.receive(Duration::from_secs(2)).await;
        assert!(matches!(got, Ok(None)), "{got:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_uart_is_an_error_naming_the_device() {
        let (mut radio, module) = radio(false);
        drop(module);
        let err = radio
            .receive(Duration::from_secs(2))
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("ebyte /dev/serial0: reading")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_split_across_several_reads() {
        let (mut radio, mut module) = radio(false);
        tokio::spawn(async move {
            for part in [&b"al"[..], b"ert: disk", b" full"] {
                module.write_all(part).await.ok();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let got = radio.receive(Duration::from_secs(5)).await;
        assert!(
            matches!(got, Ok(Some(ref r)) if r.bytes == b"alert: disk full"),
            "{got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transmit_writes_the_frame_and_waits_the_airtime() {
        let (mut radio, mut module) = radio(false);
        let start = Instant::now();
        let r = radio.transmit(&[7; 12]).await;
        assert!(r.is_ok(), "{r:?}");
        // 12 bytes at SF12/125 kHz: about 1155 ms on air.
        assert!(
            start.elapsed() >= Duration::from_millis(1150),
            "{:?}",
            start.elapsed()
        );
        let mut got = [0u8; 12];
        assert!(module.read_exact(&mut got).await.is_ok());
        assert_eq!(got, [7; 12]);
        assert!(matches!(
            radio.transmit(&[0; 201]).await,
            Err(RadioError::TooLong { len: 201, max: 200 })
        ));
    }

    #[derive(Debug, Clone, Default)]
    struct Aux(Arc<AtomicBool>);

    impl embedded_hal::digital::ErrorType for Aux {
        type Error = Infallible;
    }

    impl InputPin for Aux {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            Ok(self.0.load(Ordering::SeqCst))
        }

        fn is_low(&mut self) -> Result<bool, Infallible> {
            Ok(!self.0.load(Ordering::SeqCst))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transmit_waits_for_aux_to_go_high() {
        let (ours, mut module) = tokio::io::duplex(1024);
        let aux = Aux(Arc::new(AtomicBool::new(true)));
        let mut radio = EbyteRadio::with_optional_aux(
            ours,
            Some(aux.clone()),
            EbyteSettings::new("ebyte", 9600),
        );
        // The module: AUX low while it sends, high 400 ms later.
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = module.read(&mut buf).await.unwrap_or(0);
            assert_eq!(&buf[..n], b"ping");
            aux.0.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            aux.0.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let start = Instant::now();
        let r = radio.transmit(b"ping").await;
        assert!(r.is_ok(), "{r:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn aux_stuck_low_is_an_error() {
        let (ours, _module) = tokio::io::duplex(1024);
        let aux = Aux::default();
        let mut radio =
            EbyteRadio::with_optional_aux(ours, Some(aux), EbyteSettings::new("ebyte", 9600));
        let err = radio.transmit(b"x").await.err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("AUX stayed low")));
    }
}
