//! The agent's outputs: what it drives besides `/metrics` (the OLED display, the push
//! button, the buzzer and status LED; the LoRa radio when its issue lands).
//!
//! Each output reports its health (shown under `outputs` in `/api/health/detailed`,
//! and a failing output makes the agent `degraded`) and its own metric families
//! (`nodewatch_display_*`, …) through the [`OutputRegistry`] the snapshot owns.

pub mod button;
pub mod buzzer;
pub mod gpio;
pub mod lora_link;
pub mod oled;

pub use crate::output_registry::OutputRegistry;
