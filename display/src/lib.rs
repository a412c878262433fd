//! nodewatch-display: the OLED user interface of a nodewatch node.
//!
//! Pure drawing and state: no tokio, no I/O, no clock of its own. The agent fills a
//! [`ViewModel`] from its snapshot, asks a [`Controller`] which [`Screen`] to show at
//! a given [`Instant`](std::time::Instant), and draws it with [`draw_screen`] on any
//! embedded-graphics `DrawTarget<Color = BinaryColor>` — the agent's [`Frame`], which
//! is laid out as the SSD1306's memory so frames can be diffed page by page.
//!
//! # Layout
//! - [`model`]: the view model (what the panel shows), also the JSON state format of
//!   `nodewatch-agent render --state`.
//! - [`pages`]: the pages for 128×64 and 128×32 panels, and the critical takeover.
//! - [`controller`]: page rotation, critical takeover and acknowledgement, burn-in
//!   pixel shift, dimming and blanking after idle, the button.
//! - [`frame`]: a 1-bit frame buffer in SSD1306 page layout, its diff and PNG form.

#![deny(missing_docs)]

pub mod controller;
pub mod frame;
pub mod model;
pub mod pages;

pub use controller::{Controller, PressOutcome, Screen, UiConfig};
/// embedded-graphics' point, for [`Screen`]'s shift.
pub use embedded_graphics::geometry::Point;
pub use frame::{ChangedArea, Frame, PanelSize};
pub use model::{
    Alert, Builder, BuilderState, LinkState, Lora, Severity, Source, Status, Usage, ViewModel,
    Wallet,
};
pub use pages::{Page, draw_screen};
