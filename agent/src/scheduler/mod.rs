//! Runs every collector in the background under its own timeout, and stores the
//! results in the [`Snapshot`].
//!
//! Two speeds (issue 14, "idle like node_exporter"): a collector whose families an
//! alert rule without `for`, or the display, reads (a [`FastSet`]) runs on its
//! interval, so a condition reaches the buzzer within seconds. Every other collector
//! runs when a scrape (or remote_write) asks for fresh values through
//! [`OnDemand::refresh`], and at least as often as the rules reading it need (the
//! pace [`FastSet::families`] gives each family; a rule with `for` needs a few samples
//! within it, not one per tick), else every [`IDLE_REFRESH`], so local health stays
//! current without a scraper. Those runs fall on the interval's grid, so they share
//! the fast tick's wake-up. Every collector runs once at start, which tells which
//! families it writes; it is sorted after each run.
//!
//! Runs happen one after another on a blocking thread ([`runner`]; collectors do file
//! I/O and system calls), and collectors of one interval tick together, so a round
//! costs one wake-up rather than one per collector. A run that outlives its timeout is
//! recorded as a failure, and the runner goes on without it; while it is still stuck
//! (a FIFO, a dead NFS mount) no second run of that collector is started, so threads
//! do not pile up, the other collectors go on, and a scrape never waits on it again.

pub mod runner;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::collectors::{ChangeSignal, CollectError, Collector};
use crate::metrics::MetricSink;
use crate::snapshot::Snapshot;
use runner::{RunError, Runner};

/// Longest an on-demand collector goes without a run when nobody asks.
pub const IDLE_REFRESH: Duration = Duration::from_secs(60);

/// A refresh younger than this serves the next scrape as it is: concurrent scrapes
/// share one collection.
pub const FRESHNESS: Duration = Duration::from_secs(1);

/// One collector with its schedule.
pub struct Scheduled {
    /// Index of its slot in the snapshot.
    pub index: usize,
    /// The collector.
    pub collector: Arc<dyn Collector>,
    /// Time between runs while it is on the fast tick.
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

/// What keeps a collector on the fast tick: the family names the alert rules read,
/// and the collectors the display reads.
#[derive(Debug, Clone, Default)]
pub struct FastSet {
    /// Family names the rules read, each with the longest time its samples may be apart
    /// (zero: every tick). A collector writing one runs at least that often.
    pub families: HashMap<String, Duration>,
    /// Collector names (the display's, while it draws on its own).
    pub collectors: HashSet<String>,
    /// Set when the reader of `collectors` reads them on request instead
    /// ([`OnDemand::release_fast_collectors`]).
    pub collectors_released: Arc<AtomicBool>,
    /// Every collector is fast (the old behaviour; `collectors.on_demand = false`).
    pub all: bool,
}

impl FastSet {
    /// When the collector `name`, which wrote `families` in its last good run and runs
    /// every `interval` on the tick, should run.
    fn schedule(
        &self,
        name: &str,
        families: &[prometheus::proto::MetricFamily],
        interval: Duration,
    ) -> Schedule {
        if self.all
            || (self.collectors.contains(name) && !self.collectors_released.load(Ordering::Acquire))
        {
            return Schedule::Tick;
        }
        let pace = families
            .iter()
            .filter_map(|f| self.families.get(f.name()))
            .min();
        match pace {
            // Two ticks would be too far apart: every tick.
            Some(pace) if *pace < interval.saturating_mul(2) => Schedule::Tick,
            Some(pace) => Schedule::OnDemand { max_age: *pace },
            None => Schedule::OnDemand {
                max_age: IDLE_REFRESH,
            },
        }
    }
}

/// When a collector runs (besides at once on a change it watches).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Schedule {
    /// On every tick of its interval.
    Tick,
    /// When a scrape asks, and at least every `max_age`, on a tick of its interval.
    OnDemand { max_age: Duration },
}

/// Scrapes ask the on-demand collectors for fresh values here.
#[derive(Debug)]
pub struct OnDemand {
    /// The refresh generation asked for.
    requested: watch::Sender<u64>,
    /// Per slot: the last generation its run answered.
    answered: watch::Sender<Vec<u64>>,
    /// Per slot: whether it runs on demand (else on the fast tick).
    lazy: Vec<AtomicBool>,
    /// When the last refresh completed (tokio's clock, so tests can pause it).
    last_refresh: Mutex<Option<tokio::time::Instant>>,
    /// Longest a refresh waits: the longest timeout of a collector.
    max_wait: Duration,
    /// [`FastSet::collectors_released`].
    collectors_released: Arc<AtomicBool>,
}

impl OnDemand {
    fn new(slots: usize, max_wait: Duration, collectors_released: Arc<AtomicBool>) -> Self {
        Self {
            collectors_released,
            requested: watch::Sender::new(0),
            answered: watch::Sender::new(vec![0; slots]),
            lazy: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            last_refresh: Mutex::new(None),
            max_wait,
        }
    }

    /// The display draws only on request now (and refreshes through [`Self::refresh`]
    /// first): the collectors it reads leave the fast tick, unless a rule reads them,
    /// at their next run.
    pub fn release_fast_collectors(&self) {
        self.collectors_released.store(true, Ordering::Release);
    }

    /// Whether the collector of slot `index` runs on demand now.
    pub fn is_on_demand(&self, index: usize) -> bool {
        self.lazy
            .get(index)
            .is_some_and(|l| l.load(Ordering::Acquire))
    }

    fn all_answered(&self, generation: u64, answered: &[u64]) -> bool {
        answered
            .iter()
            .enumerate()
            .all(|(i, a)| *a >= generation || !self.is_on_demand(i))
    }

    /// Brings the on-demand collectors' values up to date: joins a refresh under way,
    /// serves a refresh younger than [`FRESHNESS`] as it is, else asks for one. Waits
    /// at most the longest collector timeout; a hung collector answers at once (it
    /// records "still running") after its first timeout.
    pub async fn refresh(&self) {
        let generation = {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            let requested = *self.requested.borrow();
            if !self.all_answered(requested, &self.answered.borrow()) {
                requested
            } else if last.is_some_and(|t| t.elapsed() < FRESHNESS) {
                return;
            } else {
                *last = None;
                self.requested.send_modify(|g| *g += 1);
                requested + 1
            }
        };
        let mut answered = self.answered.subscribe();
        let _ = tokio::time::timeout(
            self.max_wait,
            answered.wait_for(|a| self.all_answered(generation, a)),
        )
        .await;
        let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
        if *self.requested.borrow() == generation {
            *last = Some(tokio::time::Instant::now());
        }
    }

    fn answer(&self, index: usize, generation: u64) {
        self.answered.send_if_modified(|a| match a.get_mut(index) {
            Some(slot) if *slot < generation => {
                *slot = generation;
                true
            }
            _ => false,
        });
    }
}

/// Spawns one task per collector; they stop when `shutdown` turns true. The returned
/// [`OnDemand`] is what scrapes call before they read the snapshot.
pub fn spawn_all(
    collectors: Vec<Scheduled>,
    snapshot: Arc<Snapshot>,
    fast: FastSet,
    shutdown: watch::Receiver<bool>,
) -> (JoinSet<()>, Arc<OnDemand>) {
    let max_wait = collectors
        .iter()
        .map(|c| c.timeout)
        .max()
        .unwrap_or_default()
        + Duration::from_millis(100);
    let on_demand = Arc::new(OnDemand::new(
        snapshot.slots().len(),
        max_wait,
        fast.collectors_released.clone(),
    ));
    let fast = Arc::new(fast);
    let runner = Runner::new();
    let mut set = JoinSet::new();
    // Every ticker starts together: collectors of one interval tick at the same
    // instant, and the runner takes their runs in one batch.
    let start = tokio::time::Instant::now();
    for scheduled in collectors {
        let task = CollectorTask {
            ticker: tokio::time::interval_at(start, scheduled.interval),
            grid_start: start,
            schedule: Schedule::Tick,
            scheduled,
            snapshot: snapshot.clone(),
            on_demand: on_demand.clone(),
            fast: fast.clone(),
            runner: runner.clone(),
            in_flight: Arc::new(AtomicBool::new(false)),
            stuck_since: None,
            last_outcome: Outcome::Ok,
            logged_drops: HashSet::new(),
        };
        set.spawn(task.run(shutdown.clone()));
    }
    (set, on_demand)
}

/// Waits until one of a collector's sources signals a change; never, without any.
async fn any_changed(signals: &mut Vec<ChangeSignal>) {
    loop {
        if signals.is_empty() {
            return std::future::pending().await;
        }
        let waits = signals.iter_mut().map(|s| Box::pin(s.changed()));
        let (result, at, _) = futures_util::future::select_all(waits).await;
        if result.is_ok() {
            return;
        }
        // Its sender is gone: that source will not change again.
        signals.swap_remove(at);
    }
}

/// Outcome of one run, for logging transitions.
#[derive(PartialEq)]
enum Outcome {
    Ok,
    NoData,
    Failed,
}

/// One collector's task and what it remembers between runs.
struct CollectorTask {
    scheduled: Scheduled,
    snapshot: Arc<Snapshot>,
    on_demand: Arc<OnDemand>,
    fast: Arc<FastSet>,
    /// Where runs happen, one after another, shared by every collector.
    runner: Runner,
    ticker: tokio::time::Interval,
    /// When every ticker started: on-demand runs that are due fall on its grid.
    grid_start: tokio::time::Instant,
    schedule: Schedule,
    in_flight: Arc<AtomicBool>,
    stuck_since: Option<Instant>,
    last_outcome: Outcome,
    logged_drops: HashSet<String>,
}

impl CollectorTask {
    fn name(&self) -> &'static str {
        self.snapshot.slots()[self.scheduled.index].spec.name
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.ticker
            .set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut requests = self.on_demand.requested.subscribe();
        let mut changes = self.scheduled.collector.changes();
        let index = self.scheduled.index;
        let mut last_run = tokio::time::Instant::now();
        loop {
            let (lazy, due) = match self.schedule {
                Schedule::Tick => (false, last_run),
                Schedule::OnDemand { max_age } => (true, self.due(last_run, max_age)),
            };
            tokio::select! {
                _ = self.ticker.tick(), if !lazy => {}
                _ = requests.changed(), if lazy => {}
                _ = tokio::time::sleep_until(due), if lazy => {}
                _ = any_changed(&mut changes) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let generation = *requests.borrow_and_update();
            last_run = tokio::time::Instant::now();
            self.run_once().await;
            self.sort();
            self.on_demand.answer(index, generation);
        }
    }

    /// The last tick of its interval's grid within `max_age` of `last_run` (no tick
    /// between: `last_run + max_age`), so due runs share the tick's wake-up.
    fn due(&self, last_run: tokio::time::Instant, max_age: Duration) -> tokio::time::Instant {
        let latest = last_run + max_age;
        let interval = self.scheduled.interval.as_nanos();
        if interval == 0 || latest <= self.grid_start {
            return latest;
        }
        let ticks = (latest - self.grid_start).as_nanos() / interval;
        let tick = u64::try_from(ticks.saturating_mul(interval))
            .map(|ns| self.grid_start + Duration::from_nanos(ns))
            .unwrap_or(latest);
        if tick > last_run { tick } else { latest }
    }

    /// Puts the collector on the fast tick or on demand, by what it last wrote.
    fn sort(&mut self) {
        let slot = &self.snapshot.slots()[self.scheduled.index];
        let families = slot.families();
        let schedule = self
            .fast
            .schedule(slot.spec.name, &families, self.scheduled.interval);
        let lazy = schedule != Schedule::Tick;
        self.on_demand.lazy[self.scheduled.index].store(lazy, Ordering::Release);
        if schedule != self.schedule {
            tracing::debug!(
                collector = slot.spec.name,
                schedule = ?schedule,
                "Collector schedule."
            );
        }
        self.schedule = schedule;
    }

    /// One run: skipped (and recorded as failing) while the last one is stuck.
    async fn run_once(&mut self) {
        let index = self.scheduled.index;
        let timeout = self.scheduled.timeout;
        if self.in_flight.load(Ordering::Acquire) {
            let since = self.stuck_since.get_or_insert_with(Instant::now);
            let message = format!(
                "previous collection still running after {:.1}s",
                since.elapsed().as_secs_f64() + timeout.as_secs_f64()
            );
            self.snapshot.store_failure(index, message, false, timeout);
            return;
        }
        self.stuck_since = None;
        self.snapshot.begin_run(index);
        self.in_flight.store(true, Ordering::Release);
        let collector = self.scheduled.collector.clone();
        let flag = self.in_flight.clone();
        let result = self
            .runner
            .run(timeout, move || {
                let started = Instant::now();
                let mut sink = MetricSink::new();
                let result = collector.collect(&mut sink).map(|()| sink.into_families());
                flag.store(false, Ordering::Release);
                (result, started.elapsed())
            })
            .await;
        let outcome = match result {
            Ok((Ok(families), duration)) => {
                self.store(families, duration);
                Outcome::Ok
            }
            Ok((Err(error), duration)) => self.fail(&error, duration),
            // A panic in a collector is a bug; keep serving the rest.
            Err(RunError::Panicked) => {
                self.in_flight.store(false, Ordering::Release);
                self.fail(
                    &CollectError::Other("collector panicked".into()),
                    Duration::ZERO,
                )
            }
            Err(RunError::TimedOut) => self.fail(
                &CollectError::Other(format!("timed out after {:.1}s", timeout.as_secs_f64())),
                timeout,
            ),
            Err(RunError::NoWorker) => {
                self.in_flight.store(false, Ordering::Release);
                self.fail(
                    &CollectError::Other(
                        "not started: the collections ahead of it are stuck".into(),
                    ),
                    Duration::ZERO,
                )
            }
        };
        if outcome == Outcome::Ok && self.last_outcome == Outcome::Failed {
            tracing::info!(collector = self.name(), "Collector recovered.");
        }
        self.last_outcome = outcome;
    }

    fn store(&mut self, families: Vec<prometheus::proto::MetricFamily>, duration: Duration) {
        let name = self.name();
        let dropped = self
            .snapshot
            .store_success(self.scheduled.index, families, duration);
        for family in dropped {
            if self.logged_drops.insert(family.clone()) {
                tracing::warn!(
                    collector = name,
                    family = family.as_str(),
                    "Dropped a family that a built-in collector also exports."
                );
            }
        }
    }

    fn fail(&self, error: &CollectError, duration: Duration) -> Outcome {
        record_error(
            &self.snapshot,
            self.scheduled.index,
            self.name(),
            error,
            duration,
            &self.last_outcome,
        );
        if error.is_no_data() {
            Outcome::NoData
        } else {
            Outcome::Failed
        }
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

    /// Every collector on the fast tick.
    fn every() -> FastSet {
        FastSet {
            all: true,
            ..FastSet::default()
        }
    }

    /// Counts its runs; writes the count as the family it was given.
    struct Counting {
        family: &'static str,
        runs: std::sync::atomic::AtomicU64,
    }

    impl Counting {
        fn writing(family: &'static str) -> Arc<Self> {
            Arc::new(Self {
                family,
                runs: Default::default(),
            })
        }
    }

    impl Collector for Counting {
        fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
            let n = self.runs.fetch_add(1, Ordering::AcqRel) + 1;
            out.gauge(self.family, "Runs.", &[], n as f64);
            Ok(())
        }
    }

    fn runs(snapshot: &Snapshot, name: &str) -> u64 {
        snapshot.slot(name).expect("slot").state().runs
    }

    /// Two counting collectors, `loadavg` (its family read by a rule) and `arp` (read
    /// by nobody), 2 s apart.
    fn two_speeds() -> (Arc<Snapshot>, Vec<Scheduled>, FastSet) {
        let specs = vec![
            (
                collectors::spec("loadavg").expect("spec"),
                Duration::from_secs(2),
            ),
            (
                collectors::spec("arp").expect("spec"),
                Duration::from_secs(2),
            ),
        ];
        let snapshot = Arc::new(Snapshot::new(specs));
        let scheduled = (0..2)
            .map(|index| Scheduled {
                index,
                collector: Counting::writing("test_runs"),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
            })
            .collect();
        let fast = FastSet {
            families: [("node_load1".to_string(), Duration::ZERO)].into(),
            ..FastSet::default()
        };
        (snapshot, scheduled, fast)
    }

    #[tokio::test(start_paused = true)]
    async fn what_no_rule_reads_runs_when_a_scrape_asks() {
        let (snapshot, scheduled, mut fast) = two_speeds();
        // `arp` writes test_runs; make `loadavg` fast by name instead of family.
        fast.collectors.insert("loadavg".into());
        let (tx, rx) = watch::channel(false);
        let (mut set, on_demand) = spawn_all(scheduled, snapshot.clone(), fast, rx);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            (runs(&snapshot, "loadavg"), runs(&snapshot, "arp")),
            (1, 1),
            "first round"
        );
        assert!(on_demand.is_on_demand(1) && !on_demand.is_on_demand(0));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs(&snapshot, "loadavg"), 6, "fast: every 2 s");
        assert_eq!(runs(&snapshot, "arp"), 1, "on demand: not on the tick");
        on_demand.refresh().await;
        assert_eq!(runs(&snapshot, "arp"), 2, "a scrape asks");
        on_demand.refresh().await;
        assert_eq!(runs(&snapshot, "arp"), 2, "fresh within a second: shared");
        tokio::time::sleep(FRESHNESS).await;
        let (a, b) = tokio::join!(on_demand.refresh(), on_demand.refresh());
        let _ = (a, b);
        assert_eq!(
            runs(&snapshot, "arp"),
            3,
            "two concurrent scrapes, one collection"
        );
        tokio::time::sleep(IDLE_REFRESH + Duration::from_millis(100)).await;
        assert_eq!(runs(&snapshot, "arp"), 4, "at least every {IDLE_REFRESH:?}");
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_writing_a_family_a_rule_reads_stays_fast() {
        let (snapshot, mut scheduled, fast) = two_speeds();
        let loadavg = Arc::new(Scripted {
            results: Mutex::new(vec![Ok(1.0)]),
        });
        // A collector writing node_load1 (as the real loadavg does).
        struct Load(Arc<Scripted>);
        impl Collector for Load {
            fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
                out.gauge("node_load1", "Load.", &[], 0.5);
                self.0.collect(out)
            }
        }
        scheduled[0].collector = Arc::new(Load(loadavg));
        let (tx, rx) = watch::channel(false);
        let (mut set, on_demand) = spawn_all(scheduled, snapshot.clone(), fast, rx);
        tokio::time::sleep(Duration::from_millis(4_100)).await;
        assert!(!on_demand.is_on_demand(0));
        assert_eq!(runs(&snapshot, "loadavg"), 3);
        assert_eq!(runs(&snapshot, "arp"), 1);
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
    }

    /// `loadavg` writing `node_load1`, which a rule reads with the pace given.
    fn paced(pace: Duration) -> (Arc<Snapshot>, Vec<Scheduled>, FastSet) {
        let (snapshot, mut scheduled, mut fast) = two_speeds();
        scheduled[0].collector = Counting::writing("node_load1");
        fast.families = [("node_load1".to_string(), pace)].into();
        (snapshot, scheduled, fast)
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_only_rules_with_for_read_runs_at_their_pace_and_when_scraped() {
        let (snapshot, scheduled, fast) = paced(Duration::from_secs(10));
        let (tx, rx) = watch::channel(false);
        let (mut set, on_demand) = spawn_all(scheduled, snapshot.clone(), fast, rx);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(on_demand.is_on_demand(0), "not on every tick");
        assert_eq!(runs(&snapshot, "loadavg"), 1, "first round");
        tokio::time::sleep(Duration::from_millis(9_800)).await;
        assert_eq!(runs(&snapshot, "loadavg"), 1, "not before its pace");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runs(&snapshot, "loadavg"), 2, "on the tick 10 s after");
        assert_eq!(runs(&snapshot, "arp"), 1, "read by nobody: not yet");
        tokio::time::sleep(Duration::from_secs(3)).await;
        on_demand.refresh().await;
        assert_eq!(runs(&snapshot, "loadavg"), 3, "a scrape asks it too");
        // Due again 10 s after that run, on the last 2 s tick within it: 22 s, not 20.
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(runs(&snapshot, "loadavg"), 3, "paced from the last run");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs(&snapshot, "loadavg"), 4, "on the 22 s tick");
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_shorter_than_two_intervals_is_every_tick() {
        let (snapshot, scheduled, fast) = paced(Duration::from_secs(3));
        let (tx, rx) = watch::channel(false);
        let (mut set, on_demand) = spawn_all(scheduled, snapshot.clone(), fast, rx);
        tokio::time::sleep(Duration::from_millis(6_100)).await;
        assert!(!on_demand.is_on_demand(0));
        assert_eq!(runs(&snapshot, "loadavg"), 4, "every 2 s");
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_on_demand_collector_holds_a_scrape_at_most_once() {
        let specs = vec![(
            collectors::spec("arp").expect("spec"),
            Duration::from_millis(30),
        )];
        let snapshot = Arc::new(Snapshot::new(specs));
        let (release, hang) = std::sync::mpsc::channel();
        let (tx, rx) = watch::channel(false);
        // The first run succeeds (so the collector is known and goes on demand), the
        // second hangs.
        struct ThenHang(Mutex<std::sync::mpsc::Receiver<()>>, AtomicBool);
        impl Collector for ThenHang {
            fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
                if self.1.swap(true, Ordering::AcqRel) {
                    let _ = self.0.lock().expect("lock").recv();
                }
                out.gauge("test_value", "Test.", &[], 1.0);
                Ok(())
            }
        }
        let scheduled = vec![Scheduled {
            index: 0,
            collector: Arc::new(ThenHang(Mutex::new(hang), AtomicBool::new(false))),
            interval: Duration::from_millis(30),
            timeout: Duration::from_millis(200),
        }];
        let (mut set, on_demand) = spawn_all(scheduled, snapshot.clone(), FastSet::default(), rx);
        // The first run sorts it; wait for that rather than for a fixed time.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !on_demand.is_on_demand(0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(on_demand.is_on_demand(0));
        let started = Instant::now();
        on_demand.refresh().await;
        let first = started.elapsed();
        assert!(
            first >= Duration::from_millis(150) && first < Duration::from_secs(1),
            "{first:?}"
        );
        tokio::time::sleep(FRESHNESS).await;
        let started = Instant::now();
        on_demand.refresh().await;
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        let state = snapshot.slot("arp").expect("slot").state();
        assert!(state.last_error.expect("error").contains("still running"));
        release.send(()).expect("release");
        tx.send(true).expect("send");
        while set.join_next().await.is_some() {}
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
        let (mut set, _) = spawn_all(vec![scheduled], snapshot.clone(), every(), rx);
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
        let (mut set, _) = spawn_all(set_items, snapshot.clone(), every(), rx);
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
