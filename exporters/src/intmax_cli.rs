//! The reward exporter's ETH source: the INTMAX CLI's `balance` command, run on this
//! machine or on the node over SSH with the system `ssh` client.
//!
//! The CLI takes the spend key as an argument, so the command run is a wrapper on the
//! node that reads the key from its own 0600 file (docs/reward-exporter.md): the key
//! is never in this exporter's settings, command lines or logs, and never crosses the
//! network. Settings that look like they carry a key are refused.
//!
//! A run has a timeout: the child (and its process group) is killed when it passes.
//! Runs of one node never overlap (one loop per node, plus a guard in the state).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::ConfigError;

/// Output read from a run at most (the real CLI prints a few lines).
const MAX_OUTPUT: u64 = 64 * 1024;

/// How a node's ETH source is run, as written in the TOML file (`[nodes.eth]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EthFile {
    /// Local: the program and its arguments, run without a shell.
    pub local_command: Option<Vec<String>>,
    /// Over SSH.
    pub ssh: Option<SshFile>,
    /// Seconds a run may take before it is killed (default 120).
    pub timeout_seconds: Option<u64>,
}

/// `[nodes.eth.ssh]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshFile {
    /// The node's host name or address.
    pub host: String,
    /// Its SSH port (default 22).
    pub port: Option<u16>,
    /// The user to log in as.
    pub user: String,
    /// The private key of this exporter's SSH identity (not the spend key).
    pub identity_file: String,
    /// A known_hosts file holding the node's host key (checked strictly).
    pub known_hosts: String,
    /// The command run on the node: the wrapper that reads the spend key from its file
    /// there and runs `intmax2-cli balance`.
    pub command: String,
    /// Seconds to wait for the TCP and SSH connection (default 10).
    pub connect_timeout_seconds: Option<u64>,
}

/// A node's ETH source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthSource {
    /// What to run.
    pub how: How,
    /// Kill the run after this long.
    pub timeout: Duration,
}

/// Local or over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// `argv[0] argv[1..]`.
    Local(Vec<String>),
    /// `ssh … user@host -- command`.
    Ssh {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// SSH private key file.
        identity_file: PathBuf,
        /// known_hosts file.
        known_hosts: PathBuf,
        /// Remote command.
        command: String,
        /// Connect timeout.
        connect_timeout: Duration,
    },
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        message: message.into(),
    }
}

/// Whether `text` holds what looks like a private key: 64 hex digits in a row.
pub fn looks_like_key(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= 64 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// `text` with every run of 64 or more hex digits replaced, for logs and errors.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 64 {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

impl EthSource {
    /// Validates `[nodes.eth]` of node `node` (its index in `nodes`).
    pub fn resolve(node: usize, file: &EthFile) -> Result<EthSource, ConfigError> {
        let at = format!("nodes[{node}].eth");
        let timeout = match file.timeout_seconds.unwrap_or(120) {
            0 => {
                return Err(invalid(
                    &format!("{at}.timeout_seconds"),
                    "must be at least 1",
                ));
            }
            s => Duration::from_secs(s),
        };
        let how = match (&file.local_command, &file.ssh) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(&at, "set exactly one of local_command and ssh"));
            }
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].trim().is_empty() {
                    return Err(invalid(
                        &format!("{at}.local_command"),
                        "the program and its arguments, e.g. [\"/usr/local/bin/intmax-balance\"]",
                    ));
                }
                if argv.iter().any(|a| looks_like_key(a)) {
                    return Err(invalid(
                        &format!("{at}.local_command"),
                        "holds what looks like a private key: run a wrapper that reads the key from its 0600 file instead",
                    ));
                }
                How::Local(argv.clone())
            }
            (None, Some(ssh)) => {
                let field = |name: &str, value: &str| -> Result<(), ConfigError> {
                    if value.trim().is_empty() {
                        return Err(invalid(&format!("{at}.ssh.{name}"), "must not be empty"));
                    }
                    // ssh would read a leading '-' as an option.
                    if value.starts_with('-') {
                        return Err(invalid(
                            &format!("{at}.ssh.{name}"),
                            format!("{value:?} must not start with '-'"),
                        ));
                    }
                    // Every one of them goes on ssh's command line, which any user
                    // of the machine can read (found by fuzzing: a path of hex digits).
                    if looks_like_key(value) {
                        return Err(invalid(
                            &format!("{at}.ssh.{name}"),
                            "holds what looks like a private key (64 hex digits in a row), which would show on the command line: the wrapper on the node must read the key from its 0600 file",
                        ));
                    }
                    Ok(())
                };
                field("host", &ssh.host)?;
                field("user", &ssh.user)?;
                field("identity_file", &ssh.identity_file)?;
                field("known_hosts", &ssh.known_hosts)?;
                field("command", &ssh.command)?;
                let connect = match ssh.connect_timeout_seconds.unwrap_or(10) {
                    0 => {
                        return Err(invalid(
                            &format!("{at}.ssh.connect_timeout_seconds"),
                            "must be at least 1",
                        ));
                    }
                    s => Duration::from_secs(s),
                };
                How::Ssh {
                    host: ssh.host.clone(),
                    port: ssh.port.unwrap_or(22),
                    user: ssh.user.clone(),
                    identity_file: PathBuf::from(&ssh.identity_file),
                    known_hosts: PathBuf::from(&ssh.known_hosts),
                    command: ssh.command.clone(),
                    connect_timeout: connect,
                }
            }
        };
        Ok(EthSource { how, timeout })
    }

    /// The program and arguments run: `ssh_program` for SSH.
    pub fn argv(&self, ssh_program: &str) -> Vec<String> {
        match &self.how {
            How::Local(argv) => argv.clone(),
            How::Ssh {
                host,
                port,
                user,
                identity_file,
                known_hosts,
                command,
                connect_timeout,
            } => {
                let mut argv = vec![ssh_program.to_string()];
                for option in [
                    "BatchMode=yes".to_string(),
                    "StrictHostKeyChecking=yes".to_string(),
                    format!("UserKnownHostsFile={}", known_hosts.display()),
                    "GlobalKnownHostsFile=/dev/null".to_string(),
                    "IdentitiesOnly=yes".to_string(),
                    format!("ConnectTimeout={}", connect_timeout.as_secs()),
                    "ServerAliveInterval=15".to_string(),
                    "ServerAliveCountMax=2".to_string(),
                    "ForwardAgent=no".to_string(),
                    "ClearAllForwardings=yes".to_string(),
                    "RequestTTY=no".to_string(),
                    "LogLevel=ERROR".to_string(),
                ] {
                    argv.push("-o".into());
                    argv.push(option);
                }
                argv.extend([
                    "-F".into(),
                    "/dev/null".into(),
                    "-i".into(),
                    identity_file.display().to_string(),
                    "-p".into(),
                    port.to_string(),
                    "-l".into(),
                    user.clone(),
                    "--".into(),
                    host.clone(),
                    command.clone(),
                ]);
                argv
            }
        }
    }
}

/// Why a run gave no value. `kind()` is the `kind` label of the error counter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CliError {
    /// The program could not be started.
    #[error("cannot start {program}: {message}")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        message: String,
    },
    /// Killed after the timeout.
    #[error("no answer within {0:?}: killed")]
    Timeout(Duration),
    /// Exited with a failure (for ssh, 255 is its own error: connection, host key…).
    #[error("exited with {status}{}", stderr_suffix(.stderr))]
    Exit {
        /// The exit status as text.
        status: String,
        /// The last line it printed on stderr.
        stderr: String,
    },
    /// The output is not the shape expected.
    #[error("unexpected output: {0}")]
    Format(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl CliError {
    /// The `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Spawn { .. } => "spawn",
            CliError::Timeout(_) => "timeout",
            CliError::Exit { .. } => "exit",
            CliError::Format(_) => "format",
        }
    }
}

/// Every `kind` label of the CLI error counter.
pub const CLI_ERROR_KINDS: &[&str] = &["spawn", "timeout", "exit", "format"];

/// The balances a `balance` run printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Balances {
    /// `ETH: …`.
    pub eth: f64,
    /// `sITX: …`, if printed.
    pub sitx: Option<f64>,
}

/// A line for an error message: trimmed, keys redacted, at most 120 characters.
fn quote(line: &str) -> String {
    let line = redact_keys(line.trim());
    let quoted = match line.char_indices().nth(120) {
        Some((i, _)) => format!("{:?}…", &line[..i]),
        None => format!("{line:?}"),
    };
    // Again after quoting: `{:?}` writes a NUL as `\0`, whose 0 can join the hex
    // digits after it into a run of 64 (found by fuzzing).
    redact_keys(&quoted)
}

fn amount(text: &str) -> Option<f64> {
    let text = text.trim();
    let valid = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|c| *c == '.').count() <= 1
        && text.chars().any(|c| c.is_ascii_digit());
    // Over about 309 digits a decimal parses as infinity: not an amount.
    valid
        .then(|| text.parse().ok())
        .flatten()
        .filter(|v: &f64| v.is_finite())
}

/// Parses the CLI's `balance` output: every non-empty line must be `SYMBOL: AMOUNT`
/// (a plain decimal, like `ETH: 1.23` or `sITX: 4.5`), and `ETH` must be there once.
/// Anything else means the CLI changed: the error quotes the line.
pub fn parse_balance(output: &str) -> Result<Balances, CliError> {
    let mut eth = None;
    let mut sitx = None;
    for (number, line) in output.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let at = || format!("line {} {}", number + 1, quote(trimmed));
        let Some((symbol, value)) = trimmed.split_once(':') else {
            return Err(CliError::Format(format!(
                "{} is not `SYMBOL: AMOUNT`",
                at()
            )));
        };
        let symbol = symbol.trim();
        let valid_symbol = !symbol.is_empty()
            && symbol.len() <= 16
            && symbol.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid_symbol {
            return Err(CliError::Format(format!(
                "{} is not `SYMBOL: AMOUNT`",
                at()
            )));
        }
        let Some(value) = amount(value) else {
            return Err(CliError::Format(format!(
                "{}: the amount is not a plain decimal number",
                at()
            )));
        };
        let slot = match symbol {
            "ETH" => &mut eth,
            "sITX" => &mut sitx,
            _ => continue,
        };
        if slot.is_some() {
            return Err(CliError::Format(format!(
                "{}: {symbol} printed twice",
                at()
            )));
        }
        *slot = Some(value);
    }
    let eth = eth.ok_or_else(|| {
        let first = output
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(quote)
            .unwrap_or_else(|| "nothing".into());
        CliError::Format(format!(
            "no `ETH: AMOUNT` line (the output starts with {first})"
        ))
    })?;
    Ok(Balances { eth, sitx })
}

/// Runs `argv` with a timeout; returns its stdout. On timeout the child's process group
/// is killed. `on_spawn` gets the child's PID (its process group id) once it runs, and
/// `None` again when it has ended, so the caller can kill it on shutdown.
pub fn run(
    argv: &[String],
    timeout: Duration,
    on_spawn: &dyn Fn(Option<u32>),
) -> Result<String, CliError> {
    use std::os::unix::process::CommandExt;
    let program = argv.first().cloned().unwrap_or_default();
    let mut command = Command::new(&program);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills the wrapper and what it started.
        .process_group(0);
    let mut child = command.spawn().map_err(|e| CliError::Spawn {
        program: program.clone(),
        message: e.to_string(),
    })?;
    let pid = child.id();
    on_spawn(Some(pid));
    let (tx, rx) = mpsc::channel();
    for (which, stream) in [
        (
            0,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(stream) = stream else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stream.take(MAX_OUTPUT).read_to_end(&mut text);
            let _ = tx.send((which, String::from_utf8_lossy(&text).into_owned()));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let Some(status) = status else {
        kill_group(pid);
        let _ = child.kill();
        let _ = child.wait();
        on_spawn(None);
        return Err(CliError::Timeout(timeout));
    };
    // The pipes close when every process holding them has exited; a grandchild that
    // left the group could hold them: wait a little, not forever.
    let mut stdout = String::new();
    let mut stderr = String::new();
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok((which, text)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        if which == 0 {
            stdout = text;
        } else {
            stderr = text;
        }
    }
    // The child is reaped: its PID (and so its group id) may be reused from now on, so
    // no group kill here.
    on_spawn(None);
    if !status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| {
                let l = redact_keys(l.trim());
                l.chars().take(200).collect::<String>()
            })
            .unwrap_or_default();
        return Err(CliError::Exit {
            status: status.to_string(),
            stderr: last,
        });
    }
    Ok(stdout)
}

/// SIGKILL to process group `pgid` (a run's own group); errors (already gone) ignored.
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 1
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_output_parses() {
        assert_eq!(
            parse_balance("ETH: 1.23\nsITX: 4.5\n"),
            Ok(Balances {
                eth: 1.23,
                sitx: Some(4.5)
            })
        );
        assert_eq!(
            parse_balance("\n  ETH: 0\n"),
            Ok(Balances {
                eth: 0.0,
                sitx: None
            })
        );
        assert_eq!(
            parse_balance("sITX: 2\nUSDC: 3\nETH: .5\n").map(|b| b.eth),
            Ok(0.5)
        );
    }

    #[test]
    fn a_changed_shape_is_an_error_quoting_the_line() {
        for (output, needle) in [
            ("Balance: 1.23 ETH\n", "line 1 \"Balance: 1.23 ETH\""),
            ("ETH = 1.23\n", "line 1 \"ETH = 1.23\""),
            ("ETH: 1,23\n", "not a plain decimal"),
            ("ETH: -1\n", "not a plain decimal"),
            ("ETH: NaN\n", "not a plain decimal"),
            ("ETH: 1e3\n", "not a plain decimal"),
            ("ETH: 1\nETH: 2\n", "printed twice"),
            ("sITX: 4.5\n", "no `ETH: AMOUNT` line"),
            ("", "starts with nothing"),
            ("Token balances\nETH: 1\n", "line 1 \"Token balances\""),
        ] {
            let e = parse_balance(output).expect_err(output).to_string();
            assert!(e.contains(needle), "{output:?}: {e}");
        }
        let key = format!("key {}", "ab".repeat(32));
        let e = parse_balance(&key).expect_err("key").to_string();
        assert!(!e.contains(&"ab".repeat(32)), "{e}");
        assert!(e.contains("<redacted>"), "{e}");
    }

    /// Found with the intmax_cli fuzz target's check: 400 digits parsed as +Inf ETH.
    #[test]
    fn an_amount_too_large_for_f64_is_refused() {
        let output = format!("ETH: {}\n", "9".repeat(400));
        let e = parse_balance(&output).expect_err("infinite").to_string();
        assert!(e.contains("not a plain decimal"), "{e}");
    }

    /// Found by fuzzing (exporters/fuzz, intmax_cli): 63 hex digits after a NUL were
    /// quoted as `\0` followed by them, a run of 64 that looks like a key.
    #[test]
    fn a_quoted_nul_does_not_complete_a_key() {
        let output = format!("ETH: 1.x\0{}\n", "3".repeat(63));
        let e = parse_balance(&output)
            .expect_err("not a decimal")
            .to_string();
        assert!(!looks_like_key(&e), "{e}");
    }

    fn eth(text: &str) -> Result<EthSource, ConfigError> {
        let file: EthFile = toml::from_str(text).expect("toml");
        EthSource::resolve(0, &file)
    }

    #[test]
    fn settings_are_checked() {
        let ok = eth("local_command = [\"/bin/echo\", \"ETH: 1\"]").expect("local");
        assert_eq!(ok.timeout, Duration::from_secs(120));
        for (text, needle) in [
            ("timeout_seconds = 5", "exactly one"),
            ("local_command = []", "local_command"),
            (
                &format!(
                    "local_command = [\"cli\", \"--private-key\", \"0x{}\"]",
                    "1f".repeat(32)
                ),
                "looks like a private key",
            ),
            (
                "[ssh]\nhost = \"-oProxyCommand=x\"\nuser = \"u\"\nidentity_file = \"i\"\nknown_hosts = \"k\"\ncommand = \"c\"",
                "nodes[0].eth.ssh.host",
            ),
            (
                &format!(
                    "[ssh]\nhost = \"h\"\nuser = \"u\"\nidentity_file = \"i\"\nknown_hosts = \"k\"\ncommand = \"cli balance --private-key {}\"",
                    "a".repeat(64)
                ),
                "nodes[0].eth.ssh.command",
            ),
            (
                &format!(
                    "[ssh]\nhost = \"h\"\nuser = \"u\"\nidentity_file = \"i\"\nknown_hosts = \"/etc/kh{}\"\ncommand = \"c\"",
                    "B".repeat(64)
                ),
                "nodes[0].eth.ssh.known_hosts",
            ),
        ] {
            let e = eth(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn ssh_is_strict_and_batch() {
        let source = eth(
            "timeout_seconds = 30\n[ssh]\nhost = \"pi-1.lan\"\nport = 2222\nuser = \"intmax\"\nidentity_file = \"id\"\nknown_hosts = \"kh\"\ncommand = \"intmax-balance\"\n",
        )
        .expect("ssh");
        let argv = source.argv("ssh");
        let joined = argv.join(" ");
        for needle in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=kh",
            "ConnectTimeout=10",
            "-i id",
            "-p 2222",
            "-l intmax",
        ] {
            assert!(joined.contains(needle), "{needle}: {joined}");
        }
        assert_eq!(
            &argv[argv.len() - 3..],
            ["--", "pi-1.lan", "intmax-balance"]
        );
    }

    #[test]
    fn runs_time_out_and_fail_cleanly() {
        let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".into(), script.into()];
        assert_eq!(
            run(&sh("echo 'ETH: 1'"), Duration::from_secs(5), &|_| {}),
            Ok("ETH: 1\n".into())
        );
        let started = Instant::now();
        // The shell's child (sleep) holds the pipe: the whole group is killed.
        assert_eq!(
            run(
                &sh("sleep 30; echo late"),
                Duration::from_millis(300),
                &|_| {}
            ),
            Err(CliError::Timeout(Duration::from_millis(300)))
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = run(
            &sh("echo nope >&2; exit 3"),
            Duration::from_secs(5),
            &|_| {},
        )
        .expect_err("exit 3");
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(e.kind(), "exit");
        let e = run(
            &["/nonexistent/cli".to_string()],
            Duration::from_secs(1),
            &|_| {},
        )
        .expect_err("spawn");
        assert_eq!(e.kind(), "spawn");
    }
}
