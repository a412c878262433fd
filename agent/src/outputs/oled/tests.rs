//! The display output end to end inside the agent, under tokio's paused clock.

use crate::alerts::bus::AlertBus;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use nodewatch_display::{Frame, PanelSize};
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::metrics::MetricSink;

fn snapshot() -> Arc<Snapshot> {
    let specs = ["cpu", "thermal_zone", "pi"]
        .into_iter()
        .map(|n| {
            (
                crate::collectors::spec(n).expect("spec"),
                Duration::from_secs(2),
            )
        })
        .collect();
    Arc::new(Snapshot::new(specs))
}

fn index(s: &Snapshot, name: &str) -> usize {
    s.slots()
        .iter()
        .position(|x| x.spec.name == name)
        .expect("slot")
}

fn store_temperature(s: &Snapshot, celsius: f64) {
    let mut sink = MetricSink::new();
    sink.gauge(
        "node_thermal_zone_temp",
        "Zone temperature in Celsius",
        &[("type", "cpu-thermal"), ("zone", "0")],
        celsius,
    );
    s.store_success(
        index(s, "thermal_zone"),
        sink.into_families(),
        Duration::ZERO,
    );
}

/// An acknowledgement store in a fresh directory that nothing writes to (these tests
/// acknowledge nothing).
fn acks() -> Arc<Acknowledgements> {
    Acknowledgements::open(&std::env::temp_dir().join("nodewatch-display-tests-unused"))
}

/// [`spawn`] from a whole configuration, as the daemon calls it.
fn start(
    config: &Config,
    snapshot: Arc<Snapshot>,
    alerts: Arc<AlertBus>,
    acks: Arc<Acknowledgements>,
    buttons: Option<broadcast::Receiver<ButtonEvent>>,
    stop: watch::Receiver<bool>,
) -> Option<(Arc<DisplayShared>, JoinHandle<()>)> {
    let inputs = DisplayInputs {
        snapshot,
        alerts,
        acks,
        buttons,
        on_demand: None,
    };
    spawn(&config.display, &config.node_name(), inputs, stop)
}

/// [`spawn_with_panel`] from a whole configuration.
fn start_with_panel(
    config: &Config,
    snapshot: Arc<Snapshot>,
    alerts: Arc<AlertBus>,
    acks: Arc<Acknowledgements>,
    panel: Option<Box<dyn PanelSink>>,
    buttons: Option<broadcast::Receiver<ButtonEvent>>,
    stop: watch::Receiver<bool>,
) -> (Arc<DisplayShared>, JoinHandle<()>) {
    let inputs = DisplayInputs {
        snapshot,
        alerts,
        acks,
        buttons,
        on_demand: None,
    };
    spawn_with_panel(&config.display, &config.node_name(), inputs, panel, stop)
}

fn config() -> Config {
    Config {
        node_name: Some("pi-test".into()),
        display: DisplayConfig {
            driver: DisplayDriver::Simulated,
            ..DisplayConfig::default()
        },
        ..Config::default()
    }
}

async fn get_png(shared: &Arc<DisplayShared>) -> Vec<u8> {
    let response = router(shared.clone())
        .oneshot(
            Request::get("/display.png")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body")
        .to_vec()
}

/// Lets the display task run its ticks up to `d` later. Panel writes run on the
/// blocking pool (real threads, real time), so each step also gives them a moment.
async fn advance(d: Duration) {
    async fn settle() {
        for _ in 0..5 {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let step = Duration::from_millis(250);
    let mut left = d;
    while !left.is_zero() {
        let s = step.min(left);
        tokio::time::advance(s).await;
        settle().await;
        left -= s;
    }
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn display_png_is_the_frame_and_follows_the_state() {
    let s = snapshot();
    store_temperature(&s, 48.0);
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = config();
    let (shared, task) = start(
        &config,
        s.clone(),
        Arc::new(AlertBus::default()),
        acks(),
        None,
        stop_rx,
    )
    .expect("enabled");
    advance(Duration::from_millis(600)).await;
    let first = get_png(&shared).await;
    let frame = Frame::from_png(&first, PNG_SCALE).expect("a 1-bit PNG at ×4");
    assert_eq!(frame.size(), PanelSize::W128H64);
    assert!(frame.lit_pixels() > 100, "overview drawn");
    // Hot SoC: the overview turns to WARN at once (no rotation needed).
    store_temperature(&s, 82.0);
    advance(Duration::from_millis(600)).await;
    let hot = get_png(&shared).await;
    assert_ne!(first, hot, "frame follows the state");
    // A failing collector: its figures are marked stale on the page.
    s.store_failure(
        index(&s, "thermal_zone"),
        "read error".into(),
        false,
        Duration::ZERO,
    );
    advance(Duration::from_millis(600)).await;
    assert_ne!(get_png(&shared).await, hot);
    // Simulated display: healthy output, nodewatch_display_* in /metrics.
    let health = nodewatch_http::MetricsSource::health(&*s);
    assert!(health.outputs[OUTPUT_NAME].ok);
    advance(Duration::from_secs(3)).await;
    let text = nodewatch_http::MetricsSource::exposition(&*s).text();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("nodewatch_display_simulated 1"), "{text}");
    assert!(text.contains("nodewatch_display_frames_total "), "{text}");
    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops")
        .expect("join");
}

#[tokio::test(start_paused = true)]
async fn pages_rotate_in_the_served_frame() {
    let s = snapshot();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (shared, _task) = start(
        &config(),
        s,
        Arc::new(AlertBus::default()),
        acks(),
        None,
        stop_rx,
    )
    .expect("enabled");
    advance(Duration::from_millis(600)).await;
    let overview = get_png(&shared).await;
    advance(Duration::from_secs(5)).await;
    let system = get_png(&shared).await;
    assert_ne!(overview, system);
    let expected = {
        let model = {
            let mut b = view::ViewBuilder::new("pi-test".into());
            let s = snapshot();
            b.build(&s, std::time::Instant::now())
        };
        let mut f = Frame::new(PanelSize::W128H64);
        let screen = screen_for("system", &model).expect("page");
        let Ok(()) = nodewatch_display::draw_screen(&mut f, &screen, &model);
        f
    };
    // The system page, at the burn-in position of the first two minutes.
    let shown = Frame::from_png(&system, PNG_SCALE).expect("png");
    let differing: u32 = (0..64)
        .flat_map(|y| (0..128).map(move |x| (x, y)))
        .filter(|&(x, y)| shown.pixel(x, y) != expected.pixel(x, y))
        .count() as u32;
    // Only the IP address may differ (looked up live).
    assert!(differing < 200, "{differing} pixels differ");
}

#[test]
fn disabled_display_has_no_task() {
    let mut config = config();
    config.display.enabled = false;
    let (_tx, rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        assert!(
            start(
                &config,
                snapshot(),
                Arc::new(AlertBus::default()),
                acks(),
                None,
                rx
            )
            .is_none()
        );
    });
}

#[test]
fn render_writes_the_page_and_bad_state_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("overview.png");
    render_to_file("overview", PanelSize::W128H32, None, &out, 4).expect("render");
    let golden = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../display/tests/golden/overview-128x32.png"),
    )
    .expect("golden");
    assert_eq!(
        Frame::from_png(&std::fs::read(&out).expect("out"), 4),
        Frame::from_png(&golden, 4)
    );

    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        "{\n  \"node_name\": \"pi\",\n  \"cpu_percent\": \"lots\"\n}\n",
    )
    .expect("write");
    let err = render_to_file("system", PanelSize::W128H64, Some(&state), &out, 4).expect_err("bad");
    assert!(err.starts_with(&format!("{}:3:", state.display())), "{err}");
    std::fs::write(
        &state,
        "{\"node_name\": \"pi\", \"wallet\": {\"eth\": 0.5}}",
    )
    .expect("write");
    render_to_file("wallet", PanelSize::W128H64, Some(&state), &out, 1).expect("good state");
    let err = render_to_file("weather", PanelSize::W128H64, None, &out, 4).expect_err("page");
    assert!(err.contains("unknown page \"weather\""), "{err}");
    let missing = dir.path().join("missing.json");
    let err =
        render_to_file("system", PanelSize::W128H64, Some(&missing), &out, 4).expect_err("missing");
    assert!(err.contains("missing.json"), "{err}");
}

/// The button through the task: a press shows the next page at once (no waiting for
/// the rotation), a long press is counted.
#[tokio::test(start_paused = true)]
async fn button_press_shows_the_next_page_at_once() {
    let s = snapshot();
    let (buttons, rx) = broadcast::channel(4);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let config = Config {
        display: DisplayConfig {
            rotate_secs: 0.0,
            ..config().display
        },
        ..config()
    };
    let (shared, _task) = start(
        &config,
        s.clone(),
        Arc::new(AlertBus::default()),
        acks(),
        Some(rx),
        stop_rx,
    )
    .expect("enabled");
    advance(Duration::from_millis(600)).await;
    let overview = get_png(&shared).await;
    advance(Duration::from_secs(10)).await;
    assert_eq!(get_png(&shared).await, overview, "no rotation configured");
    buttons.send(ButtonEvent::Press).expect("send");
    advance(Duration::from_millis(10)).await;
    let next = Frame::from_png(&get_png(&shared).await, PNG_SCALE).expect("png");
    // The system page's title bar: reverse video across the top row.
    assert!(
        (1..120).all(|x| next.pixel(x, 0) || next.pixel(x, 1)),
        "system page shown"
    );
    buttons.send(ButtonEvent::LongPress).expect("send");
    advance(Duration::from_secs(3)).await;
    let text = nodewatch_http::MetricsSource::exposition(&*s).text();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("nodewatch_display_button_presses_total{kind=\"long\"} 1"),
        "{text}"
    );
    assert!(text.contains("nodewatch_display_button_presses_total{kind=\"short\"} 1"));
}

/// A panel on a recording bus through the task: not plugged in at start (auto: not an
/// error), plugged in (initialised, healthy), unplugged (degraded, counted), back.
#[tokio::test(start_paused = true)]
async fn panel_errors_show_in_health_and_metrics_and_recover() {
    use super::panel::tests::RecordingI2c;
    use std::sync::atomic::Ordering;
    let s = snapshot();
    let bus = RecordingI2c::default();
    bus.unplugged.store(true, Ordering::Relaxed);
    let panel = panel::Panel::new(bus.clone(), 1, 0x3C, PanelSize::W128H64, false);
    let config = Config {
        display: DisplayConfig {
            driver: DisplayDriver::Auto,
            ..DisplayConfig::default()
        },
        ..config()
    };
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (_shared, _task) = start_with_panel(
        &config,
        s.clone(),
        Arc::new(AlertBus::default()),
        acks(),
        Some(Box::new(panel)),
        None,
        stop_rx,
    );
    let health = |s: &Snapshot| nodewatch_http::MetricsSource::health(s);
    advance(Duration::from_millis(600)).await;
    let h = health(&s);
    assert!(
        h.outputs[OUTPUT_NAME].ok,
        "never answered under auto: not an error"
    );
    assert!(
        h.outputs[OUTPUT_NAME]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("0x3c"))
    );
    bus.unplugged.store(false, Ordering::Relaxed);
    advance(Duration::from_secs(3)).await;
    assert!(!bus.take().is_empty(), "initialised once plugged in");
    assert!(health(&s).outputs[OUTPUT_NAME].ok);
    bus.unplugged.store(true, Ordering::Relaxed);
    // The sample page rotates every 5 s, so an update is attempted and fails.
    advance(Duration::from_secs(6)).await;
    let h = health(&s);
    assert!(!h.outputs[OUTPUT_NAME].ok, "lost after answering");
    assert_eq!(h.status, nodewatch_http::HealthStatus::Degraded);
    let text = nodewatch_http::MetricsSource::exposition(&*s).text();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("nodewatch_display_panel_up 0"), "{text}");
    assert!(
        text.contains("nodewatch_display_i2c_errors_total "),
        "{text}"
    );
    bus.unplugged.store(false, Ordering::Relaxed);
    advance(Duration::from_secs(70)).await;
    assert!(
        health(&s).outputs[OUTPUT_NAME].ok,
        "recovered after the backoff"
    );
    let text = nodewatch_http::MetricsSource::exposition(&*s).text();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("nodewatch_display_panel_up 1"), "{text}");
    assert!(
        text.contains("nodewatch_display_updates_total{kind=\"full\"} 2"),
        "{text}"
    );
}

/// The button's routing through the task (design §4): a press wakes a dark panel;
/// with a critical alert nobody acknowledged, it acknowledges it in the shared store
/// (persisted: a new store over the same directory sees it) and the takeover ends;
/// otherwise it shows the next page.
#[tokio::test(start_paused = true)]
async fn button_press_wakes_then_acknowledges_then_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = snapshot();
    let (buttons, rx) = broadcast::channel(4);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let config = Config {
        display: DisplayConfig {
            rotate_secs: 0.0,
            shift_secs: 0.0,
            dim_after_secs: 0.0,
            blank_after_secs: 60.0,
            flash_secs: 0.0,
            ..config().display
        },
        ..config()
    };
    let acks = Acknowledgements::open(dir.path());
    let bus = Arc::new(AlertBus::default());
    let (shared, _task) =
        start(&config, s.clone(), bus.clone(), acks, Some(rx), stop_rx).expect("enabled");
    let frame = |png: Vec<u8>| Frame::from_png(&png, PNG_SCALE).expect("png");
    advance(Duration::from_millis(600)).await;
    let overview = get_png(&shared).await;
    advance(Duration::from_secs(70)).await;
    assert_eq!(frame(get_png(&shared).await).lit_pixels(), 0, "dark");
    // Wake: the same page again, not the next one.
    buttons.send(ButtonEvent::Press).expect("send");
    advance(Duration::from_millis(600)).await;
    assert_eq!(get_png(&shared).await, overview, "woken on the overview");
    // A critical alert takes over; a press acknowledges it.
    let down = crate::alerts::FiringAlert {
        alertname: "BuilderDown".into(),
        severity: crate::alerts::Severity::Critical,
        labels: std::collections::BTreeMap::new(),
        value: 0.0,
        summary: String::new(),
        description: String::new(),
        active_since_unix: 0.0,
    };
    bus.set_alerts(vec![down.clone()]);
    advance(Duration::from_millis(600)).await;
    let pixels = 128 * 64;
    assert!(
        frame(get_png(&shared).await).lit_pixels() > pixels / 2,
        "takeover"
    );
    buttons.send(ButtonEvent::Press).expect("send");
    advance(Duration::from_millis(600)).await;
    let acknowledged = get_png(&shared).await;
    assert!(
        frame(acknowledged.clone()).lit_pixels() < pixels / 2,
        "takeover ended"
    );
    assert!(
        Acknowledgements::open(dir.path()).is_acknowledged(&down),
        "persisted"
    );
    // Nothing left to acknowledge: the next page.
    buttons.send(ButtonEvent::Press).expect("send");
    advance(Duration::from_millis(600)).await;
    let next = frame(get_png(&shared).await);
    assert_ne!(get_png(&shared).await, acknowledged);
    assert!(
        (1..120).all(|x| next.pixel(x, 0) || next.pixel(x, 1)),
        "system page shown"
    );
}

/// The view reads no collector beyond `COLLECTORS_READ`, which keeps those on the
/// fast tick.
#[test]
fn the_view_reads_only_the_collectors_it_declares() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/outputs/oled");
    let mut read = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("oled dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for (i, _) in text.match_indices("reading(snapshot, \"") {
            let rest = &text[i + "reading(snapshot, \"".len()..];
            read.push(rest.split('"').next().unwrap_or("").to_string());
        }
    }
    assert!(!read.is_empty(), "no reading(snapshot, …) found");
    for name in read {
        assert!(
            super::COLLECTORS_READ.contains(&name.as_str()),
            "the view reads {name}, missing from COLLECTORS_READ"
        );
    }
}
