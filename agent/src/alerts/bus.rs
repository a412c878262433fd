//! The alert bus: the firing local alerts as the last evaluation left them, plus the
//! test alert while it lasts. The evaluator publishes; outputs (buzzer, OLED, LoRa)
//! and the health endpoint subscribe or read. It lives here, below the outputs, so
//! alerting never imports an output.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use super::test_alert::TEST_ALERT_NAME;
use super::{FiringAlert, with_test_alert};
use crate::snapshot::{AlertsView, Snapshot};

/// Firing alerts and the test alert.
#[derive(Debug)]
pub struct AlertBus {
    firing: watch::Sender<Arc<Vec<FiringAlert>>>,
    /// A test alert (`POST /api/test-alert`) and when it ends.
    test_alert: Mutex<Option<(FiringAlert, Instant)>>,
}

impl Default for AlertBus {
    fn default() -> Self {
        Self {
            firing: watch::Sender::new(Arc::new(Vec::new())),
            test_alert: Mutex::new(None),
        }
    }
}

impl AlertBus {
    /// Replaces the firing alerts (after each evaluation). Subscribers are woken only
    /// when the list changes.
    pub fn set_alerts(&self, alerts: Vec<FiringAlert>) {
        self.firing.send_if_modified(|current| {
            if **current == alerts {
                return false;
            }
            *current = Arc::new(alerts);
            true
        });
    }

    /// The firing alerts, most severe first.
    pub fn alerts(&self) -> Vec<FiringAlert> {
        self.firing.borrow().as_ref().clone()
    }

    /// Follows the firing alerts: the receiver sees each new list.
    pub fn subscribe_alerts(&self) -> watch::Receiver<Arc<Vec<FiringAlert>>> {
        self.firing.subscribe()
    }

    /// Adds a test alert to the firing alerts until `until` (published at once).
    pub fn inject_test_alert(&self, alert: FiringAlert, until: Instant) {
        *self.test_alert.lock().unwrap_or_else(|e| e.into_inner()) = Some((alert.clone(), until));
        let mut current = self.alerts();
        current.retain(|a| a.alertname != TEST_ALERT_NAME);
        self.set_alerts(with_test_alert(current, Some(alert)));
    }

    /// When the test alert ends, while one is on.
    pub fn test_alert_until(&self) -> Option<Instant> {
        self.test_alert
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, until)| *until)
    }

    /// The test alert, while it lasts at `now`.
    pub fn test_alert(&self, now: Instant) -> Option<FiringAlert> {
        let mut slot = self.test_alert.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((alert, until)) if now < *until => Some(alert.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Makes `/api/health/detailed` of `snapshot` list these alerts.
    pub fn show_in_health(self: &Arc<Self>, snapshot: &Snapshot) {
        let bus = self.clone();
        snapshot.set_alerts_view(AlertsView(Box::new(move || bus.alerts_json())));
    }

    /// The firing alerts as JSON objects, for `/api/health/detailed`.
    pub fn alerts_json(&self) -> Vec<serde_json::Value> {
        self.firing
            .borrow()
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect()
    }
}
