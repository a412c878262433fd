//! The SSD1306 driver glue, generic over an embedded-hal 1.0 [`I2c`] bus.
//!
//! The `ssd1306` crate (buffered graphics mode) sends the bounding box of the pixels
//! written since its last flush, and counts every written pixel as changed. So the
//! glue keeps the frame the panel shows, diffs each new frame against it, writes only
//! the pixels that differ, and flushes: a one-figure change sends that figure's
//! columns and pages, an unchanged frame sends nothing.
//!
//! An I2C error (EREMOTEIO when the panel is unplugged) marks the panel down: the next
//! attempts wait with exponential backoff (1 s doubling to 60 s), and the first one
//! that succeeds initialises the panel again and sends a full frame.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use embedded_hal::i2c::{ErrorType, I2c, Operation};
use nodewatch_display::{Frame, PanelSize};
use ssd1306::mode::{BufferedGraphicsMode, DisplayConfig as _};
use ssd1306::prelude::{Brightness, DisplayRotation, I2CInterface};
use ssd1306::size::{DisplaySize128x32, DisplaySize128x64};
use ssd1306::{I2CDisplayInterface, Ssd1306};

/// First wait after an I2C error.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest wait between attempts while the panel is down.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Bus traffic and the last bus error, shared between the bus wrapper (inside the
/// driver) and the glue.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Bytes written on the bus (commands and data, without addresses).
    pub bytes_written: AtomicU64,
    /// The last bus error, as text (the driver's own error loses it).
    pub last_error: Mutex<Option<String>>,
}

/// An I2C bus that counts the bytes written and keeps the last error's text.
#[derive(Debug)]
pub struct CountingI2c<I> {
    inner: I,
    stats: Arc<BusStats>,
}

impl<I: I2c> ErrorType for CountingI2c<I> {
    type Error = I::Error;
}

impl<I: I2c> I2c for CountingI2c<I> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let bytes: usize = operations
            .iter()
            .map(|op| match op {
                Operation::Write(b) => b.len(),
                Operation::Read(_) => 0,
            })
            .sum();
        let result = self.inner.transaction(address, operations);
        match &result {
            Ok(()) => {
                self.stats
                    .bytes_written
                    .fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Err(e) => {
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:?}"));
            }
        }
        result
    }
}

type Bus<I> = I2CInterface<CountingI2c<I>>;

// One per panel: the size difference (the 128×64 buffer) costs nothing.
#[allow(clippy::large_enum_variant)]
enum Driver<I: I2c> {
    Rows64(Ssd1306<Bus<I>, DisplaySize128x64, BufferedGraphicsMode<DisplaySize128x64>>),
    Rows32(Ssd1306<Bus<I>, DisplaySize128x32, BufferedGraphicsMode<DisplaySize128x32>>),
}

/// Runs the same code on either size of driver.
macro_rules! on_driver {
    ($driver:expr, $d:ident => $body:expr) => {
        match $driver {
            Driver::Rows64($d) => $body,
            Driver::Rows32($d) => $body,
        }
    };
}

/// Counters of the display output (`nodewatch_display_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PanelCounters {
    /// Updates that sent something to the panel.
    pub updates: u64,
    /// Of those, full frames (after (re)initialisation).
    pub full_updates: u64,
    /// Bytes written on the bus.
    pub bytes: u64,
    /// I2C errors.
    pub errors: u64,
    /// Initialisations (the first one and each one after an error).
    pub inits: u64,
}

/// What one [`Panel::show`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowOutcome {
    /// The frame was already on the panel: nothing sent.
    Unchanged,
    /// Only the changed area was sent.
    Partial {
        /// Bytes written on the bus.
        bytes: u64,
    },
    /// The panel was (re)initialised and the whole frame sent.
    Full {
        /// Bytes written on the bus.
        bytes: u64,
    },
    /// Waiting for the backoff to pass before trying the bus again.
    BackingOff,
}

/// Why an update failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("I2C bus {bus} address {address:#04x}: {message}")]
pub struct PanelError {
    /// The bus number, for the message.
    pub bus: u8,
    /// The panel's address.
    pub address: u8,
    /// The bus error (or the driver's, when the bus gave none).
    pub message: String,
}

#[allow(clippy::large_enum_variant)] // one per panel
enum Link {
    /// Working; `shown` is what the panel shows.
    Up { shown: Frame, dim: bool },
    /// Never initialised, or lost: the next attempt (at `retry_at`) re-initialises.
    Down {
        retry_at: Option<Instant>,
        backoff: Duration,
    },
}

/// An SSD1306 on an I2C bus.
pub struct Panel<I: I2c> {
    driver: Driver<I>,
    stats: Arc<BusStats>,
    link: Link,
    size: PanelSize,
    bus: u8,
    address: u8,
    counters: PanelCounters,
    /// Whether it has ever answered (for "not there yet" versus "lost").
    answered: bool,
}

impl<I: I2c> std::fmt::Debug for Panel<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Panel")
            .field("size", &self.size)
            .field("bus", &self.bus)
            .field("address", &self.address)
            .field("counters", &self.counters)
            .finish()
    }
}

impl<I: I2c> Panel<I> {
    /// A panel on `i2c` at `address`; nothing is sent until the first [`Panel::show`].
    /// `bus` only names the bus in errors.
    pub fn new(i2c: I, bus: u8, address: u8, size: PanelSize, rotate_180: bool) -> Self {
        let stats = Arc::new(BusStats::default());
        let counting = CountingI2c {
            inner: i2c,
            stats: stats.clone(),
        };
        let interface = I2CDisplayInterface::new_custom_address(counting, address);
        let rotation = if rotate_180 {
            DisplayRotation::Rotate180
        } else {
            DisplayRotation::Rotate0
        };
        let driver = match size {
            PanelSize::W128H64 => Driver::Rows64(
                Ssd1306::new(interface, DisplaySize128x64, rotation).into_buffered_graphics_mode(),
            ),
            PanelSize::W128H32 => Driver::Rows32(
                Ssd1306::new(interface, DisplaySize128x32, rotation).into_buffered_graphics_mode(),
            ),
        };
        Self {
            driver,
            stats,
            link: Link::Down {
                retry_at: None,
                backoff: BACKOFF_START,
            },
            size,
            bus,
            address,
            counters: PanelCounters::default(),
            answered: false,
        }
    }

    /// Its counters.
    pub fn counters(&self) -> PanelCounters {
        PanelCounters {
            bytes: self.stats.bytes_written.load(Ordering::Relaxed),
            ..self.counters
        }
    }

    /// Whether the panel works now.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Whether the panel has answered at least once.
    pub fn has_answered(&self) -> bool {
        self.answered
    }

    fn error(&mut self, e: impl std::fmt::Debug, now: Instant) -> PanelError {
        let bus_error = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let message = bus_error.unwrap_or_else(|| format!("{e:?}"));
        self.counters.errors += 1;
        let backoff = match self.link {
            Link::Down { backoff, .. } if self.counters.errors > 1 => {
                (backoff * 2).min(BACKOFF_MAX)
            }
            _ => BACKOFF_START,
        };
        // A panel that never answered is retried at the same pace as a lost one.
        self.link = Link::Down {
            retry_at: Some(now + backoff),
            backoff,
        };
        PanelError {
            bus: self.bus,
            address: self.address,
            message,
        }
    }

    /// Puts `frame` on the panel at the given contrast, sending only what changed.
    pub fn show(
        &mut self,
        frame: &Frame,
        dim: bool,
        now: Instant,
    ) -> Result<ShowOutcome, PanelError> {
        let before = self.stats.bytes_written.load(Ordering::Relaxed);
        let sent = |s: &Self| s.stats.bytes_written.load(Ordering::Relaxed) - before;
        match &self.link {
            Link::Down {
                retry_at: Some(at), ..
            } if now < *at => Ok(ShowOutcome::BackingOff),
            Link::Down { .. } => {
                self.counters.inits += 1;
                let result = on_driver!(&mut self.driver, d => (|| {
                    d.init()?;
                    d.set_brightness(if dim { Brightness::DIMMEST } else { Brightness::NORMAL })?;
                    // Every pixel written, so the whole panel is flushed.
                    for (i, byte) in frame.memory().iter().enumerate() {
                        let (x, page) = ((i % 128) as u32, (i / 128) as u32);
                        for bit in 0..8 {
                            d.set_pixel(x, page * 8 + bit, byte & (1 << bit) != 0);
                        }
                    }
                    d.flush()
                })());
                if let Err(e) = result {
                    return Err(self.error(e, now));
                }
                self.answered = true;
                self.link = Link::Up {
                    shown: frame.clone(),
                    dim,
                };
                self.counters.updates += 1;
                self.counters.full_updates += 1;
                Ok(ShowOutcome::Full { bytes: sent(self) })
            }
            Link::Up {
                shown,
                dim: was_dim,
            } => {
                let area = frame.changed_area(shown);
                let contrast_changed = *was_dim != dim;
                if area.is_none() && !contrast_changed {
                    return Ok(ShowOutcome::Unchanged);
                }
                let result = on_driver!(&mut self.driver, d => (|| {
                    if contrast_changed {
                        d.set_brightness(if dim { Brightness::DIMMEST } else { Brightness::NORMAL })?;
                    }
                    if let Some(area) = area {
                        for page in area.first_page..=area.last_page {
                            for x in area.first_column..=area.last_column {
                                let i = (page * 128 + x) as usize;
                                let (new, old) = (frame.memory()[i], shown.memory()[i]);
                                let changed = new ^ old;
                                for bit in (0..8).filter(|b| changed & (1 << b) != 0) {
                                    d.set_pixel(x, page * 8 + bit, new & (1 << bit) != 0);
                                }
                            }
                        }
                        d.flush()
                    } else {
                        // Only the contrast changed; the empty flush sends nothing.
                        d.flush()
                    }
                })());
                if let Err(e) = result {
                    return Err(self.error(e, now));
                }
                self.link = Link::Up {
                    shown: frame.clone(),
                    dim,
                };
                self.counters.updates += 1;
                Ok(ShowOutcome::Partial { bytes: sent(self) })
            }
        }
    }

    /// Turns the panel off (at shutdown). Errors are ignored: the panel may be gone.
    pub fn power_off(&mut self) {
        if self.is_up() {
            let _ = on_driver!(&mut self.driver, d => d.set_display_on(false));
        }
    }
}

/// A panel behind a trait object, so the display task does not carry the bus type.
pub trait PanelSink: Send + std::fmt::Debug {
    /// See [`Panel::show`].
    fn show(&mut self, frame: &Frame, dim: bool, now: Instant) -> Result<ShowOutcome, PanelError>;
    /// See [`Panel::counters`].
    fn counters(&self) -> PanelCounters;
    /// See [`Panel::is_up`].
    fn is_up(&self) -> bool;
    /// See [`Panel::has_answered`].
    fn has_answered(&self) -> bool;
    /// See [`Panel::power_off`].
    fn power_off(&mut self);
}

impl<I: I2c + Send> PanelSink for Panel<I> {
    fn show(&mut self, frame: &Frame, dim: bool, now: Instant) -> Result<ShowOutcome, PanelError> {
        Panel::show(self, frame, dim, now)
    }
    fn counters(&self) -> PanelCounters {
        Panel::counters(self)
    }
    fn is_up(&self) -> bool {
        Panel::is_up(self)
    }
    fn has_answered(&self) -> bool {
        Panel::has_answered(self)
    }
    fn power_off(&mut self) {
        Panel::power_off(self)
    }
}

/// A bus where every write succeeds and goes nowhere: for the benchmark, which
/// counts the bytes an update would send.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullI2c;

impl ErrorType for NullI2c {
    type Error = embedded_hal::i2c::ErrorKind;
}

impl I2c for NullI2c {
    fn transaction(&mut self, _: u8, _: &mut [Operation<'_>]) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use embedded_graphics::mono_font::MonoTextStyle;
    use embedded_graphics::mono_font::ascii::FONT_6X10;
    use embedded_graphics::pixelcolor::BinaryColor;
    use embedded_graphics::prelude::*;
    use embedded_graphics::text::{Baseline, Text};
    use embedded_hal::i2c::ErrorKind;

    /// One write on the bus: address and bytes.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Write {
        pub address: u8,
        pub bytes: Vec<u8>,
    }

    /// A recording I2C bus: keeps every write; while `unplugged`, every transaction
    /// fails as a missing panel does (no acknowledge).
    #[derive(Debug, Clone, Default)]
    pub struct RecordingI2c {
        pub writes: Arc<Mutex<Vec<Write>>>,
        pub unplugged: Arc<std::sync::atomic::AtomicBool>,
    }

    impl RecordingI2c {
        pub fn take(&self) -> Vec<Write> {
            std::mem::take(&mut *self.writes.lock().expect("lock"))
        }
    }

    impl ErrorType for RecordingI2c {
        type Error = ErrorKind;
    }

    impl I2c for RecordingI2c {
        fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
            if self.unplugged.load(Ordering::Relaxed) {
                return Err(ErrorKind::NoAcknowledge(
                    embedded_hal::i2c::NoAcknowledgeSource::Address,
                ));
            }
            for op in ops {
                if let Operation::Write(bytes) = op {
                    self.writes.lock().expect("lock").push(Write {
                        address,
                        bytes: bytes.to_vec(),
                    });
                }
            }
            Ok(())
        }
    }

    /// The command bytes sent (writes whose control byte is 0x00, control removed).
    pub fn commands(writes: &[Write]) -> Vec<u8> {
        writes
            .iter()
            .filter(|w| w.bytes.first() == Some(&0x00))
            .flat_map(|w| w.bytes[1..].iter().copied())
            .collect()
    }

    /// Display-memory bytes sent (writes whose control byte is 0x40).
    pub fn data_bytes(writes: &[Write]) -> usize {
        writes
            .iter()
            .filter(|w| w.bytes.first() == Some(&0x40))
            .map(|w| w.bytes.len() - 1)
            .sum()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn text_frame(size: PanelSize, text: &str) -> Frame {
        let mut frame = Frame::new(size);
        let style = MonoTextStyle::new(&FONT_6X10, BinaryColor::On);
        let Ok(_) =
            Text::with_baseline("CPU", Point::new(0, 12), style, Baseline::Top).draw(&mut frame);
        let Ok(_) =
            Text::with_baseline(text, Point::new(36, 12), style, Baseline::Top).draw(&mut frame);
        frame
    }

    /// SSD1306 datasheet, §9 / §10.1: 0xA8 sets the multiplex ratio to rows − 1
    /// (0x3F for 64 rows, 0x1F for 32); 0xDA sets the COM pins hardware
    /// configuration (0x12 alternative, for 128×64; 0x02 sequential, for 128×32);
    /// 0x8D 0x14 turns the charge pump on; 0xAF turns the display on. Everything goes
    /// to the configured address, each write starting with a control byte (0x00
    /// command, 0x40 data).
    #[test]
    fn init_sends_the_datasheet_bytes_for_the_configuration() {
        for (size, address, mux, com) in [
            (PanelSize::W128H64, 0x3C, 0x3F, 0x12),
            (PanelSize::W128H32, 0x3D, 0x1F, 0x02),
        ] {
            let bus = RecordingI2c::default();
            let mut panel = Panel::new(bus.clone(), 1, address, size, false);
            let outcome = panel
                .show(&Frame::new(size), false, Instant::now())
                .expect("show");
            let writes = bus.take();
            assert!(writes.iter().all(|w| w.address == address), "{writes:?}");
            assert!(writes.iter().all(|w| matches!(w.bytes[0], 0x00 | 0x40)));
            let cmds = commands(&writes);
            assert!(
                contains(&cmds, &[0xA8, mux]),
                "multiplex {mux:#x} in {cmds:x?}"
            );
            assert!(
                contains(&cmds, &[0xDA, com]),
                "COM pins {com:#x} in {cmds:x?}"
            );
            assert!(contains(&cmds, &[0x8D, 0x14]), "charge pump in {cmds:x?}");
            assert!(cmds.contains(&0xAF), "display on");
            // A full frame: every byte of display memory.
            assert_eq!(data_bytes(&writes), 128 * size.pages() as usize);
            assert!(matches!(outcome, ShowOutcome::Full { .. }));
        }
    }

    /// Datasheet §10.1.12 / §10.1.14: segment remap 0xA0/0xA1 and COM scan direction
    /// 0xC0/0xC8; a panel mounted upside down flips both.
    #[test]
    fn rotation_180_flips_segment_remap_and_com_scan() {
        for (rotate_180, segment, com, not_segment, not_com) in [
            (false, 0xA1, 0xC8, 0xA0, 0xC0),
            (true, 0xA0, 0xC0, 0xA1, 0xC8),
        ] {
            let bus = RecordingI2c::default();
            let mut panel = Panel::new(bus.clone(), 1, 0x3C, PanelSize::W128H64, rotate_180);
            panel
                .show(&Frame::new(PanelSize::W128H64), false, Instant::now())
                .expect("show");
            let cmds = commands(&bus.take());
            assert!(cmds.contains(&segment) && cmds.contains(&com), "{cmds:x?}");
            assert!(
                !cmds.contains(&not_segment) && !cmds.contains(&not_com),
                "{cmds:x?}"
            );
        }
    }

    #[test]
    fn a_one_figure_change_sends_only_its_region() {
        let size = PanelSize::W128H64;
        let bus = RecordingI2c::default();
        let mut panel = Panel::new(bus.clone(), 1, 0x3C, size, false);
        let now = Instant::now();
        panel
            .show(&text_frame(size, "12%"), false, now)
            .expect("first");
        bus.take();
        assert_eq!(
            panel.show(&text_frame(size, "12%"), false, now),
            Ok(ShowOutcome::Unchanged)
        );
        assert!(bus.take().is_empty(), "unchanged frame: no traffic");
        let old = text_frame(size, "12%");
        let new = text_frame(size, "17%");
        let area = new.changed_area(&old).expect("changed");
        let outcome = panel.show(&new, false, now).expect("update");
        let writes = bus.take();
        let data = data_bytes(&writes);
        // Only the second digit changed: its columns, on the two pages the text spans.
        assert_eq!(data as u32, area.bytes(), "{area:?}");
        assert!(data <= 2 * 6, "{data} bytes for one digit");
        let ShowOutcome::Partial { bytes } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(bytes < 40, "whole update {bytes} bytes");
        // The draw window is set to exactly that area (datasheet 0x21 column, 0x22 page).
        let cmds = commands(&writes);
        assert!(
            contains(
                &cmds,
                &[0x21, area.first_column as u8, area.last_column as u8]
            ),
            "{cmds:x?} {area:?}"
        );
        assert!(contains(
            &cmds,
            &[0x22, area.first_page as u8, area.last_page as u8]
        ));
    }

    #[test]
    fn an_i2c_error_backs_off_then_reinitialises() {
        let size = PanelSize::W128H32;
        let bus = RecordingI2c::default();
        let mut panel = Panel::new(bus.clone(), 1, 0x3C, size, false);
        let t0 = Instant::now();
        panel
            .show(&text_frame(size, "1"), false, t0)
            .expect("first");
        bus.take();
        bus.unplugged.store(true, Ordering::Relaxed);
        let err = panel
            .show(&text_frame(size, "2"), false, t0)
            .expect_err("unplugged");
        assert!(err.message.contains("NoAcknowledge"), "{err}");
        assert!(!panel.is_up());
        // Within the backoff: no bus traffic at all.
        assert_eq!(
            panel.show(
                &text_frame(size, "3"),
                false,
                t0 + Duration::from_millis(500)
            ),
            Ok(ShowOutcome::BackingOff)
        );
        // Still unplugged at the retry: the backoff doubles.
        assert!(
            panel
                .show(&text_frame(size, "3"), false, t0 + BACKOFF_START)
                .is_err()
        );
        assert_eq!(
            panel.show(&text_frame(size, "3"), false, t0 + BACKOFF_START * 2),
            Ok(ShowOutcome::BackingOff)
        );
        bus.unplugged.store(false, Ordering::Relaxed);
        let outcome = panel
            .show(&text_frame(size, "3"), false, t0 + BACKOFF_START * 3)
            .expect("back");
        assert!(matches!(outcome, ShowOutcome::Full { .. }), "{outcome:?}");
        let writes = bus.take();
        assert!(
            contains(&commands(&writes), &[0xA8, 0x1F]),
            "re-initialised"
        );
        assert_eq!(data_bytes(&writes), 512);
        let c = panel.counters();
        assert_eq!((c.errors, c.inits, c.full_updates), (2, 3, 2));
        assert!(panel.is_up());
    }

    #[test]
    fn dimming_sends_contrast_only() {
        let size = PanelSize::W128H64;
        let bus = RecordingI2c::default();
        let mut panel = Panel::new(bus.clone(), 1, 0x3C, size, false);
        let frame = text_frame(size, "1");
        panel.show(&frame, false, Instant::now()).expect("first");
        bus.take();
        panel.show(&frame, true, Instant::now()).expect("dim");
        let writes = bus.take();
        assert_eq!(data_bytes(&writes), 0);
        // Datasheet: 0x81 sets contrast.
        assert!(contains(&commands(&writes), &[0x81, 0x00]), "{writes:?}");
    }
}
