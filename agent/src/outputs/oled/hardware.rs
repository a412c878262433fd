//! The hardware setup: the only code that names rppal types (design §4). Everything
//! else is generic over embedded-hal's `I2c`.

use nodewatch_display::PanelSize;

use super::panel::{Panel, PanelSink};

/// Opens `/dev/i2c-<bus>` with rppal and puts a panel on it. `Err` carries why there
/// is no bus (not a Pi, I2C not enabled in `config.txt`, no permission).
///
/// With `only_on_a_pi` (`driver = "auto"`), a machine rppal does not know as a
/// Raspberry Pi gets no panel even if it has that bus: a PC's SMBus has other
/// devices on it, and SSD1306 commands must not be written to them.
#[cfg(target_os = "linux")]
pub fn open(
    bus: u8,
    address: u8,
    size: PanelSize,
    rotate_180: bool,
    only_on_a_pi: bool,
) -> Result<Box<dyn PanelSink>, String> {
    if only_on_a_pi {
        rppal::system::DeviceInfo::new().map_err(|e| format!("not a Raspberry Pi ({e})"))?;
    }
    let i2c = rppal::i2c::I2c::with_bus(bus).map_err(|e| format!("/dev/i2c-{bus}: {e}"))?;
    Ok(Box::new(Panel::new(i2c, bus, address, size, rotate_180)))
}

/// No I2C outside Linux: always simulated.
#[cfg(not(target_os = "linux"))]
pub fn open(
    bus: u8,
    _address: u8,
    _size: PanelSize,
    _rotate_180: bool,
    _only_on_a_pi: bool,
) -> Result<Box<dyn PanelSink>, String> {
    let _ = Panel::<super::panel::NullI2c>::new;
    Err(format!("/dev/i2c-{bus}: I2C is only supported on Linux"))
}
