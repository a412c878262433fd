//! `nodewatch-reward-exporter`: INTMAX builder rewards for Prometheus, on :9102. Reads
//! the claimable sITX of each builder from the BlockBuilderReward contract (no secret
//! needed), summed over the finished periods; the ETH fee rewards with the INTMAX CLI,
//! locally or over SSH (the spend key stays on the node); and, if configured, claims
//! the sITX when it reaches a threshold (a dry run unless enabled). Settings:
//! `--config FILE` (TOML, see config/reward-exporter.toml).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nodewatch_exporters::reward::{RewardConfig, RewardState};
use nodewatch_exporters::server;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "INTMAX builder rewards (claimable sITX, ETH fee rewards) for Prometheus"
)]
struct Args {
    /// TOML settings (see config/reward-exporter.toml).
    #[arg(long, env = "NODEWATCH_REWARD_CONFIG")]
    config: PathBuf,
    /// Listen address, e.g. `:9102`; overrides the file.
    #[arg(long = "web.listen-address")]
    listen_address: Option<String>,
    /// Log format: logfmt (text, the default) or json (one object per line).
    #[arg(long = "log.format", value_name = "FORMAT", default_value = "logfmt")]
    log_format: nodewatch_http::logging::LogFormat,
    /// `--web.config.file` (TLS, basic auth) and the connection limits.
    #[command(flatten)]
    web: nodewatch_http::WebFlags,
}

const PROGRAM: &str = "nodewatch-reward-exporter";

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return server::usage_error(&e),
    };
    nodewatch_http::logging::init(tracing::Level::INFO, args.log_format);
    let mut config = match RewardConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return server::config_error(PROGRAM, &e),
    };
    if let Some(listen) = args.listen_address {
        config.listen_address = listen;
    }
    tracing::info!(
        nodes = config.nodes.len(),
        eth_sources = config.nodes.iter().filter(|n| n.eth.is_some()).count(),
        claims = config.nodes.iter().filter(|n| n.claim.is_some()).count(),
        "settings loaded"
    );
    let listen_address = config.listen_address.clone();
    server::exit_status(
        PROGRAM,
        server::serve_main(
            &listen_address,
            &args.web,
            RewardState::new(config),
            "nodewatch reward exporter",
        ),
    )
}
