//! The buzzer and status LED on GPIO (design §4, issue 5 part 3): the output that
//! sounds the local alerts, and the owner of the button's acknowledgement and mute.
//!
//! The task follows the evaluator's firing alerts (`Snapshot::subscribe_alerts`), diffs
//! each new list against the last to find resolutions, asks the shared
//! [`Acknowledgements`] which alerts the operator acknowledged, and plays what
//! [`Buzzer::next_sound`] says, step by step, on an embedded-hal `OutputPin`:
//!
//! - critical (not acknowledged): three beeps every 2 s, until acknowledged, resolved
//!   or muted; a new critical alert starts sounding at once (the watch wakes the task);
//! - warning: one short chirp, again every `warning_repeat_secs` while it fires;
//! - resolved (a warning or critical alert): one short tone;
//! - quiet hours (local time): warnings and resolutions are silent, critical alerts
//!   sound unless `critical_in_quiet_hours = false`;
//! - a long press of the button mutes it for `mute_secs`.
//!
//! The status LED (optional): steady on while a critical alert is not acknowledged,
//! blinking (0.5 s on, 0.5 s off) while a warning or an acknowledged critical alert
//! fires, off when none does. Quiet hours and the mute do not apply to it.
//!
//! A short press acknowledges the first unacknowledged critical alert: here when
//! there is no display; with a display, the display task routes the press (wake a dark
//! panel, else acknowledge, else next page) through the same [`Acknowledgements`].
//!
//! Pins are opened in [`open_pin`] through [`crate::outputs::gpio`] (the kernel's
//! `/dev/gpiochipN`). Off a Pi (no such GPIO line) the pins are [`SimulatedPin`]s:
//! logged at debug level, not an error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use embedded_hal::digital::OutputPin;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::alerts::bus::AlertBus;
use crate::alerts::sound::{Acknowledgements, Buzzer, BuzzerPolicy, Sound, Step, pattern};
use crate::alerts::{FiringAlert, Severity};
use crate::metrics::MetricSink;
use crate::outputs::button::{self, ButtonEvent};
use crate::outputs::gpio;
use crate::snapshot::Snapshot;

/// The output's name in health and logs.
pub const OUTPUT_NAME: &str = "buzzer";
/// Half period of the LED's blinking.
pub const BLINK: Duration = Duration::from_millis(500);
/// How often the task looks again while alerts fire and quiet hours are configured
/// (they start and end on the wall clock).
const POLL: Duration = Duration::from_secs(1);
/// Added to the longest `for` of the rules before acknowledgements of alerts that
/// never fired again since the start are forgotten.
const SETTLE_MARGIN: Duration = Duration::from_secs(120);

pub use crate::alerts::sound::BuzzerConfig;

/// What the status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    /// No warning or critical alert fires.
    Off,
    /// A warning, or only acknowledged critical alerts, fire.
    Blink,
    /// A critical alert is not acknowledged.
    On,
}

impl LedState {
    /// The LED's state for these alerts.
    pub fn of(firing: &[FiringAlert], acks: &Acknowledgements) -> LedState {
        let mut state = LedState::Off;
        for alert in firing {
            match alert.severity {
                Severity::Critical if !acks.is_acknowledged(alert) => return LedState::On,
                Severity::Critical | Severity::Warning => state = LedState::Blink,
                Severity::Info => {}
            }
        }
        state
    }

    fn value(self) -> f64 {
        match self {
            LedState::Off => 0.0,
            LedState::Blink => 1.0,
            LedState::On => 2.0,
        }
    }
}

/// A pin that is not there: each change is logged at debug level and kept (the last
/// 64, with the wall-clock time), for tests and the curious.
#[derive(Debug, Clone)]
pub struct SimulatedPin {
    name: &'static str,
    on: bool,
    changes: Arc<Mutex<VecDeque<(SystemTime, bool)>>>,
}

impl SimulatedPin {
    /// A simulated pin, off.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            on: false,
            changes: Arc::default(),
        }
    }

    /// Its last changes, oldest first: when, and on (`true`) or off.
    pub fn changes(&self) -> Vec<(SystemTime, bool)> {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        changes.iter().copied().collect()
    }

    fn set(&mut self, on: bool) {
        if on == self.on {
            return;
        }
        self.on = on;
        tracing::debug!(
            output = self.name,
            state = if on { "on" } else { "off" },
            "Simulated GPIO output."
        );
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if changes.len() == 64 {
            changes.pop_front();
        }
        changes.push_back((SystemTime::now(), on));
    }
}

impl embedded_hal::digital::ErrorType for SimulatedPin {
    type Error = std::convert::Infallible;
}

impl OutputPin for SimulatedPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.set(true);
        Ok(())
    }
}

/// A buzzer or LED pin at the edge: high = on, whatever the wiring's polarity.
#[derive(Debug)]
pub enum EdgePin {
    /// A GPIO line, its polarity set in the kernel (active low or high).
    Gpio(gpio::OutputLine),
    /// No GPIO: logged.
    Simulated(SimulatedPin),
}

impl embedded_hal::digital::ErrorType for EdgePin {
    type Error = gpio::LineError;
}

impl OutputPin for EdgePin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        match self {
            EdgePin::Gpio(line) => line.set_low(),
            EdgePin::Simulated(pin) => pin.set_low().map_err(|never| match never {}),
        }
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        match self {
            EdgePin::Gpio(line) => line.set_high(),
            EdgePin::Simulated(pin) => pin.set_high().map_err(|never| match never {}),
        }
    }
}

/// Opens BCM `bcm` as a switch output, off, on the GPIO found by `gpio`. Off a Pi (no
/// such GPIO line) the pin is simulated and there is no error; any other failure (no
/// permission on /dev/gpiochipN, line busy) is simulated too, with the error. The
/// line is pulled to its off level, so it stays off after the agent exits.
pub fn open_pin(
    gpio: &gpio::Gpio,
    name: &'static str,
    bcm: u8,
    active_high: bool,
) -> (EdgePin, Option<String>) {
    match gpio.switch(&format!("nodewatch-{name}"), bcm, !active_high) {
        Ok(Some(line)) => {
            tracing::info!(output = name, gpio = bcm, active_high, "GPIO output ready.");
            (EdgePin::Gpio(line), None)
        }
        Ok(None) => {
            tracing::info!(
                output = name,
                gpio = bcm,
                "No such GPIO line (not a Raspberry Pi): simulated (logged at debug level)."
            );
            (EdgePin::Simulated(SimulatedPin::new(name)), None)
        }
        Err(e) => {
            let message = format!("{name} on GPIO {bcm}: {e}");
            tracing::warn!(error = %message, "Cannot open the GPIO output: simulated.");
            (EdgePin::Simulated(SimulatedPin::new(name)), Some(message))
        }
    }
}

/// The local time as a minute of the day (0..1440), for quiet hours: the system's
/// time zone (`TZ`, else `/etc/localtime`), through the same safe `localtime_r`
/// wrapper as `node_time_zone_offset_seconds` (no time zone crate: jiff cost 243 KiB
/// of binary); UTC when it fails.
pub fn local_minute_of_day() -> u16 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let offset = crate::collectors::time::local_zone(unix)
        .map(|(_, offset)| offset)
        .unwrap_or(0);
    minute_of_day(unix, offset)
}

/// The minute of the day at `unix` seconds, `offset` seconds east of UTC.
pub fn minute_of_day(unix: u64, offset: i64) -> u16 {
    let local = i128::from(unix) + i128::from(offset);
    (local.rem_euclid(86_400) / 60) as u16
}

/// The local time source: a function, so tests can set the clock.
pub type LocalClock = Box<dyn Fn() -> u16 + Send + Sync>;

/// Everything the task needs besides its pins.
#[derive(Debug)]
pub struct TaskContext {
    /// Where metrics and health go.
    pub snapshot: Arc<Snapshot>,
    /// Where the firing alerts come from.
    pub alerts: Arc<AlertBus>,
    /// The acknowledgements shared with the display.
    pub acks: Arc<Acknowledgements>,
    /// Button events, when there is a button.
    pub buttons: Option<broadcast::Receiver<ButtonEvent>>,
    /// Whether short presses acknowledge here (no display to route them).
    pub handles_press: bool,
    /// When to sound.
    pub policy: BuzzerPolicy,
    /// After how long acknowledgements of alerts that never fired again are dropped.
    pub settle_after: Duration,
    /// The buzzer pin is simulated.
    pub simulated: bool,
    /// An error opening a pin, for health.
    pub pin_error: Option<String>,
}

/// Starts the alert outputs' task when local alerting is on: the buzzer (unless
/// `alerts.buzzer.enabled = false`), the LED (when `led_gpio` is set), the
/// acknowledgements' upkeep, and the button's mute (and its acknowledgement when
/// `handles_press`: there is no display). Ends, pins off, when `stop` turns true.
pub fn spawn(
    config: &crate::alerts::AlertsConfig,
    snapshot: Arc<Snapshot>,
    alerts: Arc<AlertBus>,
    acks: Arc<Acknowledgements>,
    buttons: Option<broadcast::Receiver<ButtonEvent>>,
    handles_press: bool,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if !config.enabled {
        return None;
    }
    let c = &config.buzzer;
    let mut errors = Vec::new();
    let chips = gpio::Gpio::scan();
    let mut open = |name, bcm, active_high| {
        let (pin, error) = open_pin(&chips, name, bcm, active_high);
        errors.extend(error);
        pin
    };
    let buzzer = c.enabled.then(|| open("buzzer", c.gpio, c.active_high));
    let led = c.led_gpio.map(|g| open("led", g, c.led_active_high));
    let simulated = matches!(buzzer, Some(EdgePin::Simulated(_)));
    let longest_for = crate::alerts::effective_rules(config)
        .map(|rules| rules.iter().map(|r| r.for_secs).max().unwrap_or(0))
        .unwrap_or(0);
    let context = TaskContext {
        snapshot,
        alerts,
        acks,
        buttons,
        handles_press,
        policy: c.policy(),
        settle_after: Duration::from_secs(longest_for) + SETTLE_MARGIN,
        simulated,
        pin_error: (!errors.is_empty()).then(|| errors.join("; ")),
    };
    let clock: LocalClock = Box::new(local_minute_of_day);
    Some(spawn_with_pins(buzzer, led, context, clock, stop))
}

/// [`spawn`] with the pins and the local clock given (tests use recording pins).
pub fn spawn_with_pins<B, L>(
    buzzer: Option<B>,
    led: Option<L>,
    context: TaskContext,
    clock: LocalClock,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    B: OutputPin + Send + 'static,
    L: OutputPin + Send + 'static,
{
    let alerts = context.alerts.subscribe_alerts();
    let now = Instant::now();
    let task = AlertOutputs {
        buzzer,
        led,
        logic: Buzzer::new(context.policy),
        clock,
        acks_rx: context.acks.subscribe(),
        acks: context.acks,
        snapshot: context.snapshot,
        _alerts: context.alerts,
        handles_press: context.handles_press,
        firing: Arc::default(),
        resolved: false,
        player: None,
        led_state: LedState::Off,
        led_lit: false,
        led_next: now,
        started: now,
        settle_after: context.settle_after,
        settled: false,
        sounds: [0; 3],
        last_on_unix: 0.0,
        muted: false,
        simulated: context.simulated,
        pin_error: context.pin_error,
        health: None,
        dirty: true,
    };
    tokio::spawn(task.run(alerts, context.buttons, stop))
}

/// `steps` as one beep: on from the first step to the end of the last sounding one,
/// then off for the rest.
fn heard_as_one(steps: &[Step]) -> Vec<Step> {
    let sounding = steps.iter().rposition(|s| s.on).map_or(0, |i| i + 1);
    let span = |steps: &[Step]| steps.iter().map(|s| s.duration).sum::<Duration>();
    let mut one = vec![Step {
        on: true,
        duration: span(&steps[..sounding]),
    }];
    let rest = span(&steps[sounding..]);
    if !rest.is_zero() {
        one.push(Step {
            on: false,
            duration: rest,
        });
    }
    one
}

/// A sound being played: its steps, the one playing, and when it ends.
#[derive(Debug)]
struct Player {
    sound: Sound,
    steps: Vec<Step>,
    index: usize,
    until: Instant,
}

struct AlertOutputs<B, L> {
    buzzer: Option<B>,
    led: Option<L>,
    logic: Buzzer,
    clock: LocalClock,
    acks: Arc<Acknowledgements>,
    acks_rx: watch::Receiver<u64>,
    /// Held so the bus outlives the subscription even if its owner lets go.
    _alerts: Arc<AlertBus>,
    snapshot: Arc<Snapshot>,
    handles_press: bool,
    /// The firing alerts as last seen.
    firing: Arc<Vec<FiringAlert>>,
    /// A warning or critical alert resolved since the last decision.
    resolved: bool,
    player: Option<Player>,
    led_state: LedState,
    led_lit: bool,
    led_next: Instant,
    started: Instant,
    settle_after: Duration,
    settled: bool,
    /// Sounds started: critical, warning, resolved.
    sounds: [u64; 3],
    last_on_unix: f64,
    muted: bool,
    simulated: bool,
    pin_error: Option<String>,
    /// The health last reported.
    health: Option<(bool, Option<String>)>,
    /// Metrics to publish.
    dirty: bool,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl<B: OutputPin, L: OutputPin> AlertOutputs<B, L> {
    async fn run(
        mut self,
        mut alerts: watch::Receiver<Arc<Vec<FiringAlert>>>,
        mut buttons: Option<broadcast::Receiver<ButtonEvent>>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.firing = alerts.borrow_and_update().clone();
        self.acks.sync(&self.firing, false);
        self.set_buzzer(false);
        self.set_led(false);
        loop {
            let now = Instant::now();
            self.advance(now);
            self.publish(now);
            let deadline = self.deadline(now);
            tokio::select! {
                _ = sleep_until(deadline) => {}
                changed = alerts.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let firing = alerts.borrow_and_update().clone();
                    self.on_alerts(firing);
                }
                _ = self.acks_rx.changed() => self.interrupt_if_acknowledged(),
                event = button::next_event(&mut buttons) => self.on_button(event, Instant::now()),
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
        }
        // Leave the buzzer and the LED off.
        self.player = None;
        self.set_buzzer(false);
        self.led_state = LedState::Off;
        self.set_led(false);
        self.dirty = true;
        self.publish(Instant::now());
    }

    fn unacknowledged_critical(&self) -> bool {
        self.firing
            .iter()
            .any(|a| a.severity == Severity::Critical && !self.acks.is_acknowledged(a))
    }

    fn on_alerts(&mut self, firing: Arc<Vec<FiringAlert>>) {
        let resolved = self.firing.iter().any(|old| {
            old.severity >= Severity::Warning
                && !firing
                    .iter()
                    .any(|new| new.alertname == old.alertname && new.labels == old.labels)
        });
        if resolved {
            tracing::debug!("An alert resolved.");
        }
        self.resolved |= resolved;
        self.firing = firing;
        self.acks.sync(&self.firing, self.settled);
        self.interrupt_if_acknowledged();
        self.dirty = true;
    }

    /// Stops a critical pattern as soon as no critical alert needs it.
    fn interrupt_if_acknowledged(&mut self) {
        self.dirty = true;
        if self
            .player
            .as_ref()
            .is_some_and(|p| p.sound == Sound::Critical)
            && !self.unacknowledged_critical()
        {
            self.player = None;
            self.set_buzzer(false);
        }
    }

    fn on_button(&mut self, event: ButtonEvent, now: Instant) {
        match event {
            ButtonEvent::Press if self.handles_press => {
                match self.acks.acknowledge_critical(&self.firing) {
                    Some(name) => {
                        tracing::info!(alertname = name.as_str(), "Button: alert acknowledged.");
                    }
                    None => tracing::debug!("Button press: no critical alert to acknowledge."),
                }
                self.interrupt_if_acknowledged();
            }
            ButtonEvent::Press => {}
            ButtonEvent::LongPress => {
                self.logic.mute(now.into_std());
                self.player = None;
                self.set_buzzer(false);
                self.dirty = true;
                tracing::info!(
                    secs = self.logic.policy().mute_for.as_secs(),
                    "Button held: buzzer muted."
                );
            }
        }
    }

    fn set_buzzer(&mut self, on: bool) {
        let Some(pin) = self.buzzer.as_mut() else {
            return;
        };
        let result = if on { pin.set_high() } else { pin.set_low() };
        match result {
            Ok(()) if on => {
                self.last_on_unix = crate::metrics::unix_now();
                self.dirty = true;
            }
            Ok(()) => {}
            Err(e) => {
                if self.pin_error.is_none() {
                    tracing::warn!(error = ?e, "Cannot drive the buzzer's GPIO pin.");
                }
                self.pin_error = Some(format!("buzzer pin: {e:?}"));
                self.dirty = true;
            }
        }
    }

    fn set_led(&mut self, lit: bool) {
        self.led_lit = lit;
        let Some(pin) = self.led.as_mut() else {
            return;
        };
        let result = if lit { pin.set_high() } else { pin.set_low() };
        if let Err(e) = result {
            if self.pin_error.is_none() {
                tracing::warn!(error = ?e, "Cannot drive the LED's GPIO pin.");
            }
            self.pin_error = Some(format!("LED pin: {e:?}"));
            self.dirty = true;
        }
    }

    /// Plays on, decides the next sound when none plays, and drives the LED.
    fn advance(&mut self, now: Instant) {
        if !self.settled && now.saturating_duration_since(self.started) >= self.settle_after {
            self.settled = true;
            self.acks.sync(&self.firing, true);
        }
        // The sound playing: as many steps as have ended.
        while let Some(p) = self.player.as_mut() {
            if now < p.until {
                break;
            }
            p.index += 1;
            match p.steps.get(p.index).copied() {
                Some(step) => {
                    p.until += step.duration;
                    self.set_buzzer(step.on);
                }
                None => {
                    self.player = None;
                    self.set_buzzer(false);
                }
            }
        }
        if self.player.is_none() && self.buzzer.is_some() {
            let firing = self.firing_with_acks();
            let minute = if self.logic.policy().quiet_hours.is_some() {
                (self.clock)()
            } else {
                12 * 60
            };
            let resolved = std::mem::take(&mut self.resolved);
            if let Some(sound) = self
                .logic
                .next_sound(&firing, resolved, now.into_std(), minute)
            {
                let steps = pattern(sound);
                if let Some(first) = steps.first() {
                    // A simulated pin has nobody to hear the rhythm: on for the span of
                    // the beeps, then off, rather than a wake-up per beep.
                    let steps = if self.simulated {
                        heard_as_one(steps)
                    } else {
                        steps.to_vec()
                    };
                    let first_for = steps.first().map_or(first.duration, |s| s.duration);
                    tracing::debug!(?sound, "Buzzer.");
                    self.sounds[match sound {
                        Sound::Critical => 0,
                        Sound::Warning => 1,
                        Sound::Resolved => 2,
                    }] += 1;
                    self.player = Some(Player {
                        sound,
                        steps,
                        index: 0,
                        until: now + first_for,
                    });
                    self.set_buzzer(first.on);
                    self.dirty = true;
                }
            }
        }
        let muted = self.logic.is_muted(now.into_std());
        if muted != self.muted {
            self.muted = muted;
            self.dirty = true;
        }
        // The LED.
        let state = LedState::of(&self.firing, &self.acks);
        if state != self.led_state {
            self.led_state = state;
            self.led_next = now + BLINK;
            self.set_led(state != LedState::Off);
            self.dirty = true;
        } else if state == LedState::Blink && now >= self.led_next {
            while self.led_next <= now {
                self.led_next += BLINK;
            }
            let lit = !self.led_lit;
            self.set_led(lit);
        }
    }

    /// Each firing alert with whether it was acknowledged.
    fn firing_with_acks(&self) -> Vec<(FiringAlert, bool)> {
        self.firing
            .iter()
            .map(|a| (a.clone(), self.acks.is_acknowledged(a)))
            .collect()
    }

    /// When to wake up next without an event.
    fn deadline(&self, now: Instant) -> Option<Instant> {
        let mut next = self.player.as_ref().map(|p| p.until);
        let mut earliest = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if self.led.is_some() && self.led_state == LedState::Blink {
            earliest(self.led_next);
        }
        // While a sound plays, its end is the next look; else the buzzer logic says
        // when, with nothing else happening, it would sound (a warning's repeat, the
        // end of a mute), rather than a look every second.
        if self.buzzer.is_some() && self.player.is_none() {
            let firing = self.firing_with_acks();
            if let Some(at) = self.logic.next_change(&firing, now.into_std(), POLL) {
                earliest(Instant::from_std(at));
            }
        }
        if !self.settled {
            earliest(self.started + self.settle_after);
        }
        next
    }

    fn publish(&mut self, now: Instant) {
        let ok = self.pin_error.is_none() && self.acks.error().is_none();
        let error = self.acks.error().or_else(|| self.pin_error.clone());
        let health = (ok, error);
        let configured = self.buzzer.is_some() || self.led.is_some();
        // Reported when there is a pin, or once something went wrong.
        if self.health.as_ref() != Some(&health)
            && (configured || !health.0 || self.health.is_some())
        {
            self.snapshot
                .outputs()
                .report_health(OUTPUT_NAME, health.0, health.1.clone());
            self.health = Some(health);
        }
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let mut sink = MetricSink::new();
        if self.buzzer.is_some() {
            let help = "Sounds the buzzer started, by kind (critical: one 2 s cycle of three beeps; warning: a chirp; resolved: one tone).";
            for (sound, n) in ["critical", "warning", "resolved"].iter().zip(self.sounds) {
                sink.counter(
                    "nodewatch_buzzer_sounds_total",
                    help,
                    &[("sound", sound)],
                    n as f64,
                );
            }
            sink.gauge(
                "nodewatch_buzzer_muted",
                "1 while a long press of the button has the buzzer muted.",
                &[],
                if self.logic.is_muted(now.into_std()) {
                    1.0
                } else {
                    0.0
                },
            );
            sink.gauge(
                "nodewatch_buzzer_simulated",
                "1 when there is no GPIO and the buzzer is only logged.",
                &[],
                if self.simulated { 1.0 } else { 0.0 },
            );
            sink.gauge(
                "nodewatch_buzzer_last_on_timestamp_seconds",
                "When the buzzer last went on (unix seconds; 0: not since the start).",
                &[],
                self.last_on_unix,
            );
        }
        if self.led.is_some() {
            sink.gauge(
                "nodewatch_status_led_state",
                "The status LED: 0 off, 1 blinking (a warning or an acknowledged critical alert), 2 on (a critical alert not acknowledged).",
                &[],
                self.led_state.value(),
            );
        }
        sink.gauge(
            "nodewatch_alerts_acknowledged",
            "Firing local alerts acknowledged with the button (kept in state_dir across restarts).",
            &[],
            self.acks.count(&self.firing) as f64,
        );
        self.snapshot
            .outputs()
            .set_metrics(OUTPUT_NAME, &sink.into_families());
    }
}

#[cfg(test)]
mod tests;
