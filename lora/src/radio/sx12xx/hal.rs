//! Adapters: blocking embedded-hal 1.0 parts (the Pi's SPI and GPIO) for the async
//! lora-phy driver.

use std::convert::Infallible;
use std::time::Duration;

use embedded_hal::digital::{InputPin, OutputPin};

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
}

impl<P: InputPin> PolledWait<P> {
    /// Polls `pin` every [`POLL_INTERVAL`].
    pub fn new(pin: P) -> Self {
        Self { pin }
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
            tokio::time::sleep(POLL_INTERVAL).await;
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
