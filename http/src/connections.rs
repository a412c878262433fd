//! Open connections: their state (request in flight or idle, since when, first byte of
//! the next request), the cap with eviction of the longest-idle one, the timeouts, and
//! the counters behind `nodewatch_http_connections*`.
//!
//! A connection is *idle* when no request of it is being answered: waiting for its
//! next request, or reading one's headers (a TLS handshake included). Only idle
//! connections are evicted or timed out, so an answer is never cut off; a request in
//! flight is bounded by the handlers' own timeouts and the shutdown deadline.

use std::collections::HashMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::limits::Limits;

const NONE: u64 = u64::MAX;

/// Why a connection was closed by the server (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// At the cap, for a newer connection.
    Evicted = 0,
    /// At the cap with every connection busy: the new one was closed at once.
    Refused = 1,
    /// Headers (or the TLS handshake) took longer than `--web.read-header-timeout`.
    HeaderTimeout = 2,
    /// Idle longer than `--web.idle-timeout`.
    IdleTimeout = 3,
}

const REASONS: [&str; 4] = ["evicted", "refused", "header_timeout", "idle_timeout"];

/// Process-wide connection counters (one server per process, like the request metrics).
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    open: AtomicU64,
    accepted: AtomicU64,
    closed: [AtomicU64; 4],
    accept_errors: AtomicU64,
}

impl ConnectionMetrics {
    /// The process-wide instance.
    pub fn global() -> &'static ConnectionMetrics {
        static GLOBAL: OnceLock<ConnectionMetrics> = OnceLock::new();
        GLOBAL.get_or_init(ConnectionMetrics::default)
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the families in the text format; nothing before the first connection.
    pub fn render(&self, out: &mut Vec<u8>) {
        let accepted = self.accepted.load(Ordering::Relaxed);
        if accepted == 0 {
            return;
        }
        let _ = write!(
            out,
            "# HELP nodewatch_http_connections Open HTTP connections.\n\
             # TYPE nodewatch_http_connections gauge\n\
             nodewatch_http_connections {}\n\
             # HELP nodewatch_http_connections_accepted_total HTTP connections accepted.\n\
             # TYPE nodewatch_http_connections_accepted_total counter\n\
             nodewatch_http_connections_accepted_total {accepted}\n\
             # HELP nodewatch_http_connections_closed_total HTTP connections the server closed to protect itself, by reason.\n\
             # TYPE nodewatch_http_connections_closed_total counter\n",
            self.open.load(Ordering::Relaxed)
        );
        for (reason, count) in REASONS.iter().zip(&self.closed) {
            let _ = writeln!(
                out,
                "nodewatch_http_connections_closed_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP nodewatch_http_accept_errors_total Errors accepting connections (such as running out of file descriptors).\n\
             # TYPE nodewatch_http_accept_errors_total counter\n\
             nodewatch_http_accept_errors_total {}\n",
            self.accept_errors.load(Ordering::Relaxed)
        );
    }
}

/// One connection's state, shared by its task, its service and the tracker.
#[derive(Debug)]
pub(crate) struct ConnState {
    in_flight: AtomicU32,
    /// Milliseconds since the tracker's epoch when it last became idle.
    idle_since: AtomicU64,
    /// When the first byte of the next request (or handshake) arrived while idle.
    head_started: AtomicU64,
    closing: AtomicBool,
    /// Set at shutdown: a request begun (its head partly read) may still finish.
    shutting_down: AtomicBool,
    /// Wakes the connection's task to close it.
    pub(crate) close: Notify,
    epoch: Instant,
    /// The tracker's reaper, woken when a request begins while it sleeps long.
    reaper: Arc<ReaperWake>,
}

/// How connections wake the reaper: only while it sleeps until an idle deadline (a
/// request beginning may need the shorter header timeout), so that a busy server does
/// not wake it for every request.
#[derive(Debug, Default)]
pub(crate) struct ReaperWake {
    sleeping_long: AtomicBool,
    notify: Notify,
}

impl ReaperWake {
    fn activity(&self) {
        if self.sleeping_long.swap(false, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// From here until [`Self::ticking`], activity wakes the reaper; armed before it
    /// looks at the connections, so a request beginning meanwhile is not missed.
    pub(crate) fn arm(&self) {
        self.sleeping_long.store(true, Ordering::Release);
    }

    /// The reaper ticks: connections need not wake it.
    pub(crate) fn ticking(&self) {
        self.sleeping_long.store(false, Ordering::Release);
    }

    /// Completes on the next activity since [`Self::arm`]: a request's first byte or
    /// a new connection.
    pub(crate) async fn activity_seen(&self) {
        self.notify.notified().await;
    }
}

/// When the reaper looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextReap {
    /// A request is under way or its head arriving: in this long (a header timeout
    /// may end any time).
    Tick(Duration),
    /// Every open connection is idle: when the first idle timeout ends, or at the
    /// next activity.
    IdleEnds(Duration),
    /// No connection is open: at the next activity.
    NothingOpen,
}

impl ConnState {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A request is being answered.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether closing should let the connection finish its request: one in flight,
    /// or at shutdown one whose head has begun to arrive (the shutdown deadline bounds
    /// both; evictions and timeouts close at once).
    pub(crate) fn finish_first(&self) -> bool {
        self.is_busy()
            || (self.shutting_down.load(Ordering::Acquire)
                && self.head_started.load(Ordering::Acquire) != NONE)
    }

    fn ask_to_close(&self) -> bool {
        if self.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.close.notify_one();
        true
    }
}

/// Marks the end of a request when dropped (answered, or its future dropped).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open connection.
#[derive(Debug)]
pub(crate) struct Tracker {
    connections: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    epoch: Instant,
    limits: Limits,
    pub(crate) reaper: Arc<ReaperWake>,
}

/// Deregisters a connection when its task ends.
#[derive(Debug)]
pub(crate) struct Registration {
    tracker: Arc<Tracker>,
    id: u64,
    pub(crate) state: Arc<ConnState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tracker.lock().remove(&self.id);
        ConnectionMetrics::global()
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracker {
    pub(crate) fn new(limits: Limits) -> Arc<Tracker> {
        Arc::new(Tracker {
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            limits,
            reaper: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one more connection: true if there is room (after asking the
    /// longest-idle connection to close if the cap is reached), false if every
    /// connection is busy and the new one must be refused.
    pub(crate) fn make_room(&self) -> bool {
        let connections = self.lock();
        let open = connections
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire))
            .count();
        if open < self.limits.max_connections {
            return true;
        }
        let victim = connections
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire) && !c.is_busy())
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire));
        match victim {
            Some(victim) => {
                if victim.ask_to_close() {
                    ConnectionMetrics::global().closed(CloseReason::Evicted);
                }
                true
            }
            None => {
                ConnectionMetrics::global().closed(CloseReason::Refused);
                false
            }
        }
    }

    /// Connections registered, those asked to close but not yet closed included.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Registers a new connection.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            head_started: AtomicU64::new(NONE),
            closing: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            close: Notify::new(),
            epoch: self.epoch,
            reaper: self.reaper.clone(),
        });
        self.lock().insert(id, state.clone());
        self.reaper.activity();
        let metrics = ConnectionMetrics::global();
        metrics.open.fetch_add(1, Ordering::Relaxed);
        metrics.accepted.fetch_add(1, Ordering::Relaxed);
        Registration {
            tracker: self.clone(),
            id,
            state,
        }
    }

    /// Closes idle connections past their header or idle timeout, and says when to
    /// look again.
    pub(crate) fn reap(&self) -> NextReap {
        let now = self.epoch.elapsed().as_millis() as u64;
        let header = self.limits.read_header_timeout.as_millis() as u64;
        let idle = self.limits.idle_timeout.as_millis() as u64;
        let mut first_idle_end: Option<u64> = None;
        let mut active = false;
        for c in self.lock().values() {
            if c.closing.load(Ordering::Acquire) {
                continue;
            }
            if c.is_busy() {
                active = true;
                continue;
            }
            let started = c.head_started.load(Ordering::Acquire);
            let reason = if started != NONE {
                active = true;
                (now.saturating_sub(started) > header).then_some(CloseReason::HeaderTimeout)
            } else {
                let since = c.idle_since.load(Ordering::Acquire);
                let end = since.saturating_add(idle).saturating_add(1);
                first_idle_end = Some(first_idle_end.map_or(end, |e| e.min(end)));
                (now.saturating_sub(since) > idle).then_some(CloseReason::IdleTimeout)
            };
            if let Some(reason) = reason
                && c.ask_to_close()
            {
                ConnectionMetrics::global().closed(reason);
            }
        }
        if active {
            return NextReap::Tick(self.reap_interval());
        }
        match first_idle_end {
            Some(end) => NextReap::IdleEnds(
                Duration::from_millis(end.saturating_sub(now)).max(self.reap_interval()),
            ),
            None => NextReap::NothingOpen,
        }
    }

    /// How often [`Tracker::reap`] should run: a tenth of the shortest timeout, within
    /// 50 ms and 1 s.
    pub(crate) fn reap_interval(&self) -> Duration {
        (self
            .limits
            .read_header_timeout
            .min(self.limits.idle_timeout)
            / 10)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Asks every connection to close (shutdown): idle ones close at once; busy ones,
    /// and those with a request partly received, after their answer.
    pub(crate) fn close_all(&self) {
        for c in self.lock().values() {
            c.shutting_down.store(true, Ordering::Release);
            c.closing.store(true, Ordering::Release);
            c.close.notify_one();
        }
    }
}

/// A connection's socket, noting when the first byte of a request arrives while idle
/// (so the header timeout counts from there, not from the end of the last answer).
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(inner: T, state: Arc<ConnState>) -> Self {
        Tracked { inner, state }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && !self.state.is_busy() {
            let now = self.state.now();
            if self
                .state
                .head_started
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.state.reaper.activity();
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            read_header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            shutdown_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn at_the_cap_the_longest_idle_is_evicted_and_busy_ones_never() {
        let tracker = Tracker::new(limits(2));
        let first = tracker.register();
        std::thread::sleep(Duration::from_millis(5));
        let second = tracker.register();
        assert!(tracker.make_room());
        assert!(
            first.state.closing.load(Ordering::Acquire),
            "oldest idle evicted"
        );
        assert!(!second.state.closing.load(Ordering::Acquire));
        drop(first);
        let third = tracker.register();
        let _busy = [second.state.begin(), third.state.begin()];
        assert!(!tracker.make_room(), "every connection busy: refuse");
    }

    #[test]
    fn the_reaper_sleeps_until_the_first_idle_timeout_between_requests() {
        let tracker = Tracker::new(limits(10));
        // 100 ms header timeout: a tenth of it, within 50 ms and 1 s.
        let tick = Duration::from_millis(50);
        assert_eq!(tracker.reap(), NextReap::NothingOpen);
        let conn = tracker.register();
        let NextReap::IdleEnds(wait) = tracker.reap() else {
            panic!("an idle connection: sleep until its idle timeout");
        };
        assert!(wait > Duration::from_millis(250) && wait <= Duration::from_millis(301));
        // A request's first byte wakes a reaper that sleeps long, and it ticks again.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tracker.reaper.arm();
        let mut woken = Box::pin(tracker.reaper.activity_seen());
        assert!(woken.as_mut().poll(&mut cx).is_pending());
        let mut socket = Tracked::new(&b"GET /"[..], conn.state.clone());
        let mut buf = [0u8; 8];
        let _ = Pin::new(&mut socket).poll_read(&mut cx, &mut ReadBuf::new(&mut buf));
        assert!(woken.as_mut().poll(&mut cx).is_ready());
        assert_eq!(tracker.reap(), NextReap::Tick(tick));
        // While it ticks, requests do not wake it.
        tracker.reaper.ticking();
        let in_flight = conn.state.begin();
        assert_eq!(tracker.reap(), NextReap::Tick(tick));
        drop(in_flight);
        assert!(matches!(tracker.reap(), NextReap::IdleEnds(_)));
        drop(conn);
        assert_eq!(tracker.reap(), NextReap::NothingOpen);
    }

    #[test]
    fn header_and_idle_timeouts() {
        let tracker = Tracker::new(limits(10));
        let idle = tracker.register();
        let reading = tracker.register();
        reading
            .state
            .head_started
            .store(reading.state.now(), Ordering::Release);
        let busy = tracker.register();
        let _in_flight = busy.state.begin();
        std::thread::sleep(Duration::from_millis(150));
        tracker.reap();
        assert!(reading.state.closing.load(Ordering::Acquire));
        assert!(!idle.state.closing.load(Ordering::Acquire));
        std::thread::sleep(Duration::from_millis(200));
        tracker.reap();
        assert!(idle.state.closing.load(Ordering::Acquire));
        assert!(!busy.state.closing.load(Ordering::Acquire));
    }
}
