//! Buzzer patterns, quiet hours and persisted acknowledgements (issue 5, part 3).
//!
//! The tested core the GPIO output (`crate::outputs::buzzer`) drives: what to sound
//! when ([`BuzzerPolicy`], [`Buzzer::next_sound`]), how ([`pattern`], [`play`] on any
//! embedded-hal 1.0 `OutputPin`), and which alerts the operator acknowledged
//! ([`AckStore`], a JSON file in `state_dir`, shared by the display and the buzzer
//! through [`Acknowledgements`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;
use serde::Deserialize;
use tokio::sync::watch;

use super::{FiringAlert, Severity};

/// The `[alerts.buzzer]` section: the buzzer and the status LED.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BuzzerConfig {
    /// Sound local alerts on the buzzer. Without GPIO (not a Pi) it is simulated:
    /// logged at debug level, not an error. Default true.
    pub enabled: bool,
    /// BCM number of the buzzer's GPIO output (an active buzzer). Default 18 (header
    /// pin 12).
    pub gpio: u8,
    /// The buzzer sounds when the pin is high (false: when it is low). Default true.
    pub active_high: bool,
    /// Seconds between chirps while a warning fires. Default 600.
    pub warning_repeat_secs: u64,
    /// Local time span in which warnings (and resolutions) are silent, `HH:MM-HH:MM`,
    /// may wrap past midnight (`22:00-07:00`). Default none.
    pub quiet_hours: Option<String>,
    /// Whether critical alerts sound in quiet hours too. Default true.
    pub critical_in_quiet_hours: bool,
    /// Seconds a long press of the button (≥ 2 s) mutes the buzzer. Default 3600.
    pub mute_secs: u64,
    /// BCM number of the status LED's GPIO output; none = no LED. Default none.
    pub led_gpio: Option<u8>,
    /// The LED is lit when its pin is high (false: when it is low). Default true.
    pub led_active_high: bool,
}

impl Default for BuzzerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            gpio: 18,
            active_high: true,
            warning_repeat_secs: 600,
            quiet_hours: None,
            critical_in_quiet_hours: true,
            mute_secs: 3600,
            led_gpio: None,
            led_active_high: true,
        }
    }
}

impl BuzzerConfig {
    /// Checks values; the message names the key. `button_gpio`: the button's pin when
    /// it is on, which the buzzer and the LED must not share.
    pub fn validate(&self, button_gpio: Option<u8>) -> Result<(), String> {
        let bcm = |key: &str, gpio: u8| {
            if gpio > 27 {
                return Err(format!(
                    "alerts.buzzer.{key} must be a BCM GPIO number from 0 to 27, found {gpio}"
                ));
            }
            if button_gpio == Some(gpio) {
                return Err(format!(
                    "alerts.buzzer.{key} is GPIO {gpio}, which the button uses (button.gpio)"
                ));
            }
            Ok(())
        };
        if self.enabled {
            bcm("gpio", self.gpio)?;
        }
        if let Some(led) = self.led_gpio {
            bcm("led_gpio", led)?;
            if self.enabled && led == self.gpio {
                return Err(format!(
                    "alerts.buzzer.led_gpio must differ from alerts.buzzer.gpio, both are {led}"
                ));
            }
        }
        for (key, v) in [
            ("warning_repeat_secs", self.warning_repeat_secs),
            ("mute_secs", self.mute_secs),
        ] {
            if !(1..=604_800).contains(&v) {
                return Err(format!(
                    "alerts.buzzer.{key} must be from 1 to 604800 seconds, found {v}"
                ));
            }
        }
        self.quiet_hours()?;
        Ok(())
    }

    fn quiet_hours(&self) -> Result<Option<QuietHours>, String> {
        self.quiet_hours
            .as_deref()
            .map(|q| QuietHours::parse(q).map_err(|e| format!("alerts.buzzer.quiet_hours: {e}")))
            .transpose()
    }

    /// When to sound (after [`BuzzerConfig::validate`]).
    pub fn policy(&self) -> BuzzerPolicy {
        BuzzerPolicy {
            warning_repeat: Duration::from_secs(self.warning_repeat_secs.max(1)),
            quiet_hours: self.quiet_hours().ok().flatten(),
            critical_in_quiet_hours: self.critical_in_quiet_hours,
            mute_for: Duration::from_secs(self.mute_secs.max(1)),
        }
    }
}

/// One step of a pattern: the buzzer on or off for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Sounding.
    pub on: bool,
    /// For how long.
    pub duration: Duration,
}

const fn step(on: bool, millis: u64) -> Step {
    Step {
        on,
        duration: Duration::from_millis(millis),
    }
}

/// What the buzzer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    /// Three beeps and a pause; played again every cycle until acknowledged.
    Critical,
    /// One short chirp.
    Warning,
    /// One short tone, lower in duty than a chirp is long.
    Resolved,
}

const CRITICAL: &[Step] = &[
    step(true, 200),
    step(false, 150),
    step(true, 200),
    step(false, 150),
    step(true, 200),
    step(false, 1100),
];
const WARNING: &[Step] = &[step(true, 80)];
const RESOLVED: &[Step] = &[step(true, 300)];

/// The steps of a sound (a critical cycle lasts 2 s).
pub fn pattern(sound: Sound) -> &'static [Step] {
    match sound {
        Sound::Critical => CRITICAL,
        Sound::Warning => WARNING,
        Sound::Resolved => RESOLVED,
    }
}

/// Plays steps on a pin (high = sounding, for an active buzzer), leaving it low.
pub async fn play<P: OutputPin>(pin: &mut P, steps: &[Step]) -> Result<(), P::Error> {
    for s in steps {
        if s.on {
            pin.set_high()?;
        } else {
            pin.set_low()?;
        }
        tokio::time::sleep(s.duration).await;
    }
    pin.set_low()
}

/// A daily span of local time in which warnings are silent, e.g. `22:00-07:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start_minute: u16,
    end_minute: u16,
}

impl QuietHours {
    /// Parses `HH:MM-HH:MM` (it may wrap past midnight).
    pub fn parse(text: &str) -> Result<QuietHours, String> {
        let minute = |hm: &str| -> Option<u16> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60 && hm.trim().len() == 5).then_some(h * 60 + m)
        };
        let bad = || format!("quiet hours must look like 22:00-07:00, found {text:?}");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        Ok(QuietHours {
            start_minute: minute(start).ok_or_else(bad)?,
            end_minute: minute(end).ok_or_else(bad)?,
        })
    }

    /// Whether a minute of the day (0..1440) is inside.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

/// When the buzzer sounds.
#[derive(Debug, Clone, PartialEq)]
pub struct BuzzerPolicy {
    /// Time between chirps while a warning fires.
    pub warning_repeat: Duration,
    /// Quiet hours: warnings and resolutions are silent.
    pub quiet_hours: Option<QuietHours>,
    /// Whether critical alerts sound in quiet hours too (default yes).
    pub critical_in_quiet_hours: bool,
    /// How long a long press mutes the buzzer.
    pub mute_for: Duration,
}

impl Default for BuzzerPolicy {
    fn default() -> Self {
        Self {
            warning_repeat: Duration::from_secs(600),
            quiet_hours: None,
            critical_in_quiet_hours: true,
            mute_for: Duration::from_secs(3600),
        }
    }
}

/// Decides, cycle by cycle, what to play.
#[derive(Debug, Clone)]
pub struct Buzzer {
    policy: BuzzerPolicy,
    last_chirp: Option<Instant>,
    muted_until: Option<Instant>,
}

impl Buzzer {
    /// A buzzer that has not sounded yet.
    pub fn new(policy: BuzzerPolicy) -> Self {
        Self {
            policy,
            last_chirp: None,
            muted_until: None,
        }
    }

    /// A long press: silent until `now + mute_for`.
    pub fn mute(&mut self, now: Instant) {
        self.muted_until = Some(now + self.policy.mute_for);
    }

    /// Whether a mute is in force at `now`.
    pub fn is_muted(&self, now: Instant) -> bool {
        self.muted_until.is_some_and(|t| now < t)
    }

    /// Its policy.
    pub fn policy(&self) -> &BuzzerPolicy {
        &self.policy
    }

    /// The next instant at which [`Self::next_sound`] may answer differently with
    /// nothing else changed (no alert, acknowledgement or press in between): the end
    /// of a mute, or when the warning chirps again. With quiet hours (they begin and
    /// end on the wall clock) it is `now + poll`. `None`: not before another event.
    pub fn next_change(
        &self,
        firing: &[(FiringAlert, bool)],
        now: Instant,
        poll: Duration,
    ) -> Option<Instant> {
        if let Some(until) = self.muted_until.filter(|t| now < *t) {
            return Some(until);
        }
        let unacked = |severity| {
            firing
                .iter()
                .any(|(a, acked)| a.severity == severity && !acked)
        };
        if self.policy.quiet_hours.is_some() && !firing.is_empty() {
            return Some(now + poll);
        }
        if unacked(Severity::Critical) {
            // It sounds without a pause; this is only a fallback.
            return Some(now + poll);
        }
        if unacked(Severity::Warning) {
            return Some(
                self.last_chirp
                    .map_or(now, |t| t + self.policy.warning_repeat)
                    .max(now),
            );
        }
        None
    }

    /// What to play now. `firing` pairs each firing alert with whether it was
    /// acknowledged; `resolved` says an alert resolved since the last call;
    /// `minute_of_day` is local time, for quiet hours.
    pub fn next_sound(
        &mut self,
        firing: &[(FiringAlert, bool)],
        resolved: bool,
        now: Instant,
        minute_of_day: u16,
    ) -> Option<Sound> {
        let quiet = self
            .policy
            .quiet_hours
            .is_some_and(|q| q.contains(minute_of_day));
        let warning_firing = firing
            .iter()
            .any(|(a, acked)| a.severity == Severity::Warning && !acked);
        if !warning_firing {
            // The next warning chirps at once.
            self.last_chirp = None;
        }
        if self.muted_until.is_some_and(|t| now < t) {
            return None;
        }
        let critical = firing
            .iter()
            .any(|(a, acked)| a.severity == Severity::Critical && !acked);
        if critical && (!quiet || self.policy.critical_in_quiet_hours) {
            return Some(Sound::Critical);
        }
        if quiet {
            return None;
        }
        if warning_firing
            && self
                .last_chirp
                .is_none_or(|t| now.saturating_duration_since(t) >= self.policy.warning_repeat)
        {
            self.last_chirp = Some(now);
            return Some(Sound::Warning);
        }
        resolved.then_some(Sound::Resolved)
    }
}

/// The key an acknowledgement is kept under: the alert's name and labels.
pub fn alert_key(alert: &FiringAlert) -> String {
    let labels: Vec<String> = alert
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{}{{{}}}", alert.alertname, labels.join(","))
}

/// Acknowledged alerts, kept in `state_dir/acknowledged.json` so that a restart does
/// not sound them again. An alert's acknowledgement ends when it resolves.
#[derive(Debug)]
pub struct AckStore {
    path: PathBuf,
    keys: BTreeSet<String>,
}

impl AckStore {
    /// Loads the store from `state_dir` (empty when the file is absent; a corrupt file
    /// is an error naming it).
    pub fn load(state_dir: &Path) -> Result<AckStore, String> {
        let path = state_dir.join("acknowledged.json");
        let keys = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        Ok(AckStore { path, keys })
    }

    /// An empty store that saves to `state_dir` (after a file that could not be read).
    pub fn empty(state_dir: &Path) -> AckStore {
        AckStore {
            path: state_dir.join("acknowledged.json"),
            keys: BTreeSet::new(),
        }
    }

    /// The file it is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The acknowledged keys ([`alert_key`]).
    pub fn keys(&self) -> &BTreeSet<String> {
        &self.keys
    }

    /// Keeps only the keys `keep` says yes to; saves if anything changed. Returns
    /// whether anything changed.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Result<bool, String> {
        let before = self.keys.len();
        self.keys.retain(|k| keep(k));
        if self.keys.len() == before {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Whether the alert was acknowledged.
    pub fn is_acknowledged(&self, alert: &FiringAlert) -> bool {
        self.keys.contains(&alert_key(alert))
    }

    /// Acknowledges an alert and saves the store.
    pub fn acknowledge(&mut self, alert: &FiringAlert) -> Result<(), String> {
        if self.keys.insert(alert_key(alert)) {
            self.save()?;
        }
        Ok(())
    }

    /// Forgets acknowledgements of alerts no longer firing; saves if anything changed.
    pub fn retain_firing(&mut self, firing: &[FiringAlert]) -> Result<(), String> {
        let live: BTreeSet<String> = firing.iter().map(alert_key).collect();
        let before = self.keys.len();
        self.keys.retain(|k| live.contains(k));
        if self.keys.len() != before {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.keys).unwrap_or_default();
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "{}: cannot write: cannot create {}: {e}",
                    self.path.display(),
                    dir.display()
                )
            })?;
        }
        // Write then rename, so a power cut leaves the old file or the new one.
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: cannot write: {e}", self.path.display()))
    }
}

/// The acknowledgements the display and the buzzer share: one [`AckStore`] behind a
/// lock, and a watch that ticks on every change so both act at once.
///
/// An acknowledgement ends when its alert resolves. Resolution is seen by
/// [`Acknowledgements::sync`]: a key that was seen firing in this run and no longer
/// is, is forgotten at once; a key loaded from the file that never fires again (the
/// alert resolved while the agent was down) is forgotten once `settled` (after the
/// longest `for` of the rules, so a restart does not forget an alert still pending).
#[derive(Debug)]
pub struct Acknowledgements {
    inner: Mutex<AckInner>,
    changes: watch::Sender<u64>,
}

#[derive(Debug)]
struct AckInner {
    store: AckStore,
    /// Keys seen firing in this run.
    seen: BTreeSet<String>,
    /// The last load or save error, until a save succeeds.
    error: Option<String>,
}

impl Acknowledgements {
    /// Loads `state_dir/acknowledged.json`. A file that cannot be read is logged and
    /// kept as [`Acknowledgements::error`]; the store then starts empty (and the next
    /// acknowledgement writes a good file).
    pub fn open(state_dir: &Path) -> Arc<Acknowledgements> {
        let (store, error) = match AckStore::load(state_dir) {
            Ok(store) => (store, None),
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the acknowledged alerts; starting with none.");
                (AckStore::empty(state_dir), Some(e))
            }
        };
        if !store.keys().is_empty() {
            tracing::info!(
                count = store.keys().len(),
                "Acknowledged alerts loaded from the state directory."
            );
        }
        Arc::new(Acknowledgements {
            inner: Mutex::new(AckInner {
                store,
                seen: BTreeSet::new(),
                error,
            }),
            changes: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Ticks on every change of the acknowledged set.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The file's last load or save error, if no save succeeded since.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Whether the alert was acknowledged.
    pub fn is_acknowledged(&self, alert: &FiringAlert) -> bool {
        self.lock().store.is_acknowledged(alert)
    }

    /// How many of `firing` are acknowledged.
    pub fn count(&self, firing: &[FiringAlert]) -> usize {
        let inner = self.lock();
        firing
            .iter()
            .filter(|a| inner.store.is_acknowledged(a))
            .count()
    }

    /// The button's acknowledgement: the first firing critical alert nobody has
    /// acknowledged (`firing` is most severe first), with every other firing instance
    /// of the same rule (the display shows one line per rule). Returns its name, or
    /// `None` when there is none. The store is saved; a failed save is kept as
    /// [`Acknowledgements::error`] and the acknowledgement holds in memory.
    pub fn acknowledge_critical(&self, firing: &[FiringAlert]) -> Option<String> {
        let mut inner = self.lock();
        let name = firing
            .iter()
            .find(|a| a.severity == Severity::Critical && !inner.store.is_acknowledged(a))?
            .alertname
            .clone();
        let mut result = Ok(());
        for alert in firing
            .iter()
            .filter(|a| a.severity == Severity::Critical && a.alertname == name)
        {
            result = result.and(inner.store.acknowledge(alert));
        }
        inner.note(result);
        drop(inner);
        self.changed();
        Some(name)
    }

    /// Follows the firing alerts: forgets the acknowledgements of alerts seen firing
    /// that resolved, and (once `settled`) of alerts not firing at all.
    pub fn sync(&self, firing: &[FiringAlert], settled: bool) {
        let live: BTreeSet<String> = firing.iter().map(alert_key).collect();
        let mut inner = self.lock();
        let seen = std::mem::take(&mut inner.seen);
        let result = inner
            .store
            .retain(|k| live.contains(k) || !(settled || seen.contains(k)));
        inner.seen = live;
        if let Ok(false) = result {
            return;
        }
        inner.note(result.map(|_| ()));
        drop(inner);
        self.changed();
    }
}

impl AckInner {
    fn note(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.error = None,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot save the acknowledged alerts.");
                self.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Records each level change with the (paused) time since the start.
    struct MockPin {
        start: tokio::time::Instant,
        changes: Vec<(u64, bool)>,
        level: bool,
    }

    impl embedded_hal::digital::ErrorType for MockPin {
        type Error = std::convert::Infallible;
    }

    impl OutputPin for MockPin {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.set(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.set(true);
            Ok(())
        }
    }

    impl MockPin {
        fn new() -> Self {
            Self {
                start: tokio::time::Instant::now(),
                changes: Vec::new(),
                level: false,
            }
        }
        fn set(&mut self, level: bool) {
            if level != self.level || self.changes.is_empty() {
                let ms = self.start.elapsed().as_millis() as u64;
                self.changes.push((ms, level));
                self.level = level;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn patterns_have_their_timing_on_the_pin() {
        let mut pin = MockPin::new();
        let Ok(()) = play(&mut pin, pattern(Sound::Critical)).await;
        assert_eq!(
            pin.changes,
            [
                (0, true),
                (200, false),
                (350, true),
                (550, false),
                (700, true),
                (900, false)
            ]
        );
        assert_eq!(
            pin.start.elapsed(),
            Duration::from_millis(2000),
            "a 2 s cycle"
        );
        let mut pin = MockPin::new();
        let Ok(()) = play(&mut pin, pattern(Sound::Warning)).await;
        assert_eq!(pin.changes, [(0, true), (80, false)]);
        let mut pin = MockPin::new();
        let Ok(()) = play(&mut pin, pattern(Sound::Resolved)).await;
        assert_eq!(pin.changes, [(0, true), (300, false)]);
    }

    fn alert(name: &str, severity: Severity) -> FiringAlert {
        FiringAlert {
            alertname: name.into(),
            severity,
            labels: BTreeMap::from([("node".to_string(), "pi".to_string())]),
            value: 0.0,
            summary: String::new(),
            description: String::new(),
            active_since_unix: 0.0,
        }
    }

    #[test]
    fn critical_repeats_until_acknowledged() {
        let mut b = Buzzer::new(BuzzerPolicy::default());
        let t0 = Instant::now();
        let down = alert("BuilderDown", Severity::Critical);
        for i in 0..5 {
            let now = t0 + Duration::from_secs(2 * i);
            assert_eq!(
                b.next_sound(&[(down.clone(), false)], false, now, 720),
                Some(Sound::Critical)
            );
        }
        assert_eq!(b.next_sound(&[(down, true)], false, t0, 720), None);
    }

    #[test]
    fn warning_chirps_every_repeat_interval() {
        let mut b = Buzzer::new(BuzzerPolicy {
            warning_repeat: Duration::from_secs(300),
            ..BuzzerPolicy::default()
        });
        let t0 = Instant::now();
        let warm = [(alert("SocTemperatureHigh", Severity::Warning), false)];
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(b.next_sound(&warm, false, at(0), 720), Some(Sound::Warning));
        assert_eq!(b.next_sound(&warm, false, at(2), 720), None);
        assert_eq!(b.next_sound(&warm, false, at(299), 720), None);
        assert_eq!(
            b.next_sound(&warm, false, at(300), 720),
            Some(Sound::Warning)
        );
        // Resolved: one tone, then silence; a new warning chirps at once.
        assert_eq!(b.next_sound(&[], true, at(301), 720), Some(Sound::Resolved));
        assert_eq!(b.next_sound(&[], false, at(303), 720), None);
        assert_eq!(
            b.next_sound(&warm, false, at(305), 720),
            Some(Sound::Warning)
        );
    }

    #[test]
    fn next_change_is_the_next_chirp_or_the_end_of_a_mute() {
        let poll = Duration::from_secs(1);
        let mut b = Buzzer::new(BuzzerPolicy {
            warning_repeat: Duration::from_secs(300),
            ..BuzzerPolicy::default()
        });
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let warm = [(alert("SocTemperatureHigh", Severity::Warning), false)];
        // Nothing firing: nothing to wait for.
        assert_eq!(b.next_change(&[], t0, poll), None);
        // A new warning chirps at once, then again after the repeat interval.
        assert_eq!(b.next_change(&warm, at(0), poll), Some(at(0)));
        assert_eq!(b.next_sound(&warm, false, at(0), 720), Some(Sound::Warning));
        assert_eq!(b.next_change(&warm, at(2), poll), Some(at(300)));
        // An acknowledged warning never sounds again.
        let acked = [(warm[0].0.clone(), true)];
        assert_eq!(b.next_change(&acked, at(2), poll), None);
        // A mute: its end, whatever fires.
        b.mute(at(10));
        let down = [(alert("BuilderDown", Severity::Critical), false)];
        assert_eq!(b.next_change(&down, at(20), poll), Some(at(3610)));
        assert_eq!(b.next_change(&[], at(20), poll), Some(at(3610)));
        // Quiet hours begin and end on the wall clock: looked at every `poll`.
        let quiet = Buzzer::new(BuzzerPolicy {
            quiet_hours: Some(QuietHours::parse("22:00-07:00").expect("parse")),
            ..BuzzerPolicy::default()
        });
        assert_eq!(quiet.next_change(&warm, at(5), poll), Some(at(5) + poll));
        assert_eq!(quiet.next_change(&[], at(5), poll), None);
    }

    #[test]
    fn quiet_hours_silence_warnings_not_criticals() {
        let quiet = QuietHours::parse("22:00-07:00").expect("parse");
        assert!(quiet.contains(23 * 60) && quiet.contains(6 * 60 + 59));
        assert!(!quiet.contains(7 * 60) && !quiet.contains(12 * 60));
        let day = QuietHours::parse("12:30-13:00").expect("parse");
        assert!(day.contains(12 * 60 + 45) && !day.contains(13 * 60));
        assert!(QuietHours::parse("25:00-07:00").is_err());
        assert!(QuietHours::parse("22:00").is_err());
        assert!(QuietHours::parse("2:00-07:00").is_err());

        let policy = BuzzerPolicy {
            quiet_hours: Some(quiet),
            ..BuzzerPolicy::default()
        };
        let t0 = Instant::now();
        let night = 23 * 60;
        let warm = (alert("SocTemperatureHigh", Severity::Warning), false);
        let down = (alert("BuilderDown", Severity::Critical), false);
        let mut b = Buzzer::new(policy.clone());
        assert_eq!(
            b.next_sound(std::slice::from_ref(&warm), false, t0, night),
            None
        );
        assert_eq!(b.next_sound(&[], true, t0, night), None);
        assert_eq!(
            b.next_sound(&[warm.clone(), down.clone()], false, t0, night),
            Some(Sound::Critical)
        );
        let mut strict = Buzzer::new(BuzzerPolicy {
            critical_in_quiet_hours: false,
            ..policy
        });
        assert_eq!(strict.next_sound(&[down], false, t0, night), None);
    }

    #[test]
    fn long_press_mutes_for_an_hour() {
        let mut b = Buzzer::new(BuzzerPolicy::default());
        let t0 = Instant::now();
        let down = [(alert("BuilderDown", Severity::Critical), false)];
        b.mute(t0);
        assert_eq!(
            b.next_sound(&down, false, t0 + Duration::from_secs(3599), 720),
            None
        );
        assert_eq!(
            b.next_sound(&down, false, t0 + Duration::from_secs(3600), 720),
            Some(Sound::Critical)
        );
    }

    #[test]
    fn acknowledgements_survive_a_restart_and_end_with_the_alert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let down = alert("BuilderDown", Severity::Critical);
        let mut store = AckStore::load(dir.path()).expect("empty");
        assert!(!store.is_acknowledged(&down));
        store.acknowledge(&down).expect("save");
        let mut store = AckStore::load(dir.path()).expect("reload");
        assert!(store.is_acknowledged(&down));
        let mut other_node = down.clone();
        other_node.labels.insert("node".into(), "pi-02".into());
        assert!(!store.is_acknowledged(&other_node));
        store
            .retain_firing(std::slice::from_ref(&down))
            .expect("keep");
        assert!(
            AckStore::load(dir.path())
                .expect("reload")
                .is_acknowledged(&down)
        );
        store.retain_firing(&[]).expect("resolved");
        assert!(
            !AckStore::load(dir.path())
                .expect("reload")
                .is_acknowledged(&down)
        );
        std::fs::write(dir.path().join("acknowledged.json"), "{").expect("write");
        let err = AckStore::load(dir.path()).expect_err("corrupt");
        assert!(err.contains("acknowledged.json"), "{err}");
    }

    #[test]
    fn shared_acknowledgements_follow_the_firing_alerts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acks = Acknowledgements::open(dir.path());
        let changes = acks.subscribe();
        let down = alert("BuilderDown", Severity::Critical);
        let warm = alert("SocTemperatureHigh", Severity::Warning);
        // Warnings are not acknowledged by the button.
        assert_eq!(acks.acknowledge_critical(std::slice::from_ref(&warm)), None);
        assert!(!changes.has_changed().expect("open"));
        let firing = [down.clone(), warm.clone()];
        assert_eq!(
            acks.acknowledge_critical(&firing).as_deref(),
            Some("BuilderDown")
        );
        assert!(changes.has_changed().expect("open"));
        assert_eq!(acks.count(&firing), 1);
        assert_eq!(acks.acknowledge_critical(&firing), None, "nothing left");
        // Not firing yet after a restart (pending): kept until settled.
        let acks = Acknowledgements::open(dir.path());
        acks.sync(&[], false);
        assert!(acks.is_acknowledged(&down));
        acks.sync(&[], true);
        assert!(!acks.is_acknowledged(&down), "settled: forgotten");
        // Seen firing, then resolved: forgotten at once.
        acks.acknowledge_critical(std::slice::from_ref(&down));
        acks.sync(std::slice::from_ref(&down), false);
        assert!(acks.is_acknowledged(&down));
        acks.sync(&[], false);
        assert!(!acks.is_acknowledged(&down));
        assert!(
            !Acknowledgements::open(dir.path()).is_acknowledged(&down),
            "saved"
        );
        assert_eq!(acks.error(), None);
    }

    #[test]
    fn an_unwritable_state_dir_keeps_the_acknowledgement_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the directory should be.
        let blocked = dir.path().join("state");
        std::fs::write(&blocked, "").expect("write");
        let acks = Acknowledgements::open(&blocked);
        let down = alert("BuilderDown", Severity::Critical);
        assert!(
            acks.acknowledge_critical(std::slice::from_ref(&down))
                .is_some()
        );
        assert!(acks.is_acknowledged(&down));
        let err = acks.error().expect("save error");
        assert!(err.contains("acknowledged.json"), "{err}");
    }
}
