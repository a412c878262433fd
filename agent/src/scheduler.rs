//! Runs every collector in the background, each on its own interval and under its own
//! timeout, and stores the results in the [`Snapshot`].
//!
//! A run happens on a blocking thread (collectors do file I/O and system calls). A run
//! that outlives its timeout is recorded as a failure; while it is still stuck (a
//! FIFO, a dead NFS mount) no second run of that collector is started, so threads do
//! not pile up, and the other collectors go on.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::collectors::{CollectError, Collector};
use crate::metrics::MetricSink;
use crate::snapshot::Snapshot;

/// Gap between the first runs of consecutive collectors.
const STAGGER: Duration = Duration::from_millis(3);

/// One collector with its schedule.
pub struct Scheduled {
    /// Index of its slot in the snapshot.
    pub index: usize,
    /// The collector.
    pub collector: Arc<dyn Collector>,
    /// Time between runs.
    pub interval: Duration,
    /// Longest a run may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("index", &self.index)
            .field("interval", &self.interval)
            .finish()
    }
}

/// Spawns one task per collector; they stop when `shutdown` turns true.
pub fn spawn_all(
    collectors: Vec<Scheduled>,
    snapshot: Arc<Snapshot>,
    shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    // Starts are spread a few milliseconds apart: each run takes well under a
    // millisecond, so one or two blocking threads serve them all, rather than one
    // thread (and one malloc arena) per collector when they all start at once.
    let start = tokio::time::Instant::now();
    for (i, scheduled) in collectors.into_iter().enumerate() {
        let offset = STAGGER * u32::try_from(i).unwrap_or(u32::MAX);
        set.spawn(run_collector(
            scheduled,
            snapshot.clone(),
            shutdown.clone(),
            start + offset,
        ));
    }
    set
}

/// Outcome of one run, for logging transitions.
#[derive(PartialEq)]
enum Outcome {
    Ok,
    NoData,
    Failed,
}

async fn run_collector(
    scheduled: Scheduled,
    snapshot: Arc<Snapshot>,
    mut shutdown: watch::Receiver<bool>,
    start: tokio::time::Instant,
) {
    let name = snapshot.slots()[scheduled.index].spec.name;
    let mut ticker = tokio::time::interval_at(start, scheduled.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let in_flight = Arc::new(AtomicBool::new(false));
    let mut stuck_since: Option<Instant> = None;
    let mut last_outcome = Outcome::Ok;
    let mut logged_drops: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if in_flight.load(Ordering::Acquire) {
            let since = stuck_since.get_or_insert_with(Instant::now);
            let message = format!(
                "previous collection still running after {:.1}s",
                since.elapsed().as_secs_f64() + scheduled.timeout.as_secs_f64()
            );
            snapshot.store_failure(scheduled.index, message, false, scheduled.timeout);
            continue;
        }
        stuck_since = None;
        snapshot.begin_run(scheduled.index);
        in_flight.store(true, Ordering::Release);
        let collector = scheduled.collector.clone();
        let flag = in_flight.clone();
        let started = Instant::now();
        let job = tokio::task::spawn_blocking(move || {
            let mut sink = MetricSink::new();
            let result = collector.collect(&mut sink).map(|()| sink.into_families());
            flag.store(false, Ordering::Release);
            result
        });
        let result = tokio::time::timeout(scheduled.timeout, job).await;
        let duration = started.elapsed();
        let outcome = match result {
            Ok(Ok(Ok(families))) => {
                for name in snapshot.store_success(scheduled.index, families, duration) {
                    if logged_drops.insert(name.clone()) {
                        tracing::warn!(
                            collector = name.as_str(),
                            family = name.as_str(),
                            "Dropped a family that a built-in collector also exports."
                        );
                    }
                }
                Outcome::Ok
            }
            Ok(Ok(Err(error))) => {
                let no_data = error.is_no_data();
                record_error(
                    &snapshot,
                    scheduled.index,
                    name,
                    &error,
                    duration,
                    &last_outcome,
                );
                if no_data {
                    Outcome::NoData
                } else {
                    Outcome::Failed
                }
            }
            Ok(Err(join_error)) => {
                // A panic in a collector is a bug; keep serving the rest.
                let error = CollectError::Other(format!("collector panicked: {join_error}"));
                record_error(
                    &snapshot,
                    scheduled.index,
                    name,
                    &error,
                    duration,
                    &last_outcome,
                );
                Outcome::Failed
            }
            Err(_elapsed) => {
                let error = CollectError::Other(format!(
                    "timed out after {:.1}s",
                    scheduled.timeout.as_secs_f64()
                ));
                record_error(
                    &snapshot,
                    scheduled.index,
                    name,
                    &error,
                    duration,
                    &last_outcome,
                );
                Outcome::Failed
            }
        };
        if outcome == Outcome::Ok && last_outcome == Outcome::Failed {
            tracing::info!(collector = name, "Collector recovered.");
        }
        last_outcome = outcome;
    }
}

/// Stores a failure, logging only when the collector's state changes, not every tick.
fn record_error(
    snapshot: &Snapshot,
    index: usize,
    name: &str,
    error: &CollectError,
    duration: Duration,
    last: &Outcome,
) {
    let no_data = error.is_no_data();
    let message = error.to_string();
    let changed = snapshot.slots()[index].state().last_error.as_deref() != Some(message.as_str())
        || *last == Outcome::Ok;
    if changed {
        if no_data {
            tracing::debug!(
                collector = name,
                error = message.as_str(),
                "Collector returned no data."
            );
        } else {
            tracing::error!(
                collector = name,
                error = message.as_str(),
                "Collector failed."
            );
        }
    }
    snapshot.store_failure(index, message, no_data, duration);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors;
    use nodewatch_http::MetricsSource;
    use std::sync::Mutex;

    struct Scripted {
        results: Mutex<Vec<Result<f64, CollectError>>>,
    }

    impl Collector for Scripted {
        fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
            let mut results = self.results.lock().expect("lock");
            let next = if results.len() > 1 {
                results.remove(0)
            } else {
                let last = results.remove(0);
                if let Ok(v) = last {
                    results.push(Ok(v));
                }
                last
            };
            out.gauge("test_value", "Test.", &[], next?);
            Ok(())
        }
    }

    struct Hanging(Mutex<std::sync::mpsc::Receiver<()>>);

    impl Collector for Hanging {
        fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
            let _ = self.0.lock().expect("lock").recv();
            Ok(())
        }
    }

    fn text(snapshot: &Snapshot) -> String {
        String::from_utf8(snapshot.exposition().text().to_vec()).expect("utf8")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_removes_samples_and_keeps_last_values() {
        let specs = vec![(
            collectors::spec("loadavg").expect("spec"),
            Duration::from_millis(50),
        )];
        let snapshot = Arc::new(Snapshot::new(specs));
        let collector = Arc::new(Scripted {
            results: Mutex::new(vec![
                Ok(1.0),
                Err(CollectError::Other("boom".into())),
                Ok(2.0),
            ]),
        });
        let (tx, rx) = watch::channel(false);
        let scheduled = Scheduled {
            index: 0,
            collector,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
        };
        let mut set = spawn_all(vec![scheduled], snapshot.clone(), rx);
        let mut seen_failure = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let body = text(&snapshot);
            let state = snapshot.slot("loadavg").expect("slot").state();
            if state.runs == 2 && !state.ok {
                assert!(!body.contains("test_value"), "{body}");
                assert!(
                    body.contains("node_scrape_collector_success{collector=\"loadavg\"} 0"),
                    "{body}"
                );
                assert_eq!(state.families.len(), 1, "last good values are kept");
                seen_failure = true;
            }
            if body.contains("test_value 2") {
                break;
            }
        }
        assert!(seen_failure);
        assert!(text(&snapshot).contains("node_scrape_collector_success{collector=\"loadavg\"} 1"));
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hung_collector_times_out_and_is_not_restarted() {
        let specs = vec![
            (
                collectors::spec("loadavg").expect("spec"),
                Duration::from_millis(30),
            ),
            (
                collectors::spec("textfile").expect("spec"),
                Duration::from_millis(30),
            ),
        ];
        let snapshot = Arc::new(Snapshot::new(specs));
        let (release, hang) = std::sync::mpsc::channel();
        let (tx, rx) = watch::channel(false);
        let ok = Arc::new(Scripted {
            results: Mutex::new(vec![Ok(5.0)]),
        });
        let set_items = vec![
            Scheduled {
                index: 0,
                collector: Arc::new(Hanging(Mutex::new(hang))),
                interval: Duration::from_millis(30),
                timeout: Duration::from_millis(50),
            },
            Scheduled {
                index: 1,
                collector: ok,
                interval: Duration::from_millis(30),
                timeout: Duration::from_millis(50),
            },
        ];
        let mut set = spawn_all(set_items, snapshot.clone(), rx);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let started = Instant::now();
        let body = text(&snapshot);
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(body.contains("test_value 5"), "{body}");
        assert!(
            body.contains("node_scrape_collector_success{collector=\"loadavg\"} 0"),
            "{body}"
        );
        let state = snapshot.slot("loadavg").expect("slot").state();
        assert_eq!(state.runs, 1, "a stuck collector is not started again");
        assert!(state.last_error.expect("error").contains("still running"));
        release.send(()).expect("release");
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
    }
}
