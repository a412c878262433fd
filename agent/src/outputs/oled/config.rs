//! The `[display]` section of the agent's configuration.

use std::time::Duration;

use nodewatch_display::{Page, PanelSize, UiConfig};
use serde::Deserialize;

/// How the panel is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisplayDriver {
    /// Use the SSD1306 on `i2c_bus` when this is a Raspberry Pi and the bus exists
    /// (I2C on); otherwise simulate it (a PC's SMBus is never written to). A panel that does not answer yet is retried with backoff and is
    /// not an error until it has answered once.
    Auto,
    /// Require the SSD1306: a missing bus or a silent panel is an error in health.
    Ssd1306,
    /// Never touch I2C: the frame is only served at `/display.png`.
    Simulated,
}

/// The OLED display (SSD1306 on I2C) and its user interface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DisplayConfig {
    /// Draw the display at all (also `/display.png`). Default true.
    pub enabled: bool,
    /// `auto`, `ssd1306` or `simulated`. Default `auto`.
    pub driver: DisplayDriver,
    /// I2C bus number (`/dev/i2c-N`). Default 1, the Pi's header pins 3 and 5.
    pub i2c_bus: u8,
    /// The panel's 7-bit I2C address: 0x3C, or 0x3D with the address jumper moved.
    /// Default 0x3C (60).
    pub address: u8,
    /// Panel size, `128x64` or `128x32`. Default `128x64`.
    pub size: String,
    /// Rotation in degrees, 0 or 180 (panel mounted upside down). Default 0.
    pub rotation: u16,
    /// Seconds between redraws. Default 0.5.
    pub refresh_secs: f64,
    /// Pages in rotation order: overview, system, builder, wallet, alerts, network.
    /// Default all six.
    pub pages: Vec<String>,
    /// Seconds each page shows; 0 = stay on the first page. Default 5.
    pub rotate_secs: f64,
    /// Burn-in protection: seconds between one-pixel shifts of the picture; 0 = off.
    /// Default 120.
    pub shift_secs: f64,
    /// Burn-in protection: seconds without activity (button, worse status, new
    /// critical alert) before the panel dims, while all is OK; 0 = never. Default 600.
    pub dim_after_secs: f64,
    /// Burn-in protection: seconds without activity before the panel goes dark, while
    /// all is OK (a WARN or ALERT stays lit); 0 = never. Default 3600.
    pub blank_after_secs: f64,
    /// Seconds per phase of the critical takeover's flashing; 0 = steady reverse
    /// video. Default 1.
    pub flash_secs: f64,
    /// Deprecated: `button.enabled` (`[button]`). When set, `false` turns the button
    /// off. Default unset.
    pub button: Option<bool>,
    /// Deprecated: `button.gpio` (`[button]`). When set, it replaces it. Default unset.
    pub button_gpio: Option<u8>,
    /// `/metrics` URLs of the Scroll exporters (wallet :9101, reward :9102) whose
    /// figures the wallet page shows; plain `http://`. Default none: unknown (`--`).
    pub wallet_urls: Vec<String>,
    /// Wallet addresses whose balances are summed; default empty: every address the
    /// wallet exporter reports.
    pub wallet_addresses: Vec<String>,
    /// Seconds between reads of `wallet_urls`. Default 60.
    pub wallet_interval_secs: f64,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            driver: DisplayDriver::Auto,
            i2c_bus: 1,
            address: 0x3C,
            size: "128x64".into(),
            rotation: 0,
            refresh_secs: 0.5,
            pages: Page::ALL.iter().map(|p| p.name().to_string()).collect(),
            rotate_secs: 5.0,
            shift_secs: 120.0,
            dim_after_secs: 600.0,
            blank_after_secs: 3600.0,
            flash_secs: 1.0,
            button: None,
            button_gpio: None,
            wallet_urls: Vec::new(),
            wallet_addresses: Vec::new(),
            wallet_interval_secs: 60.0,
        }
    }
}

impl DisplayConfig {
    /// Checks values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.panel_size()?;
        if !(0x08..=0x77).contains(&self.address) {
            return Err(format!(
                "display.address must be a 7-bit I2C address (0x3C or 0x3D for an SSD1306), found {:#04x}",
                self.address
            ));
        }
        if !matches!(self.rotation, 0 | 180) {
            return Err(format!(
                "display.rotation must be 0 or 180, found {}",
                self.rotation
            ));
        }
        if !(self.refresh_secs.is_finite() && (0.05..=60.0).contains(&self.refresh_secs)) {
            return Err(format!(
                "display.refresh_secs must be from 0.05 to 60, found {}",
                self.refresh_secs
            ));
        }
        for (key, v) in [
            ("rotate_secs", self.rotate_secs),
            ("shift_secs", self.shift_secs),
            ("dim_after_secs", self.dim_after_secs),
            ("blank_after_secs", self.blank_after_secs),
            ("flash_secs", self.flash_secs),
        ] {
            if !(v.is_finite() && (0.0..=604_800.0).contains(&v)) {
                return Err(format!(
                    "display.{key} must be from 0 (off) to 604800 seconds, found {v}"
                ));
            }
        }
        if let Some(gpio) = self.button_gpio.filter(|&g| g > 27) {
            return Err(format!(
                "display.button_gpio (deprecated: use button.gpio) must be a BCM GPIO number from 0 to 27, found {gpio}"
            ));
        }
        if !(self.wallet_interval_secs.is_finite()
            && (1.0..=86_400.0).contains(&self.wallet_interval_secs))
        {
            return Err(format!(
                "display.wallet_interval_secs must be from 1 to 86400, found {}",
                self.wallet_interval_secs
            ));
        }
        super::wallet::parse_urls(&self.wallet_urls)?;
        self.page_list()?;
        Ok(())
    }

    /// The panel size.
    pub fn panel_size(&self) -> Result<PanelSize, String> {
        PanelSize::parse(&self.size).ok_or_else(|| {
            format!(
                "display.size must be \"128x64\" or \"128x32\", found {:?}",
                self.size
            )
        })
    }

    fn page_list(&self) -> Result<Vec<Page>, String> {
        self.pages
            .iter()
            .map(|name| {
                Page::from_name(name).ok_or_else(|| {
                    format!(
                        "display.pages: unknown page {name:?}; known: {}",
                        Page::ALL.map(|p| p.name()).join(", ")
                    )
                })
            })
            .collect()
    }

    /// The user interface's timing (after [`DisplayConfig::validate`]).
    pub fn ui(&self) -> UiConfig {
        let secs = |v: f64| Duration::from_secs_f64(v.clamp(0.0, 604_800.0));
        UiConfig {
            pages: self.page_list().unwrap_or_else(|_| Page::ALL.to_vec()),
            rotate: secs(self.rotate_secs),
            shift: secs(self.shift_secs),
            dim_after: secs(self.dim_after_secs),
            blank_after: secs(self.blank_after_secs),
            flash: secs(self.flash_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_ui_defaults() {
        let c = DisplayConfig::default();
        c.validate().expect("valid");
        assert_eq!(c.ui(), UiConfig::default());
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = DisplayConfig {
            size: "64x48".into(),
            ..DisplayConfig::default()
        };
        assert!(c.validate().expect_err("invalid").contains("display.size"));
        let c = DisplayConfig {
            rotation: 90,
            ..DisplayConfig::default()
        };
        assert!(
            c.validate()
                .expect_err("invalid")
                .contains("display.rotation")
        );
        let c = DisplayConfig {
            pages: vec!["overview".into(), "weather".into()],
            ..DisplayConfig::default()
        };
        assert!(c.validate().expect_err("invalid").contains("\"weather\""));
        let c = DisplayConfig {
            address: 0x80,
            ..DisplayConfig::default()
        };
        assert!(
            c.validate()
                .expect_err("invalid")
                .contains("display.address")
        );
    }
}
