//! Child processes owned by a test: output to a temp file, stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process. Dropping it sends SIGTERM, then SIGKILL after 10 s, and reaps it.
#[derive(Debug)]
pub struct Child {
    name: String,
    inner: std::process::Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
    exit: Option<std::process::ExitStatus>,
}

impl Child {
    /// Spawns `program args…` with stdout and stderr to one log file.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Child> {
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let inner = command
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        Ok(Child {
            name: name.to_string(),
            inner,
            log_path,
            _dir: dir,
            exit: None,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether it still runs (a zombie counts as exited).
    pub fn is_running(&self) -> bool {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        !status.is_empty()
            && !status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal)
            .with_context(|| format!("signal {}", self.name))
    }

    /// Waits up to `timeout` for it to exit; returns its status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.inner.try_wait() {
                self.exit = Some(status);
                return self.exit;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Resident set size in kB, from /proc.
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
    }

    /// CPU time used so far (user + system, every thread, ended ones included), in
    /// seconds: from the process's CPU-time clock (nanoseconds), else from
    /// `/proc/PID/stat` (clock ticks, 10 ms: too coarse for an idle process).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).ok()?);
        if let Ok(clock) = nix::time::clock_getcpuclockid(pid)
            && let Ok(time) = nix::time::clock_gettime(clock)
        {
            return Some(time.tv_sec() as f64 + time.tv_nsec() as f64 / 1e9);
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let after_comm = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime), counted after the comm field.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()?? as f64;
        Some((utime + stime) / ticks)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        if self.wait_timeout(Duration::from_secs(10)).is_none() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}
