//! The OLED display output: draws the `nodewatch-display` pages from the snapshot
//! every `display.refresh_secs`, sends what changed to an SSD1306 on I2C, and serves
//! the current frame at `GET /display.png` (×4).
//!
//! Without a panel (not a Pi, I2C off, `driver = "simulated"`) the same frames are
//! drawn and served: the panel is simulated, which is not an error. With no button
//! either, nobody sees a frame until `/display.png` asks, so a simulated display
//! draws one at start and then one per request, not every `refresh_secs`; a request
//! refreshes the on-demand collectors first, as a scrape does, and the collectors the
//! pages read leave the fast tick (unless a rule reads them).
//!
//! # Layout
//! - [`config`]: the `[display]` section.
//! - [`view`]: the view model from the snapshot's families.
//! - [`panel`]: the SSD1306 glue over embedded-hal `I2c` (diff, backoff, re-init).
//! - `hardware`: the rppal bus (the only place naming rppal).
//! - [`wallet`]: wallet and reward figures from the exporters' `/metrics`.
//! - [`bench`]: `nodewatch-agent bench-display`.

pub mod bench;
pub mod config;
mod hardware;
pub mod panel;
pub mod view;
pub mod wallet;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use nodewatch_display::{Controller, Frame, Page, PanelSize, Screen, ViewModel, draw_screen};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use config::{DisplayConfig, DisplayDriver};
use panel::{PanelSink, ShowOutcome};

use crate::alerts::bus::AlertBus;
use crate::alerts::sound::Acknowledgements;
use crate::metrics::MetricSink;
use crate::outputs::button::{self, ButtonEvent};
use crate::scheduler::OnDemand;
use crate::snapshot::Snapshot;

/// The output's name in health and logs.
pub const OUTPUT_NAME: &str = "display";
/// The collectors whose families the pages show: they stay on the fast tick while the
/// display draws on its own (`scheduler::FastSet`).
pub const COLLECTORS_READ: &[&str] = &[
    "cpu",
    "thermal_zone",
    "meminfo",
    "filesystem",
    "pi",
    "intmax_builder",
];
/// Scale of `/display.png`.
pub const PNG_SCALE: u32 = 4;
/// How often the `nodewatch_display_*` families are refreshed in `/metrics`.
const METRICS_INTERVAL: Duration = Duration::from_secs(2);
/// Longest `/display.png` waits for a frame drawn on its request.
const DRAW_WAIT: Duration = Duration::from_secs(1);

/// The current frame, shared with the HTTP handler.
#[derive(Debug)]
pub struct DisplayShared {
    frame: Mutex<Frame>,
    version: AtomicU64,
    png: Mutex<Option<(u64, Bytes)>>,
    /// Frames are drawn when `/display.png` asks (simulated, no button).
    draws_on_request: AtomicBool,
    /// The draw request generation asked for, and the last one drawn.
    requested: watch::Sender<u64>,
    drawn: watch::Sender<u64>,
    /// Refreshes the on-demand collectors before a frame drawn on request.
    on_demand: Option<Arc<OnDemand>>,
}

impl DisplayShared {
    /// A dark frame of this size.
    pub fn new(size: PanelSize) -> Self {
        Self {
            frame: Mutex::new(Frame::new(size)),
            version: AtomicU64::new(0),
            png: Mutex::new(None),
            draws_on_request: AtomicBool::new(false),
            requested: watch::Sender::new(0),
            drawn: watch::Sender::new(0),
            on_demand: None,
        }
    }

    /// When frames are drawn on demand, asks for one of the current state and waits
    /// for it (at most [`DRAW_WAIT`]); else the ticking task's last frame is current.
    pub async fn draw_now(&self) {
        if !self.draws_on_request.load(Ordering::Acquire) {
            return;
        }
        if let Some(on_demand) = &self.on_demand {
            on_demand.refresh().await;
        }
        let mut wanted = 0;
        self.requested.send_modify(|g| {
            *g += 1;
            wanted = *g;
        });
        let mut drawn = self.drawn.subscribe();
        let _ = tokio::time::timeout(DRAW_WAIT, drawn.wait_for(|d| *d >= wanted)).await;
    }

    /// Publishes a frame (a no-op when it is the one already shown).
    pub fn publish(&self, frame: &Frame) {
        let mut current = self.frame.lock().unwrap_or_else(|e| e.into_inner());
        if *current != *frame {
            current.clone_from(frame);
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// The current frame as a PNG at [`PNG_SCALE`], encoded once per frame.
    pub fn png(&self) -> Bytes {
        let version = self.version.load(Ordering::Acquire);
        let mut cache = self.png.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, png)) = cache.as_ref()
            && *v == version
        {
            return png.clone();
        }
        let frame = self.frame.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let png = Bytes::from(frame.to_png(PNG_SCALE));
        *cache = Some((version, png.clone()));
        png
    }
}

/// `GET /display.png`, to merge into the agent's router.
pub fn router(shared: Arc<DisplayShared>) -> Router {
    async fn display_png(State(shared): State<Arc<DisplayShared>>) -> Response {
        shared.draw_now().await;
        let mut response = shared.png().into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
    Router::new()
        .route("/display.png", get(display_png))
        .with_state(shared)
}

/// Opens the panel the configuration asks for: `Ok(None)` is simulated.
fn open_panel(
    config: &DisplayConfig,
    size: PanelSize,
) -> Result<Option<Box<dyn PanelSink>>, String> {
    match config.driver {
        DisplayDriver::Simulated => Ok(None),
        DisplayDriver::Auto | DisplayDriver::Ssd1306 => {
            match hardware::open(
                config.i2c_bus,
                config.address,
                size,
                config.rotation == 180,
                config.driver == DisplayDriver::Auto,
            ) {
                Ok(panel) => Ok(Some(panel)),
                Err(e) if config.driver == DisplayDriver::Auto => {
                    tracing::info!(reason = %e, "No I2C bus for the display: simulated, see /display.png.");
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Starts the display task, acting on `buttons` when there is a button (a press
/// wakes a dark panel, else acknowledges the critical alert in `acks`, else shows the
/// next page). Returns the shared frame for `/display.png`, and the task, which
/// blanks the panel and ends when `stop` turns true.
pub fn spawn(
    display: &DisplayConfig,
    node_name: &str,
    inputs: DisplayInputs,
    stop: watch::Receiver<bool>,
) -> Option<(Arc<DisplayShared>, JoinHandle<()>)> {
    if !display.enabled {
        return None;
    }
    let size = display.panel_size().unwrap_or_default();
    let panel = match open_panel(display, size) {
        Ok(panel) => panel,
        Err(e) => {
            tracing::warn!(error = %e, "Display panel unavailable.");
            inputs
                .snapshot
                .outputs()
                .report_health(OUTPUT_NAME, false, Some(e));
            None
        }
    };
    Some(spawn_with_panel(display, node_name, inputs, panel, stop))
}

/// What the display task reads and acts on.
#[derive(Debug)]
pub struct DisplayInputs {
    /// The collectors' latest families; the display's health and metrics go here.
    pub snapshot: Arc<Snapshot>,
    /// The firing alerts.
    pub alerts: Arc<AlertBus>,
    /// The acknowledgements shared with the buzzer.
    pub acks: Arc<Acknowledgements>,
    /// Button events, when there is a button.
    pub buttons: Option<broadcast::Receiver<ButtonEvent>>,
    /// The collectors' on-demand side: a frame drawn on request refreshes first.
    pub on_demand: Option<Arc<OnDemand>>,
}

/// [`spawn`] with the panel given (tests drive a recording bus through it).
pub fn spawn_with_panel(
    display: &DisplayConfig,
    node_name: &str,
    inputs: DisplayInputs,
    panel: Option<Box<dyn PanelSink>>,
    stop: watch::Receiver<bool>,
) -> (Arc<DisplayShared>, JoinHandle<()>) {
    let DisplayInputs {
        snapshot,
        alerts,
        acks,
        buttons,
        on_demand,
    } = inputs;
    let size = display.panel_size().unwrap_or_default();
    let mut shared = DisplayShared::new(size);
    shared.on_demand = on_demand;
    let shared = Arc::new(shared);
    let task = DisplayTask {
        snapshot,
        shared: shared.clone(),
        controller: Controller::new(display.ui(), tokio::time::Instant::now().into_std()),
        views: view::ViewBuilder::new(node_name.to_string())
            .with_wallet(wallet::spawn(display, node_name, stop.clone()))
            .with_acks(acks.clone())
            .with_alerts(alerts.clone()),
        alerts,
        acks_changed: acks.subscribe(),
        acks,
        frame: Frame::new(size),
        panel: panel.map(|p| Arc::new(Mutex::new(p))),
        refresh: Duration::from_secs_f64(display.refresh_secs),
        frames: 0,
        last_metrics: None,
        required: display.driver == DisplayDriver::Ssd1306,
        buttons,
        last_model: ViewModel::default(),
        presses: 0,
        long_presses: 0,
        panel_error: None,
    };
    let handle = tokio::spawn(task.run(stop));
    (shared, handle)
}

type SharedPanel = Arc<Mutex<Box<dyn PanelSink>>>;

struct DisplayTask {
    /// The firing alerts (a press acknowledges the first critical one).
    alerts: Arc<AlertBus>,
    snapshot: Arc<Snapshot>,
    shared: Arc<DisplayShared>,
    controller: Controller,
    views: view::ViewBuilder,
    frame: Frame,
    panel: Option<SharedPanel>,
    refresh: Duration,
    frames: u64,
    last_metrics: Option<Instant>,
    /// `driver = "ssd1306"`: a panel that never answered is an error too.
    required: bool,
    buttons: Option<broadcast::Receiver<ButtonEvent>>,
    /// The acknowledged alerts (shared with the buzzer, kept in `state_dir`).
    acks: Arc<Acknowledgements>,
    /// Ticks when an alert is acknowledged or forgotten: redraw at once.
    acks_changed: watch::Receiver<u64>,
    /// The model of the last frame, for the button's decisions.
    last_model: ViewModel,
    presses: u64,
    long_presses: u64,
    /// The panel's current error, so each is logged once.
    panel_error: Option<String>,
}

impl DisplayTask {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.panel.is_none() {
            self.snapshot
                .outputs()
                .report_health(OUTPUT_NAME, !self.required, None);
        }
        let mut ticker = tokio::time::interval(self.refresh);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Nobody sees a simulated frame until `/display.png` asks for it.
        let on_demand = self.panel.is_none() && self.buttons.is_none();
        self.shared
            .draws_on_request
            .store(on_demand, Ordering::Release);
        if on_demand && let Some(collectors) = &self.shared.on_demand {
            collectors.release_fast_collectors();
        }
        let mut requests = self.shared.requested.subscribe();
        if on_demand {
            // A first frame, and the display's families in `/metrics`.
            self.tick(tokio::time::Instant::now().into_std()).await;
        }
        loop {
            tokio::select! {
                _ = ticker.tick(), if !on_demand => {}
                _ = requests.changed(), if on_demand => {}
                event = button::next_event(&mut self.buttons) => {
                    self.on_button(event, tokio::time::Instant::now().into_std());
                }
                _ = self.acks_changed.changed() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            let generation = *requests.borrow_and_update();
            // After a press too: the panel answers at once, not at the next tick.
            self.tick(tokio::time::Instant::now().into_std()).await;
            self.shared.drawn.send_if_modified(|d| {
                let newer = *d < generation;
                *d = (*d).max(generation);
                newer
            });
        }
        // Leave the panel dark rather than frozen on a stale picture.
        if let Some(panel) = self.panel.take() {
            let blank = Frame::new(self.frame.size());
            let _ = tokio::task::spawn_blocking(move || {
                let mut panel = panel.lock().unwrap_or_else(|e| e.into_inner());
                let _ = panel.show(&blank, false, Instant::now());
                panel.power_off();
            })
            .await;
        }
    }

    fn on_button(&mut self, event: ButtonEvent, now: Instant) {
        match event {
            ButtonEvent::Press => {
                self.presses += 1;
                // Acknowledgement belongs to local alerting: its store decides, on the
                // live alerts, and keeps it across restarts. (A critical alert nobody
                // acknowledged keeps the panel lit, so this never skips a wake.)
                if let Some(name) = self.acks.acknowledge_critical(&self.alerts.alerts()) {
                    tracing::info!(alertname = name.as_str(), "Button: alert acknowledged.");
                    return;
                }
                // Nothing to acknowledge: wake a dark panel, else the next page. The
                // controller is shown every alert as acknowledged so that it never
                // keeps an acknowledgement of its own.
                let mut model = self.last_model.clone();
                for alert in &mut model.alerts {
                    alert.acknowledged = true;
                }
                let outcome = self.controller.press(now, &model);
                tracing::debug!(?outcome, "Button press.");
            }
            ButtonEvent::LongPress => {
                self.long_presses += 1;
                // Wakes the panel; the buzzer (outputs::buzzer) mutes itself.
                self.controller.long_press(now);
            }
        }
    }

    async fn tick(&mut self, now: Instant) {
        let model = self.views.build(&self.snapshot, now);
        let screen = self.controller.screen(now, &model);
        self.last_model = model.clone();
        self.frame.clear();
        let Ok(()) = draw_screen(&mut self.frame, &screen, &model);
        self.frames += 1;
        self.shared.publish(&self.frame);
        if let Some(panel) = &self.panel {
            let panel = panel.clone();
            let frame = self.frame.clone();
            let dim = screen.dim();
            let required = self.required;
            // I2C writes block (up to ~25 ms for a full frame at 400 kHz).
            let joined = tokio::task::spawn_blocking(move || {
                let mut panel = panel.lock().unwrap_or_else(|e| e.into_inner());
                let result = panel.show(&frame, dim, now);
                (result, panel.is_up(), panel.has_answered())
            })
            .await;
            if let Ok((result, up, answered)) = joined {
                let outputs = self.snapshot.outputs();
                match result {
                    Ok(ShowOutcome::BackingOff) => {}
                    Ok(outcome) => {
                        if matches!(outcome, ShowOutcome::Full { .. }) {
                            tracing::info!("Display panel initialised.");
                        }
                        self.panel_error = None;
                        outputs.report_health(OUTPUT_NAME, true, None);
                    }
                    Err(e) => {
                        // "Not plugged in yet" is not a failure under `auto`.
                        let failing = answered || required;
                        let message = e.to_string();
                        // Logged once per distinct error, not on every retry.
                        if self.panel_error.as_deref() != Some(message.as_str()) {
                            if failing {
                                tracing::warn!(error = %message, "Display update failed, retrying with backoff.");
                            } else {
                                tracing::info!(error = %message, "No display panel answers yet; retrying with backoff.");
                            }
                        }
                        outputs.report_health(OUTPUT_NAME, !failing || up, Some(message.clone()));
                        self.panel_error = Some(message);
                    }
                }
            }
        }
        if self
            .last_metrics
            .is_none_or(|t| now.saturating_duration_since(t) >= METRICS_INTERVAL)
        {
            self.last_metrics = Some(now);
            self.publish_metrics();
        }
    }

    fn publish_metrics(&self) {
        let mut sink = MetricSink::new();
        sink.counter(
            "nodewatch_display_frames_total",
            "Frames drawn by the display output (also served at /display.png).",
            &[],
            self.frames as f64,
        );
        sink.gauge(
            "nodewatch_display_simulated",
            "1 when no panel is driven and the display is only served at /display.png.",
            &[],
            if self.panel.is_none() { 1.0 } else { 0.0 },
        );
        if self.buttons.is_some() {
            let help = "Debounced presses of the button, by kind (short, or long: held 2 s).";
            sink.counter(
                "nodewatch_display_button_presses_total",
                help,
                &[("kind", "short")],
                self.presses as f64,
            );
            sink.counter(
                "nodewatch_display_button_presses_total",
                help,
                &[("kind", "long")],
                self.long_presses as f64,
            );
        }
        if let Some(panel) = &self.panel {
            let panel = panel.lock().unwrap_or_else(|e| e.into_inner());
            let c = panel.counters();
            sink.gauge(
                "nodewatch_display_panel_up",
                "1 when the SSD1306 panel answered its last update.",
                &[],
                if panel.is_up() { 1.0 } else { 0.0 },
            );
            let help = "Updates sent to the panel, by kind (full frame after (re)initialisation, or changed area only).";
            sink.counter(
                "nodewatch_display_updates_total",
                help,
                &[("kind", "full")],
                c.full_updates as f64,
            );
            sink.counter(
                "nodewatch_display_updates_total",
                help,
                &[("kind", "partial")],
                (c.updates - c.full_updates) as f64,
            );
            sink.counter(
                "nodewatch_display_i2c_bytes_total",
                "Bytes written to the panel over I2C (commands and display memory).",
                &[],
                c.bytes as f64,
            );
            sink.counter(
                "nodewatch_display_i2c_errors_total",
                "I2C errors talking to the panel.",
                &[],
                c.errors as f64,
            );
            sink.counter(
                "nodewatch_display_inits_total",
                "Panel initialisations (at start and after each recovery).",
                &[],
                c.inits as f64,
            );
        }
        self.snapshot
            .outputs()
            .set_metrics(OUTPUT_NAME, &sink.into_families());
    }
}

/// Reads a JSON state file for `render`; errors name the file, line and column.
pub fn load_state(path: &Path) -> Result<ViewModel, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        // serde_json ends its message with " at line L column C": say it once, first.
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        format!("{}:{}:{}: {message}", path.display(), e.line(), e.column())
    })
}

/// Draws one page (or `critical`, the takeover screen) to a PNG file at ×`scale`.
pub fn render_to_file(
    page: &str,
    size: PanelSize,
    state: Option<&Path>,
    out: &Path,
    scale: u32,
) -> Result<(), String> {
    let model = match state {
        Some(path) => load_state(path)?,
        None => ViewModel::sample(),
    };
    let screen = screen_for(page, &model)?;
    let mut frame = Frame::new(size);
    let Ok(()) = draw_screen(&mut frame, &screen, &model);
    std::fs::write(out, frame.to_png(scale))
        .map_err(|e| format!("{}: cannot write: {e}", out.display()))
}

/// The screen `render --page NAME` draws.
pub fn screen_for(page: &str, model: &ViewModel) -> Result<Screen, String> {
    let zero = nodewatch_display::Point::zero();
    if page == "critical" {
        let name = model
            .alerts
            .iter()
            .find(|a| a.severity == nodewatch_display::Severity::Critical)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| "BuilderDown".into());
        return Ok(Screen::Critical {
            name,
            inverted: true,
            shift: zero,
        });
    }
    let page = Page::from_name(page).ok_or_else(|| {
        format!(
            "unknown page {page:?}; known: {}, critical",
            Page::ALL.map(|p| p.name()).join(", ")
        )
    })?;
    Ok(Screen::Page {
        page,
        shift: zero,
        dim: false,
    })
}

#[cfg(test)]
mod tests;
