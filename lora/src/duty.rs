//! The duty-cycle budget: how much airtime a transmitter may use over a sliding
//! window (EU868: 1 % over an hour, i.e. 36 s of airtime in any hour).
//!
//! Each transmission counts in full from its start until it is `window` old. Both
//! ends keep one: the node for its alerts, the gateway for its acknowledgements.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

/// The regulators' window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// A transmitter's airtime budget over a sliding window.
#[derive(Debug, Clone)]
pub struct DutyCycle {
    fraction: f64,
    window: Duration,
    budget: Duration,
    /// Transmissions still in the window, oldest first.
    spent: VecDeque<(Instant, Duration)>,
}

impl DutyCycle {
    /// A budget of `fraction` (0.01 = 1 %) of `window`. A fraction of 1 or more is no
    /// limit; a fraction that is not a positive number allows nothing.
    pub fn new(fraction: f64, window: Duration) -> Self {
        let fraction = if fraction.is_finite() && fraction > 0.0 {
            fraction
        } else {
            0.0
        };
        let budget = if fraction >= 1.0 {
            window
        } else {
            window.mul_f64(fraction)
        };
        Self {
            fraction,
            window,
            budget,
            spent: VecDeque::new(),
        }
    }

    /// The region's default fraction over [`DEFAULT_WINDOW`].
    pub fn for_region(region: Region) -> Self {
        Self::new(region.default_duty_fraction(), DEFAULT_WINDOW)
    }

    /// Whether there is no limit (fraction ≥ 1).
    pub fn is_unlimited(&self) -> bool {
        self.fraction >= 1.0
    }

    /// Records a transmission of `airtime` starting `now` if it fits the budget.
    /// Otherwise `Err` gives how long until it would fit (`Duration::MAX` when it
    /// never can: longer than the whole budget).
    pub fn try_spend(&mut self, airtime: Duration, now: Instant) -> Result<(), Duration> {
        self.expire(now);
        if self.is_unlimited() {
            // Still recorded, so that `used` reports the airtime.
            self.spent.push_back((now, airtime));
            return Ok(());
        }
        if airtime > self.budget {
            return Err(Duration::MAX);
        }
        let used = self.used(now);
        let Some(excess) = (used + airtime)
            .checked_sub(self.budget)
            .filter(|e| !e.is_zero())
        else {
            self.spent.push_back((now, airtime));
            return Ok(());
        };
        // Wait until enough of the oldest transmissions have left the window.
        let mut freed = Duration::ZERO;
        for &(at, spent) in &self.spent {
            freed += spent;
            if freed >= excess {
                return Err((at + self.window).saturating_duration_since(now));
            }
        }
        // Unreachable in practice (airtime ≤ budget), but never promise a wrong time.
        Err(self.window)
    }

    /// Airtime spent in the window ending `now`.
    pub fn used(&self, now: Instant) -> Duration {
        self.spent
            .iter()
            .filter(|&&(at, _)| at + self.window > now)
            .map(|&(_, d)| d)
            .sum()
    }

    /// The whole budget per window.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Airtime still available in the window ending `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.budget.saturating_sub(self.used(now))
    }

    /// The transmissions still in the window ending `now`, with their starts on the
    /// wall clock (`wall` = the wall-clock time at `now`), to outlive a restart.
    pub fn saved(&self, now: Instant, wall: SystemTime) -> Vec<SavedSpend> {
        self.spent
            .iter()
            .filter(|&&(at, _)| at + self.window > now)
            .map(|&(at, airtime)| {
                let started = wall
                    .checked_sub(now.saturating_duration_since(at))
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                SavedSpend {
                    started_unix_ms: started
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    airtime_ms: airtime.as_millis() as u64
                        + u64::from(airtime.subsec_nanos() % 1_000_000 != 0),
                }
            })
            .collect()
    }

    /// Counts `saved` transmissions (from [`DutyCycle::saved`] before a restart) again.
    /// Their ages come from the wall clock; one that seems to lie in the future (the
    /// clock went back) counts as if it started `now`, so the budget is never overspent
    /// because of a clock step backwards.
    pub fn restore(&mut self, saved: &[SavedSpend], now: Instant, wall: SystemTime) {
        let mut restored: Vec<(Instant, Duration)> = saved
            .iter()
            .filter_map(|s| {
                let started =
                    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(s.started_unix_ms))?;
                let age = wall.duration_since(started).unwrap_or(Duration::ZERO);
                if age >= self.window {
                    return None;
                }
                // Shortly after boot the monotonic clock may not reach that far back:
                // count it from now (the safe side).
                let at = now.checked_sub(age).unwrap_or(now);
                Some((at, Duration::from_millis(s.airtime_ms)))
            })
            .collect();
        restored.extend(self.spent.drain(..));
        restored.sort_by_key(|&(at, _)| at);
        self.spent = restored.into();
    }

    /// Writes [`DutyCycle::saved`] to `path` (atomically).
    pub fn save(&self, path: &Path, now: Instant, wall: SystemTime) -> Result<(), String> {
        let bytes = serde_json::to_vec(&self.saved(now, wall))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        crate::persist::write_atomic(path, &bytes)
    }

    /// Restores what [`DutyCycle::save`] wrote to `path`, if it exists.
    pub fn load(&mut self, path: &Path, now: Instant, wall: SystemTime) -> Result<(), String> {
        let Some(bytes) = crate::persist::read_optional(path)? else {
            return Ok(());
        };
        let saved: Vec<SavedSpend> =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        self.restore(&saved, now, wall);
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.spent.front() {
            if at + self.window <= now {
                self.spent.pop_front();
            } else {
                break;
            }
        }
    }
}

/// One transmission of a [`DutyCycle`], as kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSpend {
    /// When it started, in milliseconds since the Unix epoch (wall clock).
    pub started_unix_ms: u64,
    /// Its airtime in milliseconds, rounded up.
    pub airtime_ms: u64,
}

/// A regulatory region, for its default duty cycle. Only the duty-cycle rule is
/// modelled: dwell-time limits (US915/AU915: 400 ms per channel) and listen-before-
/// talk (KR920, AS923 in Japan) are not, so choose a spreading factor that respects
/// them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Region {
    /// Europe 863–870 MHz: 1 % (the g1 sub-bands LoRa uses).
    Eu868,
    /// Europe 433 MHz: 10 %.
    Eu433,
    /// North America 902–928 MHz: no duty-cycle rule (dwell time instead).
    Us915,
    /// Australia 915–928 MHz: no duty-cycle rule (dwell time instead).
    Au915,
    /// Asia 923 MHz: 1 %.
    As923,
    /// India 865–867 MHz: no duty-cycle rule.
    In865,
    /// Korea 920–923 MHz: no duty-cycle rule (listen-before-talk instead).
    Kr920,
}

impl Region {
    /// Every region, for help texts.
    pub const ALL: [Region; 7] = [
        Region::Eu868,
        Region::Eu433,
        Region::Us915,
        Region::Au915,
        Region::As923,
        Region::In865,
        Region::Kr920,
    ];

    /// The region's name as written in config: `EU868`, `US915`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Eu868 => "EU868",
            Region::Eu433 => "EU433",
            Region::Us915 => "US915",
            Region::Au915 => "AU915",
            Region::As923 => "AS923",
            Region::In865 => "IN865",
            Region::Kr920 => "KR920",
        }
    }

    /// The fraction of time a transmitter may be on air (1.0: no duty-cycle rule).
    pub fn default_duty_fraction(self) -> f64 {
        match self {
            Region::Eu868 | Region::As923 => 0.01,
            Region::Eu433 => 0.10,
            Region::Us915 | Region::Au915 | Region::In865 | Region::Kr920 => 1.0,
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = String;

    /// Case-insensitive: `EU868`, `eu868`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown LoRa region {s:?} (expected one of {})",
                    Region::ALL.map(Region::as_str).join(", ")
                )
            })
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::airtime::{Modulation, time_on_air};
    use crate::frame::{ACK_LEN, MAX_FRAME_LEN};

    fn full_frame() -> Duration {
        time_on_air(&Modulation::default(), MAX_FRAME_LEN)
    }

    #[tokio::test(start_paused = true)]
    async fn fourteen_full_frames_an_hour_at_one_percent() {
        let mut duty = DutyCycle::for_region(Region::Eu868);
        assert_eq!(duty.budget(), Duration::from_secs(36));
        let airtime = full_frame();
        let fit = (36.0 / airtime.as_secs_f64()).floor() as u32;
        assert_eq!(fit, 14);
        let start = Instant::now();
        for i in 0..fit {
            duty.try_spend(airtime, Instant::now())
                .unwrap_or_else(|wait| panic!("frame {i} refused, wait {wait:?}"));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        let now = Instant::now();
        assert_eq!(duty.used(now), airtime * 14);
        assert_eq!(duty.remaining(now), Duration::from_secs(36) - airtime * 14);
        // The 15th waits until the first frame leaves the window.
        let wait = duty.try_spend(airtime, now).expect_err("15th frame");
        assert_eq!(wait, start + DEFAULT_WINDOW - now);
        // Not yet, a moment before.
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        assert_eq!(
            duty.try_spend(airtime, Instant::now()),
            Err(Duration::from_millis(1))
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(duty.try_spend(airtime, Instant::now()), Ok(()));
        assert_eq!(duty.used(Instant::now()), airtime * 14);
        // An hour after the last frame, the whole budget is back.
        tokio::time::advance(DEFAULT_WINDOW).await;
        assert_eq!(duty.remaining(Instant::now()), Duration::from_secs(36));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_slide() {
        // 12-byte frames (~1155 ms) at once: 31 fit, as design §4 says.
        let mut duty = DutyCycle::new(0.01, DEFAULT_WINDOW);
        let small = time_on_air(&Modulation::default(), 12);
        let mut n = 0;
        while duty.try_spend(small, Instant::now()).is_ok() {
            n += 1;
        }
        assert_eq!(n, 31);
        let wait = duty.try_spend(small, Instant::now()).expect_err("full");
        assert_eq!(wait, DEFAULT_WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_accounts_for_several_old_frames() {
        let mut duty = DutyCycle::new(0.01, DEFAULT_WINDOW);
        let t0 = Instant::now();
        // 3 × 10 s = 30 s used at t0, t0+100 s, t0+200 s.
        for i in 0..3 {
            duty.try_spend(Duration::from_secs(10), t0 + Duration::from_secs(100 * i))
                .expect("fits");
        }
        let now = t0 + Duration::from_secs(300);
        // 25 s needs 19 s freed: two frames must leave, the second at t0+3700 s.
        assert_eq!(
            duty.try_spend(Duration::from_secs(25), now),
            Err(Duration::from_secs(3400))
        );
        assert_eq!(duty.try_spend(Duration::from_secs(6), now), Ok(()));
        // Longer than the whole budget: never.
        assert_eq!(
            duty.try_spend(Duration::from_secs(37), now),
            Err(Duration::MAX)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_acks_spend_the_gateways_own_budget() {
        // The gateway acks every frame: 18-byte acks at SF12 cost ~1.3 s each.
        let mut node = DutyCycle::for_region(Region::Eu868);
        let mut gateway = DutyCycle::for_region(Region::Eu868);
        let ack = time_on_air(&Modulation::default(), ACK_LEN);
        assert!(ack > Duration::from_millis(1100) && ack < Duration::from_millis(1400));
        let frame = full_frame();
        let mut acked = 0;
        for _ in 0..14 {
            node.try_spend(frame, Instant::now()).expect("node budget");
            if gateway.try_spend(ack, Instant::now()).is_ok() {
                acked += 1;
            }
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        assert_eq!(acked, 14);
        assert_eq!(gateway.used(Instant::now()), ack * 14);
        let left = gateway.remaining(Instant::now());
        assert_eq!(left, Duration::from_secs(36) - ack * 14);
        assert!(node.remaining(Instant::now()) < left);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_and_nothing() {
        let mut us = DutyCycle::for_region(Region::Us915);
        assert!(us.is_unlimited());
        for _ in 0..10_000 {
            assert_eq!(us.try_spend(full_frame(), Instant::now()), Ok(()));
        }
        assert_eq!(us.used(Instant::now()), full_frame() * 10_000);
        tokio::time::advance(DEFAULT_WINDOW).await;
        assert_eq!(us.used(Instant::now()), Duration::ZERO);
        let mut none = DutyCycle::new(f64::NAN, DEFAULT_WINDOW);
        assert_eq!(none.budget(), Duration::ZERO);
        assert_eq!(
            none.try_spend(Duration::from_millis(1), Instant::now()),
            Err(Duration::MAX)
        );
        assert_eq!(none.try_spend(Duration::ZERO, Instant::now()), Ok(()));
    }

    #[test]
    fn regions() {
        assert_eq!("EU868".parse::<Region>(), Ok(Region::Eu868));
        assert_eq!("eu868".parse::<Region>(), Ok(Region::Eu868));
        assert_eq!("Us915".parse::<Region>(), Ok(Region::Us915));
        let err = "EU869".parse::<Region>().expect_err("unknown");
        assert!(err.contains("EU869") && err.contains("EU868"), "{err}");
        assert_eq!(Region::Eu868.default_duty_fraction(), 0.01);
        assert_eq!(Region::Eu433.default_duty_fraction(), 0.10);
        assert_eq!(Region::Us915.default_duty_fraction(), 1.0);
        for r in Region::ALL {
            assert_eq!(r.to_string().parse::<Region>(), Ok(r));
        }
        let r: Region = serde_json::from_str("\"eu433\"").expect("deserialize");
        assert_eq!(r, Region::Eu433);
        assert_eq!(serde_json::to_string(&r).expect("json"), "\"EU433\"");
        assert!(serde_json::from_str::<Region>("\"mars\"").is_err());
    }

    /// The airtime spent before a restart still counts after it: the new process
    /// (new monotonic clock) restores it from the wall-clock record.
    #[tokio::test(start_paused = true)]
    async fn the_budget_survives_a_restart() {
        // Far enough from the clock's origin that an hour back is representable.
        tokio::time::advance(Duration::from_secs(7200)).await;
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let frame = full_frame();
        let mut duty = DutyCycle::for_region(Region::Eu868);
        let mut sent = 0;
        while duty.try_spend(frame, Instant::now()).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 14);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lora-duty.json");
        duty.save(&path, Instant::now(), wall).expect("save");

        // Restarted ten minutes later: still no budget.
        tokio::time::advance(Duration::from_secs(600)).await;
        let later = wall + Duration::from_secs(600);
        let mut after = DutyCycle::for_region(Region::Eu868);
        after.load(&path, Instant::now(), later).expect("load");
        assert!(after.try_spend(frame, Instant::now()).is_err());
        assert!(after.remaining(Instant::now()) < frame);
        // The hour after those transmissions, all of it is back.
        tokio::time::advance(Duration::from_secs(3000)).await;
        assert_eq!(after.remaining(Instant::now()), after.budget());

        let saved = duty.saved(Instant::now() - Duration::from_secs(3600), wall);
        assert_eq!(saved.len(), 14);
        // Restored more than an hour later: nothing counts any more.
        let mut late = DutyCycle::for_region(Region::Eu868);
        late.restore(&saved, Instant::now(), wall + Duration::from_secs(3601));
        assert_eq!(late.remaining(Instant::now()), late.budget());
        // The wall clock went back an hour: counted from now, never less.
        let mut back = DutyCycle::for_region(Region::Eu868);
        back.restore(&saved, Instant::now(), wall - Duration::from_secs(3600));
        assert!(back.remaining(Instant::now()) < frame);
        // No file yet: an empty budget record.
        let mut none = DutyCycle::for_region(Region::Eu868);
        none.load(&dir.path().join("absent.json"), Instant::now(), wall)
            .expect("absent");
        assert_eq!(none.remaining(Instant::now()), none.budget());
        // A corrupt file is an error naming it.
        std::fs::write(&path, b"[{").expect("write");
        let e = none.load(&path, Instant::now(), wall).expect_err("corrupt");
        assert!(e.contains("lora-duty.json"), "{e}");
    }
}
