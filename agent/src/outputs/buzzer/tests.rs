//! The buzzer and LED task on recording pins, under tokio's paused clock.

use crate::alerts::bus::AlertBus;
use crate::alerts::sound::QuietHours;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

use super::*;
use crate::alerts::sound::AckStore;
use crate::config::Config;

/// Records each level change, in ms since the harness started (paused clock).
#[derive(Debug, Clone)]
struct RecPin {
    start: Instant,
    changes: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl RecPin {
    fn new(start: Instant) -> Self {
        Self {
            start,
            changes: Arc::default(),
        }
    }

    fn set(&self, on: bool) {
        let mut changes = self.changes.lock().expect("lock");
        // Starts off: an initial "off" is no change.
        if changes.last().is_some_and(|c| c.1) != on {
            changes.push((self.start.elapsed().as_millis() as u64, on));
        }
    }

    fn changes(&self) -> Vec<(u64, bool)> {
        self.changes.lock().expect("lock").clone()
    }

    /// Changes from `from` ms on.
    fn since(&self, from: u64) -> Vec<(u64, bool)> {
        self.changes().into_iter().filter(|c| c.0 >= from).collect()
    }

    fn is_on(&self) -> bool {
        self.changes().last().is_some_and(|c| c.1)
    }

    /// How many times it went on in `[from, to)` ms.
    fn ons(&self, from: u64, to: u64) -> usize {
        self.changes()
            .iter()
            .filter(|c| c.1 && (from..to).contains(&c.0))
            .count()
    }
}

impl embedded_hal::digital::ErrorType for RecPin {
    type Error = std::convert::Infallible;
}

impl OutputPin for RecPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.set(true);
        Ok(())
    }
}

fn alert(name: &str, severity: Severity) -> FiringAlert {
    FiringAlert {
        alertname: name.into(),
        severity,
        labels: BTreeMap::from([("node".to_string(), "pi".to_string())]),
        value: 1.0,
        summary: String::new(),
        description: String::new(),
        active_since_unix: 0.0,
    }
}

struct Harness {
    alerts: Arc<AlertBus>,
    snapshot: Arc<Snapshot>,
    acks: Arc<Acknowledgements>,
    buzzer: RecPin,
    led: RecPin,
    buttons: broadcast::Sender<ButtonEvent>,
    minute: Arc<AtomicU16>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Options {
    policy: BuzzerPolicy,
    handles_press: bool,
    settle_after: Duration,
    /// The pins stand for simulated ones (no GPIO line), not for hardware.
    simulated: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: BuzzerPolicy::default(),
            handles_press: true,
            settle_after: Duration::from_secs(3600),
            simulated: false,
        }
    }
}

fn start(dir: &Path, options: Options) -> Harness {
    let snapshot = Arc::new(Snapshot::new(Vec::new()));
    start_on(snapshot, dir, options)
}

/// [`start`] with the pins standing for simulated ones.
fn start_simulated(dir: &Path) -> Harness {
    start(
        dir,
        Options {
            simulated: true,
            ..Options::default()
        },
    )
}

fn start_on(snapshot: Arc<Snapshot>, dir: &Path, options: Options) -> Harness {
    let now = Instant::now();
    let acks = Acknowledgements::open(dir);
    let (buttons, rx) = broadcast::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let buzzer = RecPin::new(now);
    let led = RecPin::new(now);
    let minute = Arc::new(AtomicU16::new(12 * 60));
    let clock_minute = minute.clone();
    let alerts = Arc::new(AlertBus::default());
    let task = spawn_with_pins(
        Some(buzzer.clone()),
        Some(led.clone()),
        TaskContext {
            snapshot: snapshot.clone(),
            alerts: alerts.clone(),
            acks: acks.clone(),
            buttons: Some(rx),
            handles_press: options.handles_press,
            policy: options.policy,
            settle_after: options.settle_after,
            simulated: options.simulated,
            pin_error: None,
        },
        Box::new(move || clock_minute.load(Ordering::Relaxed)),
        stop_rx,
    );
    Harness {
        snapshot,
        alerts,
        acks,
        buzzer,
        led,
        buttons,
        minute,
        stop,
        task,
    }
}

impl Harness {
    fn set(&self, alerts: Vec<FiringAlert>) {
        self.alerts.set_alerts(alerts);
    }

    fn press(&self, event: ButtonEvent) {
        self.buttons.send(event).expect("a receiver");
    }

    fn metrics(&self) -> String {
        let mut body = Vec::new();
        self.snapshot.outputs().append_metrics(&mut body);
        String::from_utf8(body).expect("utf-8")
    }

    fn elapsed_ms(&self) -> u64 {
        self.buzzer.start.elapsed().as_millis() as u64
    }

    async fn stop(self) -> (RecPin, RecPin) {
        self.stop.send(true).expect("send");
        self.task.await.expect("join");
        (self.buzzer, self.led)
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One critical cycle starting at `t` ms.
fn critical_cycle(t: u64) -> Vec<(u64, bool)> {
    [
        (0, true),
        (200, false),
        (350, true),
        (550, false),
        (700, true),
        (900, false),
    ]
    .iter()
    .map(|&(d, on)| (t + d, on))
    .collect()
}

#[tokio::test(start_paused = true)]
async fn a_simulated_buzzer_sounds_each_pattern_as_one_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start_simulated(dir.path());
    sleep_ms(1000).await;
    let t0 = h.elapsed_ms();
    h.set(vec![alert("BuilderDown", Severity::Critical)]);
    sleep_ms(4100).await;
    // Nobody hears a simulated rhythm: on for the pattern's length, then as often.
    assert_eq!(
        h.buzzer.since(t0),
        [
            (t0, true),
            (t0 + 900, false),
            (t0 + 2000, true),
            (t0 + 2900, false),
            (t0 + 4000, true),
        ]
    );
    assert!(
        h.metrics()
            .contains("nodewatch_buzzer_sounds_total{sound=\"critical\"} 3")
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn critical_sounds_at_once_and_repeats_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), Options::default());
    sleep_ms(1000).await;
    assert!(
        h.buzzer.changes().iter().all(|c| !c.1),
        "silent while all is well"
    );
    let t0 = h.elapsed_ms();
    h.set(vec![alert("BuilderDown", Severity::Critical)]);
    sleep_ms(6100).await;
    // Three full cycles, back to back, the first at once.
    let mut expected = critical_cycle(t0);
    expected.extend(critical_cycle(t0 + 2000));
    expected.extend(critical_cycle(t0 + 4000));
    expected.push((t0 + 6000, true));
    assert_eq!(h.buzzer.since(t0), expected);
    assert!(
        h.led.is_on(),
        "LED steady on for an unacknowledged critical"
    );
    assert!(
        h.metrics()
            .contains("nodewatch_buzzer_sounds_total{sound=\"critical\"} 4")
    );
    // A press acknowledges it: silent at once, and for good.
    h.press(ButtonEvent::Press);
    sleep_ms(1).await;
    assert!(!h.buzzer.is_on());
    let after = h.elapsed_ms();
    sleep_ms(60_000).await;
    assert_eq!(h.buzzer.ons(after, u64::MAX), 0);
    // The LED blinks for an acknowledged critical alert.
    assert!(
        h.led.ons(after, after + 10_000) >= 9,
        "{:?}",
        h.led.since(after)
    );
    assert!(
        Acknowledgements::open(dir.path())
            .is_acknowledged(&alert("BuilderDown", Severity::Critical)),
        "persisted"
    );
    assert!(h.metrics().contains("nodewatch_alerts_acknowledged 1"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_critical_alert_stops_sounding_when_it_resolves_and_a_tone_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), Options::default());
    h.set(vec![alert("BuilderDown", Severity::Critical)]);
    sleep_ms(2100).await;
    h.set(Vec::new());
    sleep_ms(10).await;
    // Interrupted at once, then one 300 ms tone.
    sleep_ms(5000).await;
    assert_eq!(
        h.buzzer.since(2100),
        [(2100, false), (2100, true), (2400, false)]
    );
    assert!(
        h.metrics()
            .contains("nodewatch_buzzer_sounds_total{sound=\"resolved\"} 1")
    );
    let (_, led) = h.stop().await;
    assert!(!led.is_on(), "LED off when all is well");
}

#[tokio::test(start_paused = true)]
async fn warning_chirps_every_repeat_interval_and_resolution_is_one_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(
        dir.path(),
        Options {
            policy: BuzzerPolicy {
                warning_repeat: Duration::from_secs(300),
                ..BuzzerPolicy::default()
            },
            ..Options::default()
        },
    );
    h.set(vec![alert("SocTemperatureHigh", Severity::Warning)]);
    sleep_ms(650_000).await;
    // Chirps (80 ms) at 0, 300 s and 600 s (within the 1 s look-again).
    let ons: Vec<u64> = h
        .buzzer
        .changes()
        .iter()
        .filter(|c| c.1)
        .map(|c| c.0)
        .collect();
    assert_eq!(ons.len(), 3, "{ons:?}");
    assert_eq!(ons[0], 0);
    assert!((300_000..=301_000).contains(&ons[1]), "{ons:?}");
    assert!((600_000..=601_000).contains(&ons[2]), "{ons:?}");
    assert_eq!(h.buzzer.changes()[1], (80, false));
    // The LED blinks: on and off every 0.5 s.
    assert_eq!(h.led.ons(10_000, 20_000), 10);
    // Resolved: one short tone.
    h.set(Vec::new());
    sleep_ms(10_000).await;
    assert_eq!(h.buzzer.since(650_000), [(650_000, true), (650_300, false)]);
    assert!(!h.led.is_on());
    // An info alert neither sounds nor, resolving, tones.
    h.set(vec![alert("Info", Severity::Info)]);
    sleep_ms(5000).await;
    h.set(Vec::new());
    sleep_ms(5000).await;
    assert!(h.buzzer.since(660_000).is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn quiet_hours_silence_warnings_and_criticals_only_when_configured() {
    let quiet = QuietHours::parse("22:00-07:00").expect("parse");
    for critical_in_quiet_hours in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = start(
            dir.path(),
            Options {
                policy: BuzzerPolicy {
                    quiet_hours: Some(quiet),
                    critical_in_quiet_hours,
                    ..BuzzerPolicy::default()
                },
                ..Options::default()
            },
        );
        h.minute.store(23 * 60, Ordering::Relaxed);
        h.set(vec![alert("SocTemperatureHigh", Severity::Warning)]);
        sleep_ms(10_000).await;
        assert!(
            h.buzzer.changes().is_empty(),
            "warnings are silent at night"
        );
        h.set(vec![
            alert("BuilderDown", Severity::Critical),
            alert("SocTemperatureHigh", Severity::Warning),
        ]);
        sleep_ms(10).await;
        assert_eq!(h.buzzer.is_on(), critical_in_quiet_hours);
        h.set(vec![alert("SocTemperatureHigh", Severity::Warning)]);
        sleep_ms(10_000).await;
        let t = h.elapsed_ms();
        // Morning: the warning chirps within the second.
        h.minute.store(7 * 60, Ordering::Relaxed);
        sleep_ms(1500).await;
        assert_eq!(h.buzzer.ons(t, u64::MAX), 1, "{:?}", h.buzzer.since(t));
        // The LED does not keep quiet hours.
        assert!(h.led.ons(0, 10_000) >= 9);
        h.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn long_press_mutes_for_an_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), Options::default());
    h.set(vec![alert("BuilderDown", Severity::Critical)]);
    sleep_ms(100).await;
    assert!(h.buzzer.is_on());
    h.press(ButtonEvent::LongPress);
    sleep_ms(1).await;
    assert!(!h.buzzer.is_on(), "silent at once");
    assert!(h.metrics().contains("nodewatch_buzzer_muted 1"));
    let t = h.elapsed_ms();
    sleep_ms(3_598_000).await;
    assert_eq!(h.buzzer.ons(t, u64::MAX), 0, "muted for the hour");
    assert!(h.led.is_on(), "the LED is not muted");
    sleep_ms(3000).await;
    assert!(
        h.buzzer.ons(t, u64::MAX) >= 1,
        "sounds again after the hour"
    );
    assert!(h.metrics().contains("nodewatch_buzzer_muted 0"));
    // The critical alert was not acknowledged by the long press.
    assert!(
        !h.acks
            .is_acknowledged(&alert("BuilderDown", Severity::Critical))
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn led_follows_the_worst_unacknowledged_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acks = Acknowledgements::open(dir.path());
    let down = alert("BuilderDown", Severity::Critical);
    let warm = alert("SocTemperatureHigh", Severity::Warning);
    let info = alert("Info", Severity::Info);
    assert_eq!(LedState::of(&[], &acks), LedState::Off);
    assert_eq!(
        LedState::of(std::slice::from_ref(&info), &acks),
        LedState::Off
    );
    assert_eq!(
        LedState::of(&[warm.clone(), info.clone()], &acks),
        LedState::Blink
    );
    assert_eq!(
        LedState::of(&[down.clone(), warm.clone()], &acks),
        LedState::On
    );
    acks.acknowledge_critical(std::slice::from_ref(&down));
    assert_eq!(
        LedState::of(std::slice::from_ref(&down), &acks),
        LedState::Blink
    );

    let h = start(dir.path(), Options::default());
    h.set(vec![down.clone()]);
    sleep_ms(3200).await;
    assert_eq!(
        h.led.changes(),
        [
            (0, true),
            (500, false),
            (1000, true),
            (1500, false),
            (2000, true),
            (2500, false),
            (3000, true)
        ]
    );
    assert!(h.metrics().contains("nodewatch_status_led_state 1"));
    h.set(Vec::new());
    sleep_ms(10).await;
    assert!(!h.led.is_on());
    assert!(h.metrics().contains("nodewatch_status_led_state 0"));
    let t = h.elapsed_ms();
    h.set(vec![alert("DiskFull", Severity::Critical)]);
    sleep_ms(3000).await;
    assert_eq!(h.led.since(t), [(t, true)], "steady");
    assert!(h.metrics().contains("nodewatch_status_led_state 2"));
    let (buzzer, led) = h.stop().await;
    assert!(!buzzer.is_on() && !led.is_on(), "both off at the end");
}

#[tokio::test(start_paused = true)]
async fn acknowledgement_survives_a_restart_and_ends_with_the_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let down = alert("BuilderDown", Severity::Critical);
    let h = start(dir.path(), Options::default());
    h.set(vec![down.clone()]);
    sleep_ms(100).await;
    h.press(ButtonEvent::Press);
    sleep_ms(100).await;
    let (buzzer, _) = h.stop().await;
    assert!(!buzzer.is_on());

    // A restart: the alert is pending again for a while (its `for`), then fires; it
    // stays acknowledged.
    let h = start(dir.path(), Options::default());
    sleep_ms(60_000).await;
    h.set(vec![down.clone()]);
    sleep_ms(10_000).await;
    assert!(
        h.buzzer.changes().is_empty(),
        "acknowledged before the restart"
    );
    // Resolved: the acknowledgement ends; firing again sounds again.
    h.set(Vec::new());
    sleep_ms(5000).await;
    assert!(!Acknowledgements::open(dir.path()).is_acknowledged(&down));
    h.set(vec![down.clone()]);
    sleep_ms(10).await;
    assert!(h.buzzer.is_on());
    h.stop().await;

    // An acknowledgement whose alert never fires again after a restart is forgotten
    // once the rules had time to fire (settle_after).
    let acks = Acknowledgements::open(dir.path());
    acks.acknowledge_critical(std::slice::from_ref(&down));
    let h = start(
        dir.path(),
        Options {
            settle_after: Duration::from_secs(300),
            ..Options::default()
        },
    );
    sleep_ms(299_000).await;
    assert!(Acknowledgements::open(dir.path()).is_acknowledged(&down));
    sleep_ms(2000).await;
    assert!(!Acknowledgements::open(dir.path()).is_acknowledged(&down));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn press_acknowledges_here_only_without_a_display() {
    let down = alert("BuilderDown", Severity::Critical);
    let other = FiringAlert {
        labels: BTreeMap::from([("node".to_string(), "pi-02".to_string())]),
        ..down.clone()
    };
    let disk = alert("DiskFull", Severity::Critical);
    // No display: a press acknowledges the first critical alert, every instance of
    // its rule; the next press the next rule; then nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(dir.path(), Options::default());
    h.press(ButtonEvent::Press);
    sleep_ms(10).await;
    h.set(vec![
        down.clone(),
        other.clone(),
        disk.clone(),
        alert("W", Severity::Warning),
    ]);
    sleep_ms(10).await;
    h.press(ButtonEvent::Press);
    sleep_ms(10).await;
    assert!(h.acks.is_acknowledged(&down) && h.acks.is_acknowledged(&other));
    assert!(!h.acks.is_acknowledged(&disk));
    assert!(h.buzzer.is_on(), "DiskFull still sounds");
    h.press(ButtonEvent::Press);
    sleep_ms(10).await;
    assert!(h.acks.is_acknowledged(&disk));
    assert!(h.metrics().contains("nodewatch_alerts_acknowledged 3"));
    h.stop().await;

    // With a display, the display routes presses: nothing is acknowledged here.
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(
        dir.path(),
        Options {
            handles_press: false,
            ..Options::default()
        },
    );
    h.set(vec![down.clone()]);
    sleep_ms(10).await;
    h.press(ButtonEvent::Press);
    sleep_ms(10).await;
    assert!(!h.acks.is_acknowledged(&down));
    assert!(h.buzzer.is_on());
    // An acknowledgement made elsewhere (the display) silences it at once.
    h.acks.acknowledge_critical(&h.alerts.alerts());
    sleep_ms(1).await;
    assert!(!h.buzzer.is_on());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn corrupt_acknowledgements_are_a_health_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("acknowledged.json"), "{").expect("write");
    let h = start(dir.path(), Options::default());
    sleep_ms(10).await;
    let health = h.snapshot.outputs().health();
    let buzzer = &health[OUTPUT_NAME];
    assert!(!buzzer.ok);
    assert!(
        buzzer
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("acknowledged.json")),
        "{buzzer:?}"
    );
    // It still sounds and acknowledges; the next save writes a good file.
    h.set(vec![alert("BuilderDown", Severity::Critical)]);
    sleep_ms(10).await;
    assert!(h.buzzer.is_on());
    h.press(ButtonEvent::Press);
    sleep_ms(10).await;
    assert!(h.snapshot.outputs().health()[OUTPUT_NAME].ok);
    assert!(AckStore::load(dir.path()).is_ok(), "rewritten");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_say_when_the_buzzer_last_went_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start_simulated(dir.path());
    sleep_ms(10).await;
    let text = h.metrics();
    assert!(
        text.contains("nodewatch_buzzer_last_on_timestamp_seconds 0"),
        "{text}"
    );
    assert!(text.contains("nodewatch_buzzer_simulated 1"), "{text}");
    assert!(
        text.contains("nodewatch_buzzer_sounds_total{sound=\"warning\"} 0"),
        "{text}"
    );
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    h.set(vec![alert("BuilderDown", Severity::Critical)]);
    sleep_ms(10).await;
    let text = h.metrics();
    let value: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nodewatch_buzzer_last_on_timestamp_seconds "))
        .expect("gauge")
        .parse()
        .expect("number");
    assert!(
        value >= before - 1.0 && value < before + 60.0,
        "{value} vs {before}"
    );
    h.stop().await;
}

#[test]
fn simulated_pin_records_changes() {
    let mut pin = SimulatedPin::new("buzzer");
    let Ok(()) = pin.set_high();
    let Ok(()) = pin.set_high();
    let Ok(()) = pin.set_low();
    let levels: Vec<bool> = pin.changes().iter().map(|c| c.1).collect();
    assert_eq!(levels, [true, false]);
    for _ in 0..100 {
        let Ok(()) = pin.set_high();
        let Ok(()) = pin.set_low();
    }
    assert_eq!(pin.changes().len(), 64, "bounded");
}

#[test]
fn local_minute_of_day_is_a_minute_of_the_day() {
    assert!(local_minute_of_day() < 24 * 60);
    // 2026-11-30 07:38:20 UTC.
    let unix = 1_796_024_300;
    assert_eq!(minute_of_day(unix, 0), 7 * 60 + 38);
    assert_eq!(minute_of_day(unix, 3600), 8 * 60 + 38, "CET");
    assert_eq!(
        minute_of_day(unix, -8 * 3600),
        23 * 60 + 38,
        "PST: the day before"
    );
    assert_eq!(minute_of_day(0, -60), 23 * 60 + 59);
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("a.toml")).expect("parse")
}

fn invalid(text: &str) -> String {
    parse(text)
        .validate(Path::new("a.toml"))
        .expect_err("invalid")
        .to_string()
}

#[test]
fn config_parses_with_defaults_and_names_bad_keys() {
    let config = parse(
        "[alerts.buzzer]\ngpio = 23\nactive_high = false\nwarning_repeat_secs = 300\nquiet_hours = \"22:30-06:45\"\ncritical_in_quiet_hours = false\nmute_secs = 1800\nled_gpio = 24\nled_active_high = false\n",
    );
    config.validate(Path::new("a.toml")).expect("valid");
    let b = &config.alerts.buzzer;
    assert!(b.enabled);
    assert_eq!((b.gpio, b.led_gpio), (23, Some(24)));
    let policy = b.policy();
    assert_eq!(policy.warning_repeat, Duration::from_secs(300));
    assert_eq!(policy.mute_for, Duration::from_secs(1800));
    assert!(!policy.critical_in_quiet_hours);
    assert_eq!(policy.quiet_hours, QuietHours::parse("22:30-06:45").ok());
    assert_eq!(
        Config::default().alerts.buzzer.policy(),
        BuzzerPolicy::default()
    );

    let err = invalid("[alerts.buzzer]\nquiet_hours = \"10pm-7am\"\n");
    assert!(err.contains("alerts.buzzer.quiet_hours"), "{err}");
    assert!(err.contains("10pm-7am"), "{err}");
    let err = invalid("[alerts.buzzer]\ngpio = 40\n");
    assert!(err.contains("alerts.buzzer.gpio"), "{err}");
    let err = invalid("[alerts.buzzer]\nled_gpio = 18\n");
    assert!(err.contains("alerts.buzzer.led_gpio"), "{err}");
    let err = invalid("[alerts.buzzer]\ngpio = 17\n");
    assert!(
        err.contains("alerts.buzzer.gpio") && err.contains("button"),
        "{err}"
    );
    let err = invalid("[alerts.buzzer]\nmute_secs = 0\n");
    assert!(err.contains("alerts.buzzer.mute_secs"), "{err}");
    let err = invalid("[alerts.buzzer]\nwarning_repeat_secs = 0\n");
    assert!(err.contains("alerts.buzzer.warning_repeat_secs"), "{err}");
    // The button off: its pin is free.
    parse("[button]\nenabled = false\n[alerts.buzzer]\ngpio = 17\n")
        .validate(Path::new("a.toml"))
        .expect("valid");
    // A buzzer that is off is not checked against the button.
    parse("[alerts.buzzer]\nenabled = false\ngpio = 17\n")
        .validate(Path::new("a.toml"))
        .expect("valid");

    let err = Config::parse("[alerts.buzzer]\nvolume = 3\n", Path::new("a.toml"))
        .expect_err("unknown key");
    assert!(
        err.to_string()
            .starts_with("a.toml:2:1: unknown field `volume`"),
        "{err}"
    );
    let err =
        Config::parse("[alerts.buzzer]\ngpio = \"18\"\n", Path::new("a.toml")).expect_err("type");
    assert!(err.to_string().starts_with("a.toml:2:"), "{err}");
}

#[test]
fn button_config_and_its_deprecated_display_keys() {
    let config = parse("");
    assert_eq!(
        config.button_in_effect(),
        crate::outputs::button::ButtonConfig {
            enabled: true,
            gpio: 17
        }
    );
    let config = parse("[button]\ngpio = 22\n");
    assert_eq!(config.button_in_effect().gpio, 22);
    // The former keys still work, and win where set.
    let config = parse("[display]\nbutton_gpio = 27\n");
    assert_eq!(config.button_in_effect().gpio, 27);
    let config = parse("[display]\nbutton = false\n");
    assert!(!config.button_in_effect().enabled);
    let err = invalid("[button]\ngpio = 28\n");
    assert!(err.contains("button.gpio"), "{err}");
    let err = invalid("[display]\nbutton_gpio = 28\n");
    assert!(err.contains("display.button_gpio"), "{err}");
    // The deprecated key moves the button onto the buzzer's pin: caught.
    let err = invalid("[display]\nbutton_gpio = 18\n");
    assert!(err.contains("alerts.buzzer.gpio"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn spawn_follows_the_config_and_simulates_off_a_pi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = Arc::new(Snapshot::new(Vec::new()));
    let acks = Acknowledgements::open(dir.path());
    let (_stop, stop_rx) = watch::channel(false);
    let mut config = Config::default();
    config.alerts.enabled = false;
    assert!(
        spawn(
            &config.alerts,
            snapshot.clone(),
            Arc::new(AlertBus::default()),
            acks.clone(),
            None,
            true,
            stop_rx.clone()
        )
        .is_none()
    );
    // Off a Pi (this machine, CI): simulated, healthy.
    if std::path::Path::new("/proc/device-tree/model").exists() {
        return;
    }
    config.alerts.enabled = true;
    let (stop, stop_rx) = watch::channel(false);
    let bus = Arc::new(AlertBus::default());
    let task = spawn(
        &config.alerts,
        snapshot.clone(),
        bus,
        acks,
        None,
        true,
        stop_rx,
    )
    .expect("spawned");
    sleep_ms(10).await;
    assert!(snapshot.outputs().health()[OUTPUT_NAME].ok);
    let mut body = Vec::new();
    snapshot.outputs().append_metrics(&mut body);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("nodewatch_buzzer_simulated 1"), "{text}");
    stop.send(true).expect("send");
    task.await.expect("join");
}
