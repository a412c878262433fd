//! Runs collections one after another on one blocking thread at a time.
//!
//! A run takes microseconds to a millisecond, and runs come together (the fast
//! collectors share a tick, a scrape asks every on-demand collector at once), so one
//! thread of the runtime's blocking pool drains the queue: it wakes once for a batch
//! where a thread per run would wake (or be created, with a malloc arena of its own)
//! for each.
//!
//! A run that outlives its timeout leaves its drain stuck in a system call (a dead NFS
//! mount, a FIFO). The runner then starts a new drain for the runs queued behind it;
//! the stuck one ends when its call returns. A queued run's time starts when it does:
//! at its deadline, a run that has not started is given another timeout (at most
//! [`MAX_WAITS`] in all); then it is reported as not run, and skipped if a drain
//! reaches it later.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// A queued run; its argument is the generation of the drain that takes it.
type Job = Box<dyn FnOnce(u64) + Send>;

/// Timeouts a queued run waits for a drain before it is given up.
const MAX_WAITS: u32 = 3;

/// Why a run gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// It started and did not finish within its timeout.
    TimedOut,
    /// It never started: the drains ahead of it stayed stuck.
    NoWorker,
    /// It panicked.
    Panicked,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The generation of the drain that takes jobs; older ones end.
    generation: u64,
    /// Whether that drain is running.
    draining: bool,
}

/// Runs closures one after another on the blocking pool; see the module
/// documentation.
#[derive(Clone, Default)]
pub struct Runner {
    queue: Arc<Mutex<Queue>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Jobs run outside the lock, so a panic cannot leave the queue half-changed.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a queued run is.
#[derive(Clone, Copy)]
enum Progress {
    /// In the queue.
    Queued,
    /// Started at this instant on the drain of this generation.
    Started(Instant, u64),
    /// Given up before it started ([`RunError::NoWorker`]): it must never run.
    GivenUp,
}

/// A run's progress, shared by the caller and the drain that takes it.
type Taken = Arc<Mutex<Progress>>;

impl Runner {
    /// A runner with nothing queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the blocking pool after the runs queued before it, and waits for
    /// its result at most `timeout` after it starts. Must be called inside the
    /// runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, RunError> {
        let (answer, mut result) = tokio::sync::oneshot::channel();
        let taken: Taken = Arc::new(Mutex::new(Progress::Queued));
        let taken_by = taken.clone();
        self.submit(Box::new(move |generation| {
            {
                let mut progress = lock(&taken_by);
                if matches!(*progress, Progress::GivenUp) {
                    return;
                }
                *progress = Progress::Started(Instant::now(), generation);
            }
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
                let _ = answer.send(value);
            }
        }));
        let mut deadline = Instant::now() + timeout;
        let mut waits = 1;
        loop {
            match tokio::time::timeout_at(deadline, &mut result).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(_dropped)) => return Err(RunError::Panicked),
                Err(_elapsed) => {
                    let mut progress = lock(&taken);
                    match *progress {
                        Progress::Started(started, _) if started + timeout > deadline => {
                            deadline = started + timeout;
                        }
                        Progress::Started(_, generation) => {
                            drop(progress);
                            self.replace(generation);
                            return Err(RunError::TimedOut);
                        }
                        Progress::Queued if waits < MAX_WAITS => {
                            waits += 1;
                            deadline += timeout;
                        }
                        // Reported as not run: a drain that frees up later skips it.
                        Progress::Queued | Progress::GivenUp => {
                            *progress = Progress::GivenUp;
                            return Err(RunError::NoWorker);
                        }
                    }
                }
            }
        }
    }

    fn submit(&self, job: Job) {
        let mut queue = lock(&self.queue);
        queue.jobs.push_back(job);
        if !queue.draining {
            queue.draining = true;
            self.spawn_drain(queue.generation);
        }
    }

    /// Gives up on the drain of `generation` (stuck in a run): a new one takes the
    /// queue.
    fn replace(&self, generation: u64) {
        let mut queue = lock(&self.queue);
        if queue.generation != generation {
            return;
        }
        queue.generation += 1;
        queue.draining = !queue.jobs.is_empty();
        if queue.draining {
            self.spawn_drain(queue.generation);
        }
    }

    fn spawn_drain(&self, generation: u64) {
        let queue = self.queue.clone();
        // Not awaited: the drain reports through each run's answer.
        drop(tokio::task::spawn_blocking(move || {
            drain(&queue, generation)
        }));
    }
}

/// Takes jobs while it is the current generation and there are any.
fn drain(queue: &Mutex<Queue>, generation: u64) {
    loop {
        let job = {
            let mut queue = lock(queue);
            if queue.generation != generation {
                return;
            }
            match queue.jobs.pop_front() {
                Some(job) => job,
                None => {
                    queue.draining = false;
                    return;
                }
            }
        };
        job(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_one_at_a_time_in_order() {
        let runner = Runner::new();
        let running = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let runs = (0..5).map(|i| {
            let (running, order) = (running.clone(), order.clone());
            runner.run(Duration::from_secs(5), move || {
                let before = running.fetch_add(1, Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(5));
                lock(&order).push(i);
                running.fetch_sub(1, Ordering::AcqRel);
                before
            })
        });
        let alongside = futures_util::future::join_all(runs).await;
        assert!(alongside.iter().all(|r| *r == Ok(0)), "{alongside:?}");
        assert_eq!(*lock(&order), [0, 1, 2, 3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_run_times_out_and_the_runs_behind_it_go_on() {
        let runner = Runner::new();
        let (release, hang) = mpsc::channel::<()>();
        let stuck = runner.run(Duration::from_millis(100), move || {
            let _ = hang.recv();
        });
        // Queued behind the stuck run: its time starts when it does.
        let behind = runner.run(Duration::from_millis(100), || 1);
        let (stuck, behind) = tokio::join!(stuck, behind);
        assert_eq!(stuck, Err(RunError::TimedOut));
        assert_eq!(behind, Ok(1), "ran on a new drain");
        assert_eq!(
            runner.run(Duration::from_millis(100), || 2).await,
            Ok(2),
            "and the runner goes on"
        );
        release.send(()).expect("release");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_given_up_before_it_started_never_runs() {
        let runner = Runner::new();
        let (release, hang) = mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let first = runner.clone();
        let stuck = tokio::spawn(async move {
            first
                .run(Duration::from_secs(30), move || {
                    let _ = started_tx.send(());
                    let _ = hang.recv();
                })
                .await
        });
        // The stuck run holds the drain before the next one is queued.
        started.await.expect("the stuck run started");
        let ran = Arc::new(AtomicUsize::new(0));
        let ran_by = ran.clone();
        let behind = runner.run(Duration::from_millis(50), move || {
            ran_by.fetch_add(1, Ordering::AcqRel);
        });
        assert_eq!(behind.await, Err(RunError::NoWorker));
        // The drain frees up: the run reported as not run stays not run.
        release.send(()).expect("release");
        assert_eq!(stuck.await.expect("join"), Ok(()));
        assert_eq!(
            runner.run(Duration::from_secs(5), || 3).await,
            Ok(3),
            "the queue goes on"
        );
        assert_eq!(ran.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_the_runner_goes_on() {
        let runner = Runner::new();
        let panicked = runner
            .run(Duration::from_secs(1), || -> u8 { panic!("collector bug") })
            .await;
        assert_eq!(panicked, Err(RunError::Panicked));
        assert_eq!(runner.run(Duration::from_secs(1), || 7).await, Ok(7));
    }
}
