//! `timex`: the kernel clock discipline's state from the `adjtimex(2)` system call (live,
//! as in node_exporter; no file to read).
//!
//! Exports node_exporter 1.5's seventeen families: `node_timex_sync_status`,
//! `node_timex_offset_seconds`, `node_timex_frequency_adjustment_ratio`,
//! `node_timex_maxerror_seconds`, `node_timex_estimated_error_seconds`,
//! `node_timex_status`, `node_timex_loop_time_constant`, `node_timex_tick_seconds`,
//! `node_timex_pps_frequency_hertz`, `node_timex_pps_jitter_seconds`,
//! `node_timex_pps_shift_seconds`, `node_timex_pps_stability_hertz`,
//! `node_timex_pps_jitter_total`, `node_timex_pps_calibration_total`,
//! `node_timex_pps_error_total`, `node_timex_pps_stability_exceeded_total`,
//! `node_timex_tai_offset_seconds`.

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;

/// `adjtimex` returns this clock state when the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// Status bit: `offset` and `jitter` are in nanoseconds rather than microseconds.
const STA_NANO: i32 = 0x2000;
/// Frequencies are in ppm with a 16-bit fraction (see NOTES in adjtimex(2)).
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;
const NANOSECONDS: f64 = 1e9;
const MICROSECONDS: f64 = 1e6;

/// What `adjtimex` reports, in the kernel's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timex {
    /// The call's return value: the clock state (`TIME_OK` … `TIME_ERROR`).
    pub clock_state: i32,
    /// Time offset (µs, or ns with `STA_NANO`).
    pub offset: i64,
    /// Frequency offset (scaled ppm).
    pub freq: i64,
    /// Maximum error (µs).
    pub maxerror: i64,
    /// Estimated error (µs).
    pub esterror: i64,
    /// Status bits.
    pub status: i32,
    /// PLL time constant.
    pub constant: i64,
    /// Microseconds between clock ticks.
    pub tick: i64,
    /// PPS frequency (scaled ppm).
    pub ppsfreq: i64,
    /// PPS jitter (µs, or ns with `STA_NANO`).
    pub jitter: i64,
    /// PPS interval duration (seconds, log2).
    pub shift: i32,
    /// PPS stability (scaled ppm).
    pub stabil: i64,
    /// PPS jitter limit exceeded events.
    pub jitcnt: i64,
    /// PPS calibration intervals.
    pub calcnt: i64,
    /// PPS calibration errors.
    pub errcnt: i64,
    /// PPS stability limit exceeded events.
    pub stbcnt: i64,
    /// TAI offset (seconds).
    pub tai: i32,
}

/// Calls `adjtimex`.
#[derive(Debug, Default)]
pub struct TimexCollector;

impl TimexCollector {
    /// A new collector.
    pub fn new() -> Self {
        Self
    }
}

/// The `timex` collector.
pub const SPEC: CollectorSpec =
    CollectorSpec::system("timex", |_| Ok(Box::new(TimexCollector::new())));

impl Collector for TimexCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        match read_timex() {
            Ok(timex) => {
                write_timex(out, &timex);
                Ok(())
            }
            Err(nix::errno::Errno::EPERM) => Err(CollectError::NoData(
                "adjtimex is not permitted (seccomp?)".to_string(),
            )),
            Err(errno) => Err(CollectError::Other(format!(
                "failed to retrieve adjtimex stats: {errno}"
            ))),
        }
    }
}

/// Writes the families as node_exporter 1.5 computes them from `t`.
pub fn write_timex(out: &mut MetricSink, t: &Timex) {
    let sync_status = if t.clock_state == TIME_ERROR {
        0.0
    } else {
        1.0
    };
    let divisor = if t.status & STA_NANO != 0 {
        NANOSECONDS
    } else {
        MICROSECONDS
    };
    let gauges: [(&str, &str, f64); 13] = [
        (
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            sync_status,
        ),
        (
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            t.offset as f64 / divisor,
        ),
        (
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + t.freq as f64 / PPM16FRAC,
        ),
        (
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            t.maxerror as f64 / MICROSECONDS,
        ),
        (
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            t.esterror as f64 / MICROSECONDS,
        ),
        (
            "node_timex_status",
            "Value of the status array bits.",
            f64::from(t.status),
        ),
        (
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            t.constant as f64,
        ),
        (
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            t.tick as f64 / MICROSECONDS,
        ),
        (
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            t.ppsfreq as f64 / PPM16FRAC,
        ),
        (
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            t.jitter as f64 / divisor,
        ),
        (
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            f64::from(t.shift),
        ),
        (
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            t.stabil as f64 / PPM16FRAC,
        ),
        (
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            f64::from(t.tai),
        ),
    ];
    for (name, help, value) in gauges {
        out.gauge(name, help, &[], value);
    }
    let counters: [(&str, &str, i64); 4] = [
        (
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            t.jitcnt,
        ),
        (
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            t.calcnt,
        ),
        (
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            t.errcnt,
        ),
        (
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            t.stbcnt,
        ),
    ];
    for (name, help, value) in counters {
        out.counter(name, help, &[], value as f64);
    }
}

/// Reads the kernel's clock state with `adjtimex(2)` in read-only mode.
pub fn read_timex() -> Result<Timex, nix::errno::Errno> {
    let (clock_state, buf) = adjtimex_read_only()?;
    Ok(Timex {
        clock_state,
        offset: wide(buf.offset),
        freq: wide(buf.freq),
        maxerror: wide(buf.maxerror),
        esterror: wide(buf.esterror),
        status: buf.status,
        constant: wide(buf.constant),
        tick: wide(buf.tick),
        ppsfreq: wide(buf.ppsfreq),
        jitter: wide(buf.jitter),
        shift: buf.shift,
        stabil: wide(buf.stabil),
        jitcnt: wide(buf.jitcnt),
        calcnt: wide(buf.calcnt),
        errcnt: wide(buf.errcnt),
        stbcnt: wide(buf.stbcnt),
        tai: buf.tai,
    })
}

/// The field widths differ between targets (long, or long long with 64-bit time on
/// 32-bit glibc); i64 holds them all.
fn wide(value: impl Into<i64>) -> i64 {
    value.into()
}

/// `adjtimex` with `modes = 0`: nix does not wrap it.
#[allow(unsafe_code)]
fn adjtimex_read_only() -> Result<(i32, libc::timex), nix::errno::Errno> {
    // SAFETY: `timex` is plain integers (and padding) for which all-zero bytes are a
    // valid value; `modes = 0` asks the kernel only to fill the buffer, which is a
    // valid, exclusively borrowed `timex` for the duration of the call.
    let (state, buf) = unsafe {
        let mut buf: libc::timex = std::mem::zeroed();
        (libc::adjtimex(&mut buf), buf)
    };
    if state == -1 {
        Err(nix::errno::Errno::last())
    } else {
        Ok((state, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    /// The families node_exporter 1.5 exported on this machine (the fixture references
    /// leave timex out: its values are the live kernel's).
    const FAMILIES: [&str; 17] = [
        "node_timex_estimated_error_seconds",
        "node_timex_frequency_adjustment_ratio",
        "node_timex_loop_time_constant",
        "node_timex_maxerror_seconds",
        "node_timex_offset_seconds",
        "node_timex_pps_calibration_total",
        "node_timex_pps_error_total",
        "node_timex_pps_frequency_hertz",
        "node_timex_pps_jitter_seconds",
        "node_timex_pps_jitter_total",
        "node_timex_pps_shift_seconds",
        "node_timex_pps_stability_exceeded_total",
        "node_timex_pps_stability_hertz",
        "node_timex_status",
        "node_timex_sync_status",
        "node_timex_tai_offset_seconds",
        "node_timex_tick_seconds",
    ];

    fn render(t: &Timex) -> String {
        let mut sink = MetricSink::new();
        write_timex(&mut sink, t);
        let mut out = Vec::new();
        nodewatch_http::encode_families(&sink.into_families(), &mut out).expect("encode");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn converts_like_node_exporter() {
        // An unsynchronised VM clock, as this machine's node_exporter reported it.
        let unsynced = Timex {
            clock_state: TIME_ERROR,
            maxerror: 16_000_000,
            esterror: 16_000_000,
            status: 64,
            constant: 2,
            tick: 10_000,
            ..Timex::default()
        };
        let text = render(&unsynced);
        assert_eq!(value_of(&text, "node_timex_sync_status"), 0.0);
        assert_eq!(value_of(&text, "node_timex_maxerror_seconds"), 16.0);
        assert_eq!(value_of(&text, "node_timex_tick_seconds"), 0.01);
        assert_eq!(
            value_of(&text, "node_timex_frequency_adjustment_ratio"),
            1.0
        );
        assert_eq!(value_of(&text, "node_timex_status"), 64.0);
        assert!(text.contains("# TYPE node_timex_pps_error_total counter\n"));
        assert!(text.contains(
            "# HELP node_timex_sync_status Is clock synchronized to a reliable server (1 = yes, 0 = no).\n"
        ));

        // A synchronised clock in nanosecond mode.
        let synced = Timex {
            clock_state: 0,
            offset: -1_500_000,
            freq: -655_360, // -10 ppm
            status: STA_NANO | 0x1,
            jitter: 2_000,
            ppsfreq: 65_536,
            stabil: 131_072,
            shift: 4,
            tai: 37,
            calcnt: 9,
            ..Timex::default()
        };
        let text = render(&synced);
        assert_eq!(value_of(&text, "node_timex_sync_status"), 1.0);
        assert_eq!(value_of(&text, "node_timex_offset_seconds"), -0.0015);
        assert_eq!(value_of(&text, "node_timex_pps_jitter_seconds"), 2e-6);
        assert_eq!(
            value_of(&text, "node_timex_frequency_adjustment_ratio"),
            1.0 + -655_360.0 / PPM16FRAC
        );
        assert_eq!(value_of(&text, "node_timex_pps_frequency_hertz"), 1e-6);
        assert_eq!(value_of(&text, "node_timex_pps_stability_hertz"), 2e-6);
        assert_eq!(value_of(&text, "node_timex_pps_shift_seconds"), 4.0);
        assert_eq!(value_of(&text, "node_timex_tai_offset_seconds"), 37.0);
        assert_eq!(value_of(&text, "node_timex_pps_calibration_total"), 9.0);
    }

    #[test]
    fn live_call_exports_every_family() {
        // adjtimex is live: check the shape, not the values.
        let text = collect_text(&TimexCollector::new());
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(names, FAMILIES);
        assert!(value_of(&text, "node_timex_tick_seconds") > 0.0);
        let sync = value_of(&text, "node_timex_sync_status");
        assert!(sync == 0.0 || sync == 1.0);
    }
}
