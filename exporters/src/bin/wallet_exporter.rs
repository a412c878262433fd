//! `nodewatch-wallet-exporter`: ETH, sITX and ERC-20 balances of wallets on Scroll, for
//! Prometheus, on :9101. Settings: `--config FILE` (TOML) and the wiki exporter's
//! environment variables (see docs/wallet-exporter.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nodewatch_exporters::config::Config;
use nodewatch_exporters::rpc::redact;
use nodewatch_exporters::server;
use nodewatch_exporters::wallet::WalletState;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Scroll wallet balances (ETH, sITX, ERC-20) for Prometheus"
)]
struct Args {
    /// TOML settings (see config/wallet-exporter.toml); the wiki's environment
    /// variables override it.
    #[arg(long, env = "NODEWATCH_WALLET_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, e.g. `:9101` or `127.0.0.1:9101`; overrides `PORT` and the file.
    #[arg(long = "web.listen-address")]
    listen_address: Option<String>,
    /// Check the settings, print them and exit.
    #[arg(long)]
    check_config: bool,
    /// Log format: logfmt (text, the default) or json (one object per line).
    #[arg(long = "log.format", value_name = "FORMAT", default_value = "logfmt")]
    log_format: nodewatch_http::logging::LogFormat,
    /// `--web.config.file` (TLS, basic auth) and the connection limits.
    #[command(flatten)]
    web: nodewatch_http::WebFlags,
}

const PROGRAM: &str = "nodewatch-wallet-exporter";

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return server::usage_error(&e),
    };
    nodewatch_http::logging::init(tracing::Level::INFO, args.log_format);
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config = match Config::load(args.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => return server::config_error(PROGRAM, &e),
    };
    if let Some(listen) = args.listen_address {
        config.listen_address = listen;
    }
    if let Some(path) = &args.web.web_config_file
        && let Err(e) = nodewatch_http::web_config::load(path)
    {
        return server::config_error(PROGRAM, &format!("invalid web config: {e}"));
    }
    if args.check_config {
        println!(
            "ok: {} wallets, {} tokens, chain {}, every {:?}, endpoints {:?}",
            config.wallets.len(),
            config.tokens.len(),
            config.rpc.chain_id,
            config.rpc.interval,
            config
                .rpc
                .urls
                .iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
        );
        return ExitCode::SUCCESS;
    }
    tracing::info!(
        wallets = config.wallets.len(),
        tokens = config.tokens.len(),
        chain_id = config.rpc.chain_id,
        "settings loaded"
    );
    let listen_address = config.listen_address.clone();
    server::exit_status(
        PROGRAM,
        server::serve_main(
            &listen_address,
            &args.web,
            WalletState::new(config),
            "nodewatch wallet exporter",
        ),
    )
}
