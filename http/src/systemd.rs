//! Living under systemd: service notifications (`Type=notify`, `WatchdogSec=`) and the
//! exit codes that let a unit stop retrying (`RestartPreventExitStatus=78 98`).
//!
//! Notifications follow sd_notify(3): `READY=1` once the service answers, `WATCHDOG=1`
//! every half `WATCHDOG_USEC` from a task on the serving runtime (a wedged runtime
//! stops pinging, and systemd restarts the service), `STOPPING=1` when shutdown
//! starts. Without `NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

/// Exit status for an invalid configuration or command line (sysexits' `EX_CONFIG`):
/// restarting cannot help until an operator edits it.
pub const EXIT_CONFIG: u8 = 78;
/// Exit status when the listen address is taken (`EADDRINUSE`'s number on Linux):
/// another exporter holds the port, and restarting in a loop cannot help.
pub const EXIT_ADDRESS_IN_USE: u8 = 98;

/// The exit status for a failure to bind the listen address: [`EXIT_ADDRESS_IN_USE`]
/// when the port is taken, [`EXIT_CONFIG`] when the address is malformed (or the web
/// config invalid), 1 otherwise
/// (permission denied, no such address on this host: conditions that may pass).
pub fn bind_exit_code(error: &crate::Error) -> u8 {
    match error {
        crate::Error::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            EXIT_ADDRESS_IN_USE
        }
        crate::Error::ListenAddress { .. } | crate::Error::WebConfig(_) => EXIT_CONFIG,
        _ => 1,
    }
}

fn send(state: &[NotifyState<'_>]) {
    // Warned once: a dead socket would otherwise log every watchdog ping.
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(state) {
        if WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, "Cannot notify systemd.");
        } else {
            tracing::warn!(error = %e, "Cannot notify systemd.");
        }
    }
}

/// Tells systemd the service is up (`READY=1`), with a one-line status.
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the service is shutting down (`STOPPING=1`).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog's ping interval: half of `WATCHDOG_USEC` when systemd set one for this
/// process, as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|timeout| !timeout.is_zero())
        .map(|timeout| timeout / 2)
}

/// Pings systemd's watchdog while alive; the pings stop when it is dropped.
#[derive(Debug)]
pub struct Watchdog(Option<JoinHandle<()>>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Starts the watchdog pings on the current tokio runtime (call it from the runtime
/// that serves requests, so that the pings stop when it is stuck). Does nothing when
/// systemd asked for no watchdog.
pub fn start_watchdog() -> Watchdog {
    let Some(interval) = watchdog_interval() else {
        return Watchdog(None);
    };
    tracing::debug!(
        interval_secs = interval.as_secs_f64(),
        "Pinging systemd's watchdog."
    );
    Watchdog(Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        // A late tick is one ping, not a burst.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    })))
}

/// Completes when `shutdown` does, telling systemd the service is stopping (so the
/// notification goes out before in-flight requests drain).
pub async fn stopping_after(shutdown: impl std::future::Future<Output = ()>) {
    shutdown.await;
    notify_stopping();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_map_to_exit_codes() {
        let in_use = crate::Error::Bind {
            address: ":9100".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(bind_exit_code(&in_use), EXIT_ADDRESS_IN_USE);
        let malformed = crate::Error::ListenAddress {
            address: "nonsense".into(),
            reason: "expected HOST:PORT or :PORT".into(),
        };
        assert_eq!(bind_exit_code(&malformed), EXIT_CONFIG);
        let denied = crate::Error::Bind {
            address: ":80".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(bind_exit_code(&denied), 1);
    }
}
