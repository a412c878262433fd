//! The `nodewatch-agent` binary: parse flags, load config, run.
//!
//! Exit status: 0 after a clean shutdown; 78 (`EX_CONFIG`) for invalid flags or
//! configuration; 98 when the listen address is taken; 1 for other failures. Units set
//! `RestartPreventExitStatus=78 98`, so these two do not restart in a loop.

use std::path::Path;
use std::process::ExitCode;

use nodewatch_agent::alerts::{Severity, test_alert};
use nodewatch_agent::cli::{Cli, Command, LoraCommand, RulesCommand};
use nodewatch_agent::config::Config;
use nodewatch_agent::daemon;
use nodewatch_agent::outputs::oled;
use nodewatch_http::systemd::EXIT_CONFIG;

fn main() -> ExitCode {
    let cli = match Cli::try_from_args(std::env::args()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print to stdout and succeed.
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => return fail_with(EXIT_CONFIG, &e.to_string()),
        },
        None => Config::default(),
    };
    let warnings = cli.apply(&mut config);
    let origin = cli.config.clone().unwrap_or_else(|| "<flags>".into());
    if let Err(e) = config.validate(Path::new(&origin)) {
        return fail_with(EXIT_CONFIG, &e.to_string());
    }
    // A bad web config stops the start (and fails check-config) before anything runs.
    if let Some(path) = &config.web.server.web_config_file
        && let Err(e) = nodewatch_http::web_config::load(path)
    {
        return fail_with(EXIT_CONFIG, &format!("invalid web config: {e}"));
    }
    init_logging(&config.log.level, cli.log_format);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    match cli.command {
        Some(Command::CheckConfig) => {
            println!("{}: configuration is valid", origin.display());
            ExitCode::SUCCESS
        }
        Some(Command::Render {
            page,
            size,
            state,
            out,
            scale,
        }) => {
            let size = size.unwrap_or_else(|| config.display.size.clone());
            let Some(size) = nodewatch_display::PanelSize::parse(&size) else {
                return fail(&format!("--size must be 128x64 or 128x32, found {size:?}"));
            };
            match oled::render_to_file(&page, size, state.as_deref(), &out, scale) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Some(Command::BenchDisplay { iterations }) => {
            print!("{}", oled::bench::report(iterations));
            ExitCode::SUCCESS
        }
        Some(Command::Rules(RulesCommand::Export { out })) => {
            let rules = match nodewatch_agent::alerts::effective_rules(&config.alerts) {
                Ok(r) => r,
                Err(e) => return fail(&e.to_string()),
            };
            let text = nodewatch_agent::alerts::export::rule_file(&rules);
            match out {
                Some(path) => match std::fs::write(&path, text) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&format!("{}: cannot write: {e}", path.display())),
                },
                None => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
            }
        }
        Some(Command::Lora(LoraCommand::DeriveKey { master, node, out })) => {
            match nodewatch_agent::outputs::lora_link::derive_key_file(&master, &node, &out) {
                Ok(said) => {
                    print!("{said}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Some(Command::TestAlert {
            severity,
            duration_secs,
        }) => {
            let severity = match severity.as_str() {
                "warning" => Severity::Warning,
                "info" => Severity::Info,
                _ => Severity::Critical,
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            match runtime.block_on(test_alert::request(
                &config.web.listen_address,
                severity,
                duration_secs,
            )) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        None => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    // One thread serves HTTP and schedules; collections run on the blocking pool, which
    // stays small because runs go one after another on one thread. The cap bounds the
    // threads that collectors stuck in a system call can hold.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let listener = daemon::bind(&config)
            .await
            .map_err(|e| (e.exit_code(), e.to_string()))?;
        daemon::run(config, listener, daemon::shutdown_signal())
            .await
            .map_err(|e| (1, format!("{e:#}")))
    });
    // Collectors stuck in a system call must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => fail_with(code, &message),
    }
}

fn init_logging(level: &str, format: nodewatch_http::logging::LogFormat) {
    let level = match level {
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    nodewatch_http::logging::init(level, format);
}

fn fail(message: &str) -> ExitCode {
    fail_with(1, message)
}

fn fail_with(code: u8, message: &str) -> ExitCode {
    eprintln!("nodewatch-agent: error: {message}");
    ExitCode::from(code)
}
