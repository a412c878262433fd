//! What the panel shows, and when: page rotation, the critical takeover and its
//! acknowledgement, burn-in protection (pixel shift, dimming, blanking) and the
//! button (design §4).
//!
//! Time is passed in as [`Instant`]s, so the state machine is tested without a clock:
//! the agent calls [`Controller::screen`] on each tick with `Instant::now()` (tokio's,
//! under a paused clock in tests).
//!
//! Rules:
//! - A critical alert nobody acknowledged takes over the whole screen, flashing
//!   (reverse video every [`UiConfig::flash`]), until it is acknowledged (button, or
//!   `acknowledged` in the model) or resolved (gone from the model).
//! - Pages rotate every [`UiConfig::rotate`] while the panel is on.
//! - Every [`UiConfig::shift`] the picture moves by one pixel, around a 2×2 square.
//! - After [`UiConfig::dim_after`] without activity the panel dims, after
//!   [`UiConfig::blank_after`] it goes dark — only while the status is OK: a WARN or
//!   ALERT stays lit. Activity is a button press, or the status getting worse (which
//!   also brings the overview back), or a new critical alert.
//! - The button: a press wakes a dark panel; otherwise it acknowledges the
//!   unacknowledged critical alert if there is one; otherwise it shows the next page.
//!   A long press mutes the buzzer (the agent acts on [`PressOutcome::Mute`]).

use std::time::{Duration, Instant};

use embedded_graphics::geometry::Point;

use crate::model::{Status, ViewModel};
use crate::pages::Page;

/// Timing of the user interface. A zero duration turns its feature off.
#[derive(Debug, Clone, PartialEq)]
pub struct UiConfig {
    /// Pages in rotation order (the button steps through them too).
    pub pages: Vec<Page>,
    /// How long each page shows.
    pub rotate: Duration,
    /// How often the picture moves by a pixel.
    pub shift: Duration,
    /// Idle time before dimming.
    pub dim_after: Duration,
    /// Idle time before going dark.
    pub blank_after: Duration,
    /// Half period of the critical takeover's flashing; zero = steady reverse video.
    pub flash: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            pages: Page::ALL.to_vec(),
            rotate: Duration::from_secs(5),
            shift: Duration::from_secs(120),
            dim_after: Duration::from_secs(600),
            blank_after: Duration::from_secs(3600),
            flash: Duration::from_secs(1),
        }
    }
}

/// What the panel should show now.
#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    /// Dark (blanked after idle).
    Off,
    /// A page.
    Page {
        /// Which.
        page: Page,
        /// Burn-in shift of the whole picture.
        shift: Point,
        /// Whether the panel should be dimmed.
        dim: bool,
    },
    /// A critical alert takes over the panel.
    Critical {
        /// The alert's name.
        name: String,
        /// Reverse video in this phase of the flashing.
        inverted: bool,
        /// Burn-in shift.
        shift: Point,
    },
}

impl Screen {
    /// Whether the panel should run at low contrast.
    pub fn dim(&self) -> bool {
        matches!(self, Screen::Page { dim: true, .. })
    }
}

/// What a button press did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PressOutcome {
    /// The panel was dark and is lit again.
    Woke,
    /// The named critical alert is acknowledged.
    Acknowledged(String),
    /// This page is shown now.
    NextPage(Page),
    /// A long press: mute the buzzer (and the panel is awake).
    Mute,
}

/// The burn-in shift positions, visited in turn.
const SHIFTS: [Point; 4] = [
    Point::new(0, 0),
    Point::new(1, 0),
    Point::new(1, 1),
    Point::new(0, 1),
];

/// The user interface's state.
#[derive(Debug, Clone)]
pub struct Controller {
    config: UiConfig,
    started: Instant,
    page_index: usize,
    page_since: Instant,
    last_activity: Instant,
    acknowledged: Vec<String>,
    last_status: Status,
    last_critical: Option<String>,
}

impl Controller {
    /// A controller starting at `now` on the first page. An empty page list means
    /// the overview only.
    pub fn new(mut config: UiConfig, now: Instant) -> Self {
        if config.pages.is_empty() {
            config.pages.push(Page::Overview);
        }
        Self {
            config,
            started: now,
            page_index: 0,
            page_since: now,
            last_activity: now,
            acknowledged: Vec::new(),
            last_status: Status::Ok,
            last_critical: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &UiConfig {
        &self.config
    }

    /// The page the rotation is on.
    pub fn page(&self) -> Page {
        self.config.pages[self.page_index % self.config.pages.len()]
    }

    /// The next page in rotation order that has something to show.
    fn next_index(&self, model: &ViewModel) -> usize {
        let n = self.config.pages.len();
        (1..=n)
            .map(|k| (self.page_index + k) % n)
            .find(|&i| self.config.pages[i].has_content(model))
            .unwrap_or(self.page_index)
    }

    fn shift_at(&self, now: Instant) -> Point {
        if self.config.shift.is_zero() {
            return Point::zero();
        }
        let steps = now.saturating_duration_since(self.started).as_millis()
            / self.config.shift.as_millis().max(1);
        SHIFTS[(steps % SHIFTS.len() as u128) as usize]
    }

    fn idle_beyond(&self, now: Instant, limit: Duration, status: Status) -> bool {
        !limit.is_zero()
            && status == Status::Ok
            && now.saturating_duration_since(self.last_activity) >= limit
    }

    fn critical<'m>(&self, model: &'m ViewModel) -> Option<&'m str> {
        model
            .alerts
            .iter()
            .find(|a| {
                a.severity == crate::model::Severity::Critical
                    && !a.acknowledged
                    && !self.acknowledged.contains(&a.name)
            })
            .map(|a| a.name.as_str())
    }

    fn wake(&mut self, now: Instant) {
        if self.idle_beyond(now, self.config.blank_after, Status::Ok) {
            // Rotation restarts from the page shown when the panel went dark.
            self.page_since = now;
        }
        self.last_activity = now;
    }

    /// The screen at `now` for `model`; advances rotation and notes alerts.
    pub fn screen(&mut self, now: Instant, model: &ViewModel) -> Screen {
        // An acknowledgement lasts while its alert fires: once resolved, the same
        // alert firing again takes over again.
        self.acknowledged
            .retain(|name| model.alerts.iter().any(|a| &a.name == name));
        let status = model.status().0;
        if status > self.last_status {
            self.wake(now);
            if let Some(i) = self.config.pages.iter().position(|p| *p == Page::Overview) {
                self.page_index = i;
                self.page_since = now;
            }
        }
        self.last_status = status;
        let critical = self.critical(model).map(str::to_string);
        if critical.is_some() && critical != self.last_critical {
            self.wake(now);
        }
        self.last_critical = critical.clone();
        let shift = self.shift_at(now);
        if let Some(name) = critical {
            let inverted = self.config.flash.is_zero()
                || (now.saturating_duration_since(self.started).as_millis()
                    / self.config.flash.as_millis().max(1))
                .is_multiple_of(2);
            return Screen::Critical {
                name,
                inverted,
                shift,
            };
        }
        if self.idle_beyond(now, self.config.blank_after, status) {
            self.page_since = now;
            return Screen::Off;
        }
        let rotate = self.config.rotate;
        if !rotate.is_zero() {
            let elapsed = now.saturating_duration_since(self.page_since);
            let steps = (elapsed.as_millis() / rotate.as_millis().max(1)) as u32;
            if steps > 0 {
                for _ in 0..(steps as usize).min(self.config.pages.len()) {
                    self.page_index = self.next_index(model);
                }
                self.page_since += rotate * steps;
            }
        }
        if !self.page().has_content(model) {
            // Its source went away (builder no longer monitored): move on now.
            self.page_index = self.next_index(model);
            self.page_since = now;
        }
        Screen::Page {
            page: self.page(),
            shift,
            dim: self.idle_beyond(now, self.config.dim_after, status),
        }
    }

    /// A short press of the button at `now`.
    pub fn press(&mut self, now: Instant, model: &ViewModel) -> PressOutcome {
        let status = model.status().0;
        let dark = self.idle_beyond(now, self.config.blank_after, status)
            && self.critical(model).is_none();
        self.wake(now);
        if dark {
            return PressOutcome::Woke;
        }
        if let Some(name) = self.critical(model).map(str::to_string) {
            self.acknowledged.push(name.clone());
            return PressOutcome::Acknowledged(name);
        }
        self.page_index = self.next_index(model);
        self.page_since = now;
        PressOutcome::NextPage(self.page())
    }

    /// A long press (≥ 2 s) at `now`: wakes the panel and asks to mute the buzzer.
    pub fn long_press(&mut self, now: Instant) -> PressOutcome {
        self.wake(now);
        PressOutcome::Mute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Alert, Severity};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn page_of(screen: &Screen) -> Option<Page> {
        match screen {
            Screen::Page { page, .. } => Some(*page),
            _ => None,
        }
    }

    #[test]
    fn pages_rotate_on_the_interval() {
        let t0 = Instant::now();
        let mut c = Controller::new(UiConfig::default(), t0);
        let m = ViewModel::sample();
        assert_eq!(page_of(&c.screen(t0, &m)), Some(Page::Overview));
        assert_eq!(page_of(&c.screen(t0 + secs(4), &m)), Some(Page::Overview));
        assert_eq!(page_of(&c.screen(t0 + secs(5), &m)), Some(Page::System));
        // A late tick skips as many pages as periods passed.
        assert_eq!(page_of(&c.screen(t0 + secs(16), &m)), Some(Page::Wallet));
        assert_eq!(page_of(&c.screen(t0 + secs(30), &m)), Some(Page::Overview));
    }

    #[test]
    fn pages_without_content_are_skipped() {
        let t0 = Instant::now();
        let mut c = Controller::new(UiConfig::default(), t0);
        let mut m = ViewModel::sample();
        m.builder = None;
        m.wallet = Default::default();
        let pages: Vec<_> = (0..5)
            .map(|i| page_of(&c.screen(t0 + secs(5 * i), &m)))
            .collect();
        assert_eq!(
            pages,
            [
                Page::Overview,
                Page::System,
                Page::Alerts,
                Page::Network,
                Page::Overview
            ]
            .map(Some)
        );
        assert_eq!(
            c.press(t0 + secs(26), &m),
            PressOutcome::NextPage(Page::System)
        );
        assert_eq!(
            c.press(t0 + secs(27), &m),
            PressOutcome::NextPage(Page::Alerts)
        );
    }

    #[test]
    fn no_rotation_when_zero() {
        let t0 = Instant::now();
        let config = UiConfig {
            rotate: Duration::ZERO,
            ..UiConfig::default()
        };
        let mut c = Controller::new(config, t0);
        let m = ViewModel::sample();
        assert_eq!(page_of(&c.screen(t0 + secs(100), &m)), Some(Page::Overview));
    }

    #[test]
    fn burn_in_shift_walks_a_square() {
        let t0 = Instant::now();
        let config = UiConfig {
            rotate: Duration::ZERO,
            ..UiConfig::default()
        };
        let mut c = Controller::new(config, t0);
        let m = ViewModel::sample();
        let shift = |c: &mut Controller, t| match c.screen(t, &m) {
            Screen::Page { shift, .. } => shift,
            other => panic!("{other:?}"),
        };
        assert_eq!(shift(&mut c, t0 + secs(119)), Point::new(0, 0));
        assert_eq!(shift(&mut c, t0 + secs(120)), Point::new(1, 0));
        assert_eq!(shift(&mut c, t0 + secs(240)), Point::new(1, 1));
        assert_eq!(shift(&mut c, t0 + secs(360)), Point::new(0, 1));
        assert_eq!(shift(&mut c, t0 + secs(480)), Point::new(0, 0));
    }

    #[test]
    fn dims_then_blanks_when_idle_and_a_press_wakes() {
        let t0 = Instant::now();
        let mut c = Controller::new(UiConfig::default(), t0);
        let m = ViewModel::sample();
        assert!(!c.screen(t0 + secs(599), &m).dim());
        assert!(c.screen(t0 + secs(600), &m).dim());
        assert_eq!(c.screen(t0 + secs(3600), &m), Screen::Off);
        let page_before = c.page();
        assert_eq!(c.press(t0 + secs(4000), &m), PressOutcome::Woke);
        let s = c.screen(t0 + secs(4000), &m);
        assert_eq!(page_of(&s), Some(page_before));
        assert!(!s.dim());
        // Awake: the next press shows the next page.
        assert!(matches!(
            c.press(t0 + secs(4001), &m),
            PressOutcome::NextPage(_)
        ));
    }

    #[test]
    fn a_worse_status_wakes_and_shows_the_overview() {
        let t0 = Instant::now();
        let mut c = Controller::new(UiConfig::default(), t0);
        let mut m = ViewModel::sample();
        assert_eq!(c.screen(t0 + secs(3700), &m), Screen::Off);
        m.soc_temp_celsius = Some(82.0);
        let s = c.screen(t0 + secs(3701), &m);
        assert_eq!(page_of(&s), Some(Page::Overview));
        // WARN never blanks.
        assert_ne!(c.screen(t0 + secs(9000), &m), Screen::Off);
    }

    #[test]
    fn critical_takes_over_flashing_until_acknowledged() {
        let t0 = Instant::now();
        let mut c = Controller::new(UiConfig::default(), t0);
        let mut m = ViewModel::sample();
        assert_eq!(c.screen(t0 + secs(3600), &m), Screen::Off);
        m.alerts.push(Alert {
            name: "BuilderDown".into(),
            severity: Severity::Critical,
            acknowledged: false,
        });
        let at = |ms: u64| t0 + secs(3600) + Duration::from_millis(ms);
        let s1 = c.screen(at(0), &m);
        let s2 = c.screen(at(1000), &m);
        let (
            Screen::Critical {
                name, inverted: i1, ..
            },
            Screen::Critical { inverted: i2, .. },
        ) = (&s1, &s2)
        else {
            panic!("{s1:?} {s2:?}");
        };
        assert_eq!(name, "BuilderDown");
        assert_ne!(i1, i2, "flashes");
        // The press acknowledges (it does not merely wake: the alert woke the panel).
        assert_eq!(
            c.press(at(1500), &m),
            PressOutcome::Acknowledged("BuilderDown".into())
        );
        assert_eq!(page_of(&c.screen(at(1600), &m)), Some(Page::Overview));
        // Resolved, then firing again: takes over again.
        m.alerts.clear();
        c.screen(at(2000), &m);
        m.alerts.push(Alert {
            name: "BuilderDown".into(),
            severity: Severity::Critical,
            acknowledged: false,
        });
        assert!(matches!(c.screen(at(3000), &m), Screen::Critical { .. }));
        // Acknowledged elsewhere (local alerting): no takeover.
        m.alerts[0].acknowledged = true;
        assert!(matches!(c.screen(at(4000), &m), Screen::Page { .. }));
    }

    #[test]
    fn long_press_mutes_and_wakes() {
        let t0 = Instant::now();
        let mut c = Controller::new(UiConfig::default(), t0);
        let m = ViewModel::sample();
        assert_eq!(c.screen(t0 + secs(3600), &m), Screen::Off);
        assert_eq!(c.long_press(t0 + secs(3601)), PressOutcome::Mute);
        assert!(matches!(c.screen(t0 + secs(3601), &m), Screen::Page { .. }));
    }
}
