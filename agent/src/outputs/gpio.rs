//! GPIO lines (buzzer, status LED, button, the LoRa radio's reset/DIO/BUSY/mode pins)
//! through the kernel's GPIO character device, `/dev/gpiochipN`, behind embedded-hal
//! 1.0's `OutputPin` and `InputPin`. The only module that names `gpiocdev`.
//!
//! Why not rppal's GPIO: it maps the controller's registers from `/dev/gpiomem`
//! (`/dev/gpiomem0` on a Pi 5), which only the Raspberry Pi kernel provides, and falls
//! back to `/dev/mem` (root). Debian's own kernel has no gpiomem, so a non-root service
//! would have no GPIO. The character device works on any kernel since 5.10 for a user
//! with access to `/dev/gpiochipN` (group `gpio` through a udev rule).
//!
//! Pins are configured as BCM numbers. BCM `n` is the line named `GPIO<n>` (upstream
//! device trees name the Pi header's lines so, the Pi 5's RP1 chip included), else
//! offset `n` of the chip whose label is one of the Pi's pin controllers
//! ([`PI_PINCTRL_LABELS`]; older device trees name a few header lines after their
//! function, `SDA1`, `GPIO_GCLK`). No such line on the machine (not a Pi, CI, qemu)
//! means no GPIO: callers simulate or go without. A chip that cannot be opened
//! (permissions) while no line was found is an error naming the device.

use std::path::PathBuf;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

/// Labels of the Raspberry Pi GPIO controllers whose line offset is the BCM number:
/// BCM2711 (Pi 4, 400, CM4), BCM2835/6/7 (Pi 1–3, Zero) and the Pi 5's RP1.
pub const PI_PINCTRL_LABELS: &[&str] = &["pinctrl-bcm2711", "pinctrl-bcm2835", "pinctrl-rp1"];

/// What a GPIO chip tells about itself: enough to find a BCM pin on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipSummary {
    /// Its device, `/dev/gpiochipN`.
    pub path: PathBuf,
    /// Its label (the driver's name for it).
    pub label: String,
    /// Its lines' names, by offset (empty when unnamed).
    pub line_names: Vec<String>,
}

/// A line: which chip, which offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineAddress {
    /// The chip's device.
    pub chip: PathBuf,
    /// The line's offset on it.
    pub offset: u32,
}

/// Where BCM pin `bcm` is among `chips`: the line named `GPIO<bcm>`, else offset `bcm`
/// of a chip labelled as a Pi pin controller.
pub fn locate(chips: &[ChipSummary], bcm: u8) -> Option<LineAddress> {
    let name = format!("GPIO{bcm}");
    let named = chips.iter().find_map(|chip| {
        let offset = chip.line_names.iter().position(|n| *n == name)?;
        Some(LineAddress {
            chip: chip.path.clone(),
            offset: u32::try_from(offset).ok()?,
        })
    });
    named.or_else(|| {
        chips
            .iter()
            .find(|chip| {
                PI_PINCTRL_LABELS.contains(&chip.label.as_str())
                    && usize::from(bcm) < chip.line_names.len()
            })
            .map(|chip| LineAddress {
                chip: chip.path.clone(),
                offset: u32::from(bcm),
            })
    })
}

/// Pull resistor of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// Pulled up (a button to ground).
    Up,
    /// Pulled down (a radio's interrupt line).
    Down,
    /// As the hardware leaves it.
    None,
}

/// The machine's GPIO chips, as found at one moment.
#[derive(Debug, Clone, Default)]
pub struct Gpio {
    chips: Vec<ChipSummary>,
    /// Chips that exist but could not be read, with why (`/dev/gpiochip0: Permission
    /// denied`).
    unreadable: Vec<String>,
}

impl Gpio {
    /// A view of given chips (tests; [`Gpio::scan`] reads the real ones).
    pub fn from_chips(chips: Vec<ChipSummary>, unreadable: Vec<String>) -> Gpio {
        Gpio { chips, unreadable }
    }

    /// Where BCM pin `bcm` is: `Ok(None)` when this machine has no such GPIO line (not a
    /// Pi), `Err` when it may be on a chip that cannot be opened.
    pub fn resolve(&self, bcm: u8) -> Result<Option<LineAddress>, String> {
        if let Some(address) = locate(&self.chips, bcm) {
            return Ok(Some(address));
        }
        if self.unreadable.is_empty() {
            return Ok(None);
        }
        Err(format!(
            "GPIO{bcm}: cannot open {} (the user needs read-write access to /dev/gpiochip*, \
             e.g. the gpio group through a udev rule)",
            self.unreadable.join(", ")
        ))
    }

    /// Opens BCM `bcm` as a switch output (buzzer, LED): off at once; `set_high` turns it
    /// on, whichever level that is (`active_low`). The pull toward the off level keeps
    /// it off after the agent exits, when the kernel turns the released line back into
    /// an input (an active-low buzzer's input must not float). `Ok(None)`: no GPIO.
    pub fn switch(
        &self,
        consumer: &str,
        bcm: u8,
        active_low: bool,
    ) -> Result<Option<OutputLine>, String> {
        let Some(address) = self.resolve(bcm)? else {
            return Ok(None);
        };
        let pull = if active_low { Pull::Up } else { Pull::Down };
        OutputLine::request(consumer, bcm, &address, active_low, false, pull).map(Some)
    }

    /// Opens BCM `bcm` as a plain output at level `high` (`set_high` drives it high).
    /// `Ok(None)`: no GPIO.
    pub fn output(
        &self,
        consumer: &str,
        bcm: u8,
        high: bool,
    ) -> Result<Option<OutputLine>, String> {
        let Some(address) = self.resolve(bcm)? else {
            return Ok(None);
        };
        OutputLine::request(consumer, bcm, &address, false, high, Pull::None).map(Some)
    }

    /// Opens BCM `bcm` as an input with `pull`. `Ok(None)`: no GPIO.
    pub fn input(&self, consumer: &str, bcm: u8, pull: Pull) -> Result<Option<InputLine>, String> {
        let Some(address) = self.resolve(bcm)? else {
            return Ok(None);
        };
        InputLine::request(consumer, bcm, &address, pull).map(Some)
    }
}

/// A failed read or write of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError(pub String);

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LineError {}

impl embedded_hal::digital::Error for LineError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

#[cfg(target_os = "linux")]
pub use cdev::{InputLine, OutputLine};

#[cfg(target_os = "linux")]
mod cdev {
    use gpiocdev::Request;
    use gpiocdev::line::{Bias, Value};

    use super::{ChipSummary, ErrorType, Gpio, InputPin, LineAddress, LineError, OutputPin, Pull};

    impl Gpio {
        /// Reads every GPIO chip of the machine (none is fine: not a Pi).
        pub fn scan() -> Gpio {
            let mut gpio = Gpio::default();
            // No /dev to read is no GPIO, as is an empty list.
            let paths = gpiocdev::chip::chips().unwrap_or_default();
            for path in paths {
                match summarize(&path) {
                    Ok(summary) => gpio.chips.push(summary),
                    Err(e) => gpio.unreadable.push(format!("{}: {e}", path.display())),
                }
            }
            gpio
        }
    }

    fn summarize(path: &std::path::Path) -> Result<ChipSummary, gpiocdev::Error> {
        let chip = gpiocdev::chip::Chip::from_path(path)?;
        let info = chip.info()?;
        let line_names = chip
            .line_info_iter()?
            .map(|line| line.map(|l| l.name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChipSummary {
            path: path.to_path_buf(),
            label: info.label,
            line_names,
        })
    }

    fn bias(pull: Pull) -> Option<Bias> {
        match pull {
            Pull::Up => Some(Bias::PullUp),
            Pull::Down => Some(Bias::PullDown),
            Pull::None => None,
        }
    }

    fn describe(bcm: u8, address: &LineAddress) -> String {
        format!(
            "GPIO{bcm} ({} line {})",
            address.chip.display(),
            address.offset
        )
    }

    /// An output line held by this process.
    #[derive(Debug)]
    pub struct OutputLine {
        request: Request,
        offset: u32,
        name: String,
    }

    impl OutputLine {
        pub(super) fn request(
            consumer: &str,
            bcm: u8,
            address: &LineAddress,
            active_low: bool,
            active: bool,
            pull: Pull,
        ) -> Result<OutputLine, String> {
            let name = describe(bcm, address);
            let mut builder = Request::builder();
            builder
                .on_chip(&address.chip)
                .with_consumer(consumer)
                .with_line(address.offset)
                .as_output(if active {
                    Value::Active
                } else {
                    Value::Inactive
                })
                .with_bias(bias(pull));
            if active_low {
                builder.as_active_low();
            }
            let request = builder
                .request()
                .map_err(|e| format!("{name}: cannot request it as an output: {e}"))?;
            tracing::debug!(line = name.as_str(), consumer, "GPIO output requested.");
            Ok(OutputLine {
                request,
                offset: address.offset,
                name,
            })
        }

        fn set(&mut self, active: bool) -> Result<(), LineError> {
            let value = if active {
                Value::Active
            } else {
                Value::Inactive
            };
            self.request
                .set_value(self.offset, value)
                .map_err(|e| LineError(format!("{}: {e}", self.name)))
        }
    }

    impl ErrorType for OutputLine {
        type Error = LineError;
    }

    impl OutputPin for OutputLine {
        fn set_low(&mut self) -> Result<(), LineError> {
            self.set(false)
        }
        fn set_high(&mut self) -> Result<(), LineError> {
            self.set(true)
        }
    }

    /// An input line held by this process.
    #[derive(Debug)]
    pub struct InputLine {
        request: Request,
        offset: u32,
        name: String,
    }

    impl InputLine {
        pub(super) fn request(
            consumer: &str,
            bcm: u8,
            address: &LineAddress,
            pull: Pull,
        ) -> Result<InputLine, String> {
            let name = describe(bcm, address);
            let request = Request::builder()
                .on_chip(&address.chip)
                .with_consumer(consumer)
                .with_line(address.offset)
                .as_input()
                .with_bias(bias(pull))
                .request()
                .map_err(|e| format!("{name}: cannot request it as an input: {e}"))?;
            tracing::debug!(line = name.as_str(), consumer, "GPIO input requested.");
            Ok(InputLine {
                request,
                offset: address.offset,
                name,
            })
        }
    }

    impl ErrorType for InputLine {
        type Error = LineError;
    }

    impl InputPin for InputLine {
        fn is_high(&mut self) -> Result<bool, LineError> {
            self.request
                .value(self.offset)
                .map(|v| v == Value::Active)
                .map_err(|e| LineError(format!("{}: {e}", self.name)))
        }
        fn is_low(&mut self) -> Result<bool, LineError> {
            self.is_high().map(|high| !high)
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub use none::{InputLine, OutputLine};

/// No GPIO character device outside Linux: no chips, and line types with no values.
#[cfg(not(target_os = "linux"))]
mod none {
    use super::{ErrorType, Gpio, InputPin, LineAddress, LineError, OutputPin, Pull};

    impl Gpio {
        /// No GPIO chips outside Linux.
        pub fn scan() -> Gpio {
            Gpio::default()
        }
    }

    /// No output line exists outside Linux.
    #[derive(Debug)]
    pub enum OutputLine {}

    impl OutputLine {
        pub(super) fn request(
            _: &str,
            bcm: u8,
            _: &LineAddress,
            _: bool,
            _: bool,
            _: Pull,
        ) -> Result<OutputLine, String> {
            Err(format!("GPIO{bcm}: GPIO is only supported on Linux"))
        }
    }

    impl ErrorType for OutputLine {
        type Error = LineError;
    }

    impl OutputPin for OutputLine {
        fn set_low(&mut self) -> Result<(), LineError> {
            match *self {}
        }
        fn set_high(&mut self) -> Result<(), LineError> {
            match *self {}
        }
    }

    /// No input line exists outside Linux.
    #[derive(Debug)]
    pub enum InputLine {}

    impl InputLine {
        pub(super) fn request(
            _: &str,
            bcm: u8,
            _: &LineAddress,
            _: Pull,
        ) -> Result<InputLine, String> {
            Err(format!("GPIO{bcm}: GPIO is only supported on Linux"))
        }
    }

    impl ErrorType for InputLine {
        type Error = LineError;
    }

    impl InputPin for InputLine {
        fn is_high(&mut self) -> Result<bool, LineError> {
            match *self {}
        }
        fn is_low(&mut self) -> Result<bool, LineError> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip(n: u32, label: &str, names: &[&str]) -> ChipSummary {
        ChipSummary {
            path: PathBuf::from(format!("/dev/gpiochip{n}")),
            label: label.to_string(),
            line_names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// BCM2711 lines as upstream's Pi 4 device tree names them (the first 28 shown).
    fn pi4_names() -> Vec<String> {
        let mut names = vec!["ID_SDA".to_string(), "ID_SCL".to_string()];
        names.extend((2..28).map(|n| format!("GPIO{n}")));
        names.extend((28..58).map(|n| format!("RGMII_{n}")));
        names
    }

    fn addr(n: u32, offset: u32) -> Option<LineAddress> {
        Some(LineAddress {
            chip: PathBuf::from(format!("/dev/gpiochip{n}")),
            offset,
        })
    }

    #[test]
    fn finds_a_line_by_its_name_on_any_chip() {
        // A Pi 5: the header is on RP1, a later chip, not the SoC's own.
        let names: Vec<String> = (0..54).map(|n| format!("GPIO{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let chips = vec![
            chip(0, "gpio-brcmstb@107d508500", &["-", "2712_BOOT_CS_N"]),
            chip(4, "pinctrl-rp1", &names),
        ];
        assert_eq!(locate(&chips, 17), addr(4, 17));
        // Named lines win even off a Pi pin controller.
        let chips = vec![chip(2, "gpio-expander", &["LED", "GPIO18"])];
        assert_eq!(locate(&chips, 18), addr(2, 1));
    }

    #[test]
    fn falls_back_to_the_pi_pin_controller_at_offset_n() {
        // Pi 3's upstream tree names GPIO4 after its function (GPIO_GCLK).
        let mut names = pi4_names();
        names[4] = "GPIO_GCLK".into();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let chips = vec![
            chip(0, "pinctrl-bcm2835", &names),
            chip(1, "raspberrypi-exp-gpio", &["BT_ON", "WL_ON"]),
        ];
        assert_eq!(locate(&chips, 4), addr(0, 4));
        assert_eq!(locate(&chips, 17), addr(0, 17));
        // Unnamed lines (no gpio-line-names in the tree).
        let chips = vec![chip(0, "pinctrl-bcm2711", &[""; 58])];
        assert_eq!(locate(&chips, 27), addr(0, 27));
    }

    #[test]
    fn other_machines_have_no_pi_gpio() {
        // qemu's virt machine (pl061) and a PC's controller: no GPIO17, not Pi labels.
        let chips = vec![
            chip(0, "9030000.pl061", &[""; 8]),
            chip(1, "INT34C5:00", &[""; 360]),
        ];
        assert_eq!(locate(&chips, 17), None);
        let gpio = Gpio::from_chips(chips, Vec::new());
        assert_eq!(gpio.resolve(17), Ok(None));
        assert!(matches!(
            gpio.switch("nodewatch-buzzer", 18, false),
            Ok(None)
        ));
        assert!(matches!(
            gpio.input("nodewatch-button", 17, Pull::Up),
            Ok(None)
        ));
        assert_eq!(Gpio::default().resolve(17), Ok(None));
    }

    #[test]
    fn an_unreadable_chip_is_an_error_naming_it_unless_the_line_is_found_elsewhere() {
        let unreadable = vec!["/dev/gpiochip0: Permission denied (os error 13)".to_string()];
        let gpio = Gpio::from_chips(Vec::new(), unreadable.clone());
        let error = gpio.resolve(17).expect_err("unreadable");
        assert!(
            error.contains("GPIO17") && error.contains("/dev/gpiochip0: Permission denied"),
            "{error}"
        );
        let error = gpio
            .switch("nodewatch-buzzer", 18, false)
            .expect_err("unreadable");
        assert!(error.contains("/dev/gpiochip0"), "{error}");
        let names = pi4_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let gpio = Gpio::from_chips(vec![chip(1, "pinctrl-bcm2711", &names)], unreadable);
        assert_eq!(gpio.resolve(17), Ok(addr(1, 17)));
    }

    #[test]
    fn the_pin_controller_fallback_needs_the_offset_to_exist() {
        let chips = vec![chip(0, "pinctrl-bcm2835", &[""; 20])];
        assert_eq!(locate(&chips, 27), None);
    }
}
