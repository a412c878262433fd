//! The push button (design §4): a GPIO input (default BCM 17, pull-up, pressed =
//! low), debounced, with a long press (≥ 2 s).
//!
//! The pin is read through embedded-hal's `InputPin` (a line of `/dev/gpiochipN`,
//! opened by [`crate::outputs::gpio`]), polled every [`POLL`] and debounced. Events go
//! out on a broadcast channel, which two tasks follow:
//!
//! - the alert outputs (`outputs::buzzer`, local alerting owns the button): a long
//!   press mutes the buzzer; a short press acknowledges the first unacknowledged
//!   critical alert when there is no display;
//! - the display, when there is one: a short press wakes a dark panel, else
//!   acknowledges the critical alert (through the same shared acknowledgements,
//!   persisted in `state_dir`), else shows the next page; a long press wakes it.
//!
//! It is configured by `[button]`; `display.button` / `display.button_gpio`, its
//! former place, still work (deprecated).

use std::time::{Duration, Instant};

use embedded_hal::digital::InputPin;

use crate::outputs::gpio;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

/// The `[button]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ButtonConfig {
    /// Read the push button: a press wakes the panel, else acknowledges the critical
    /// alert, else shows the next page; a long press (≥ 2 s) mutes the buzzer. No GPIO
    /// (not a Pi) means no button, not an error. Default true.
    pub enabled: bool,
    /// BCM number of its GPIO input; the pull-up is turned on, so wire the button
    /// between the pin and ground. Default 17 (header pin 11).
    pub gpio: u8,
}

impl Default for ButtonConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            gpio: 17,
        }
    }
}

impl ButtonConfig {
    /// The button in effect: this `[button]`, with the deprecated `display.button`
    /// and `display.button_gpio` applied on top where they are set.
    pub fn with_deprecated(&self, enabled: Option<bool>, gpio: Option<u8>) -> ButtonConfig {
        ButtonConfig {
            enabled: self.enabled && enabled.unwrap_or(true),
            gpio: gpio.unwrap_or(self.gpio),
        }
    }

    /// Checks values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.gpio > 27 {
            return Err(format!(
                "button.gpio must be a BCM GPIO number from 0 to 27, found {}",
                self.gpio
            ));
        }
        Ok(())
    }
}

/// The next event from `events`; never completes when there is no button (`None`,
/// or the channel closed).
pub async fn next_event(events: &mut Option<broadcast::Receiver<ButtonEvent>>) -> ButtonEvent {
    loop {
        let Some(rx) = events.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(event) => return event,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => *events = None,
        }
    }
}

/// The button's name in health (shown once a GPIO line was found for it).
pub const OUTPUT_NAME: &str = "button";

/// How long the input must be steady before a change counts.
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// How long a press must last to be a long press.
pub const LONG_PRESS: Duration = Duration::from_secs(2);
/// How often the pin is read.
pub const POLL: Duration = Duration::from_millis(10);

/// A debounced button event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Pressed and released within [`LONG_PRESS`].
    Press,
    /// Held for [`LONG_PRESS`] (sent once, while still held; the release sends nothing).
    LongPress,
}

/// Turns raw pin readings into [`ButtonEvent`]s. Time is passed in, so it is tested
/// without a clock.
#[derive(Debug, Clone)]
pub struct Debouncer {
    raw: bool,
    raw_since: Instant,
    pressed: bool,
    pressed_at: Option<Instant>,
    long_sent: bool,
}

impl Debouncer {
    /// A released button at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            raw: false,
            raw_since: now,
            pressed: false,
            pressed_at: None,
            long_sent: false,
        }
    }

    /// Feeds one reading (`true` = pressed) taken at `now`.
    pub fn update(&mut self, pressed: bool, now: Instant) -> Option<ButtonEvent> {
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now;
        }
        if self.raw != self.pressed && now.saturating_duration_since(self.raw_since) >= DEBOUNCE {
            self.pressed = self.raw;
            if self.pressed {
                self.pressed_at = Some(now);
                self.long_sent = false;
            } else if self.pressed_at.take().is_some() && !self.long_sent {
                return Some(ButtonEvent::Press);
            }
        }
        if self.pressed
            && !self.long_sent
            && self
                .pressed_at
                .is_some_and(|t| now.saturating_duration_since(t) >= LONG_PRESS)
        {
            self.long_sent = true;
            return Some(ButtonEvent::LongPress);
        }
        None
    }
}

/// Polls `pin` every [`POLL`] until `stop`, sending events. `active_low`: pressed
/// reads low (a button to ground with the pull-up on).
pub async fn run<P: InputPin + Send>(
    mut pin: P,
    active_low: bool,
    events: broadcast::Sender<ButtonEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut debouncer = Debouncer::new(tokio::time::Instant::now().into_std());
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let level = match pin.is_high() {
            Ok(high) => high,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = ?e, "Cannot read the button's GPIO pin.");
                    warned = true;
                }
                continue;
            }
        };
        let now = tokio::time::Instant::now().into_std();
        if let Some(event) = debouncer.update(level != active_low, now) {
            tracing::debug!(?event, "Button.");
            // No receiver is fine: nothing listens yet.
            let _ = events.send(event);
        }
    }
}

/// Opens BCM pin `bcm` as an input with the pull-up on. `Ok(None)` when this machine
/// has no such GPIO line (not a Pi): no button, not an error.
pub fn open_pin(bcm: u8) -> Result<Option<gpio::InputLine>, String> {
    gpio::Gpio::scan().input("nodewatch-button", bcm, gpio::Pull::Up)
}

/// Starts the button task when the button (in effect: [`ButtonConfig::with_deprecated`])
/// is on, something acts on it (`wanted`: the display or local alerting is on) and the
/// pin opens; returns the sender to subscribe to.
pub fn spawn(
    button: &ButtonConfig,
    wanted: bool,
    outputs: &crate::output_registry::OutputRegistry,
    stop: watch::Receiver<bool>,
) -> Option<broadcast::Sender<ButtonEvent>> {
    if !button.enabled || !wanted {
        return None;
    }
    let gpio = button.gpio;
    match open_pin(gpio) {
        Ok(Some(pin)) => {
            let (events, _) = broadcast::channel(8);
            tokio::spawn(run(pin, true, events.clone(), stop));
            tracing::info!(gpio, "Reading the button.");
            outputs.report_health(OUTPUT_NAME, true, None);
            Some(events)
        }
        Ok(None) => {
            tracing::info!(gpio, "No such GPIO line (not a Raspberry Pi): no button.");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot open the button's GPIO line: no button.");
            outputs.report_health(OUTPUT_NAME, false, Some(e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `pressed` every 10 ms from `from` to `to` (ms), collecting events.
    fn feed(d: &mut Debouncer, t0: Instant, from: u64, to: u64, pressed: bool) -> Vec<ButtonEvent> {
        (from..to)
            .step_by(10)
            .filter_map(|t| d.update(pressed, t0 + ms(t)))
            .collect()
    }

    #[test]
    fn short_press_is_one_press_on_release() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(t0);
        assert!(feed(&mut d, t0, 0, 200, true).is_empty());
        assert_eq!(feed(&mut d, t0, 200, 300, false), vec![ButtonEvent::Press]);
    }

    #[test]
    fn bounces_are_ignored() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(t0);
        // Contact bounce: on/off every 10 ms for 50 ms, then released.
        let mut events = Vec::new();
        for i in 0..5 {
            events.extend(d.update(i % 2 == 0, t0 + ms(i * 10)));
        }
        events.extend(feed(&mut d, t0, 50, 300, false));
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn long_press_fires_once_while_held_and_release_is_silent() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(t0);
        let held = feed(&mut d, t0, 0, 3000, true);
        assert_eq!(held, vec![ButtonEvent::LongPress]);
        assert!(feed(&mut d, t0, 3000, 3200, false).is_empty());
        // The next short press is a press again.
        feed(&mut d, t0, 3200, 3300, true);
        assert_eq!(
            feed(&mut d, t0, 3300, 3400, false),
            vec![ButtonEvent::Press]
        );
    }

    #[derive(Debug, Clone)]
    struct SharedPin(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl embedded_hal::digital::ErrorType for SharedPin {
        type Error = std::convert::Infallible;
    }

    impl InputPin for SharedPin {
        fn is_high(&mut self) -> Result<bool, Self::Error> {
            Ok(self.0.load(std::sync::atomic::Ordering::Relaxed))
        }
        fn is_low(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.0.load(std::sync::atomic::Ordering::Relaxed))
        }
    }

    /// An active-low pin (pull-up, button to ground) through the polling task, under
    /// tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn polling_task_reports_presses_of_an_active_low_pin() {
        use std::sync::atomic::Ordering;
        let level = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, mut rx) = broadcast::channel(4);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(SharedPin(level.clone()), true, tx, stop_rx));
        tokio::time::sleep(ms(100)).await;
        level.store(false, Ordering::Relaxed); // pressed
        tokio::time::sleep(ms(200)).await;
        level.store(true, Ordering::Relaxed);
        tokio::time::sleep(ms(100)).await;
        assert_eq!(rx.try_recv().ok(), Some(ButtonEvent::Press));
        level.store(false, Ordering::Relaxed);
        tokio::time::sleep(ms(2500)).await;
        assert_eq!(rx.try_recv().ok(), Some(ButtonEvent::LongPress));
        let _ = stop_tx.send(true);
        task.await.expect("join");
    }
}
