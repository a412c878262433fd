//! Wallet and reward figures for the display, read from the Scroll exporters'
//! `/metrics` URLs listed in `display.wallet_urls` (design §4; display only).
//!
//! Families (design §3): `intmax_wallet_eth{address}` and `intmax_wallet_sitx{address}`
//! (summed over the addresses in `display.wallet_addresses`, or over all when that is
//! empty), `intmax_builder_reward_eth{node}` and `intmax_builder_reward_sitx{node}`
//! (this node's series, or the only one). A source that is missing or unreachable
//! leaves its figures unknown, never 0; one that fails after a success keeps its last
//! figures, marked stale. Plain HTTP (the agent links no TLS); the text is parsed by
//! the textfile collector's parser.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nodewatch_display::Wallet;
use tokio::sync::watch;

use super::DisplayConfig;
use crate::collectors::textfile::parser::{self, Family, Value};
use crate::http_client::{HttpUrl, parse_http_url};

/// Largest `/metrics` body read from an exporter.
const MAX_RESPONSE: usize = 1 << 20;

/// The figures read so far, shared with the view builder.
#[derive(Debug, Clone, Default)]
pub struct WalletState {
    /// The figures (unknown ones `None`).
    pub wallet: Wallet,
    /// When every URL last answered.
    pub last_success: Option<SystemTime>,
    /// Whether the last round had a failing URL (figures are last known values).
    pub stale: bool,
    /// The last error, for logs.
    pub last_error: Option<String>,
}

/// Which series count for this node.
#[derive(Debug, Clone, Default)]
pub struct WalletFilter {
    /// The node's name, for the reward families' `node` label.
    pub node: String,
    /// Addresses to sum (lower-cased); empty = all.
    pub addresses: Vec<String>,
}

fn simple(value: &Value) -> Option<f64> {
    match value {
        Value::Simple(v) if v.is_finite() => Some(*v),
        _ => None,
    }
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Figures from parsed exporter families: a family absent gives `None`.
pub fn wallet_from_families(families: &[Family], filter: &WalletFilter) -> Wallet {
    let find = |name: &str| families.iter().find(|f| f.name == name);
    let sum_addresses = |name: &str| -> Option<f64> {
        let family = find(name)?;
        let values: Vec<f64> = family
            .metrics
            .iter()
            .filter(|m| {
                filter.addresses.is_empty()
                    || label(&m.labels, "address")
                        .is_some_and(|a| filter.addresses.contains(&a.to_ascii_lowercase()))
            })
            .filter_map(|m| simple(&m.value))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let for_node = |name: &str| -> Option<f64> {
        let family = find(name)?;
        let mine = family
            .metrics
            .iter()
            .find(|m| label(&m.labels, "node") == Some(filter.node.as_str()));
        let only = (family.metrics.len() == 1).then(|| &family.metrics[0]);
        simple(&mine.or(only)?.value)
    };
    Wallet {
        eth: sum_addresses("intmax_wallet_eth"),
        sitx: sum_addresses("intmax_wallet_sitx"),
        reward_eth: for_node("intmax_builder_reward_eth"),
        reward_sitx: for_node("intmax_builder_reward_sitx"),
    }
}

/// Fills the figures `from` knows into `into` (several exporters, one figure each).
fn merge(into: &mut Wallet, from: Wallet) {
    into.eth = from.eth.or(into.eth);
    into.sitx = from.sitx.or(into.sitx);
    into.reward_eth = from.reward_eth.or(into.reward_eth);
    into.reward_sitx = from.reward_sitx.or(into.reward_sitx);
}

/// GETs a `/metrics` text body.
pub async fn fetch(url: &HttpUrl, timeout: Duration) -> Result<String, String> {
    let get = async {
        let (status, body) = crate::http_client::get(url, "text/plain", MAX_RESPONSE).await?;
        if status != 200 {
            return Err(format!("HTTP status {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".to_string())
    };
    match tokio::time::timeout(timeout, get).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:.1}s", timeout.as_secs_f64())),
    }
}

/// One round over every URL; updates `state`.
pub async fn poll_once(
    urls: &[(String, HttpUrl)],
    filter: &WalletFilter,
    timeout: Duration,
    state: &Mutex<WalletState>,
) {
    let mut wallet = Wallet::default();
    let mut error = None;
    for (text_url, url) in urls {
        let result = fetch(url, timeout).await.and_then(|text| {
            parser::parse(&text).map_err(|e| format!("cannot parse the answer: {e}"))
        });
        match result {
            Ok(parsed) => merge(&mut wallet, wallet_from_families(&parsed.families, filter)),
            Err(e) => error = Some(format!("{text_url}: {e}")),
        }
    }
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    match error {
        None => {
            state.wallet = wallet;
            state.last_success = Some(SystemTime::now());
            state.stale = false;
        }
        Some(e) => {
            if state.last_error.as_deref() != Some(e.as_str()) {
                tracing::warn!(error = %e, "Cannot read wallet figures for the display.");
            }
            // Keep the last figures, marked stale; add what did answer.
            merge(&mut state.wallet, wallet);
            state.stale = state.last_success.is_some();
            state.last_error = Some(e);
        }
    }
}

/// Parses the configured URLs (validation uses it too).
pub fn parse_urls(urls: &[String]) -> Result<Vec<(String, HttpUrl)>, String> {
    urls.iter()
        .map(|u| {
            parse_http_url(u)
                .map(|parsed| (u.clone(), parsed))
                .map_err(|e| format!("display.wallet_urls: {e}"))
        })
        .collect()
}

/// Starts polling when URLs are configured; returns the shared state.
pub fn spawn(
    display: &DisplayConfig,
    node_name: &str,
    stop: watch::Receiver<bool>,
) -> Option<Arc<Mutex<WalletState>>> {
    if display.wallet_urls.is_empty() {
        return None;
    }
    let urls = match parse_urls(&display.wallet_urls) {
        Ok(urls) => urls,
        Err(e) => {
            tracing::warn!(error = %e, "Wallet figures off.");
            return None;
        }
    };
    let filter = WalletFilter {
        node: node_name.to_string(),
        addresses: display
            .wallet_addresses
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
    };
    let interval = Duration::from_secs_f64(display.wallet_interval_secs);
    let timeout = interval.min(Duration::from_secs(10));
    let state = Arc::new(Mutex::new(WalletState::default()));
    let shared = state.clone();
    let mut stop = stop;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            poll_once(&urls, &filter, timeout, &shared).await;
        }
    });
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALLET: &str = "\
# HELP intmax_wallet_eth ETH balance.
# TYPE intmax_wallet_eth gauge
intmax_wallet_eth{address=\"0xAAA\",name=\"pi-01\"} 0.0125
intmax_wallet_eth{address=\"0xbbb\"} 1.5
# TYPE intmax_wallet_sitx gauge
intmax_wallet_sitx{address=\"0xaaa\"} 100
intmax_wallet_sitx{address=\"0xbbb\"} 20
";
    const REWARDS: &str = "\
# TYPE intmax_builder_reward_eth gauge
intmax_builder_reward_eth{node=\"pi-01\"} 0.004
intmax_builder_reward_eth{node=\"pi-02\"} 0.009
# TYPE intmax_builder_reward_check_success gauge
intmax_builder_reward_check_success{node=\"pi-01\"} 1
";

    fn families(text: &str) -> Vec<Family> {
        parser::parse(text).expect("parse").families
    }

    #[test]
    fn sums_selected_addresses_and_picks_this_nodes_rewards() {
        let filter = WalletFilter {
            node: "pi-01".into(),
            addresses: vec!["0xaaa".into()],
        };
        let w = wallet_from_families(&families(WALLET), &filter);
        assert_eq!((w.eth, w.sitx), (Some(0.0125), Some(100.0)));
        let all = wallet_from_families(&families(WALLET), &WalletFilter::default());
        assert_eq!(all.eth, Some(1.5125));
        let r = wallet_from_families(&families(REWARDS), &filter);
        assert_eq!(r.reward_eth, Some(0.004));
        // Absent families are unknown, not 0.
        assert_eq!((r.reward_sitx, r.eth), (None, None));
        let other = WalletFilter {
            node: "pi-09".into(),
            ..WalletFilter::default()
        };
        assert_eq!(
            wallet_from_families(&families(REWARDS), &other).reward_eth,
            None
        );
    }

    async fn serve(body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let router =
            axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}/metrics")
    }

    #[tokio::test]
    async fn reads_exporters_and_keeps_last_figures_when_one_fails() {
        let wallet_url = serve(WALLET).await;
        let rewards_url = serve(REWARDS).await;
        let filter = WalletFilter {
            node: "pi-01".into(),
            addresses: Vec::new(),
        };
        let urls = parse_urls(&[wallet_url, rewards_url]).expect("urls");
        let state = Mutex::new(WalletState::default());
        poll_once(&urls, &filter, Duration::from_secs(2), &state).await;
        let s = state.lock().expect("lock").clone();
        assert_eq!(s.wallet.eth, Some(1.5125));
        assert_eq!(s.wallet.reward_eth, Some(0.004));
        assert!(!s.stale);
        // The rewards exporter goes away: last figures stay, marked stale.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead = format!("http://{}/metrics", closed.local_addr().expect("addr"));
        drop(closed);
        let urls = parse_urls(&[urls[0].0.clone(), dead]).expect("urls");
        poll_once(&urls, &filter, Duration::from_secs(2), &state).await;
        let s = state.lock().expect("lock").clone();
        assert!(s.stale);
        assert_eq!(s.wallet.reward_eth, Some(0.004));
        assert!(s.last_error.expect("error").contains("cannot connect"));
    }

    #[tokio::test]
    async fn unreachable_from_the_start_is_unknown_not_stale() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead = format!("http://{}/metrics", closed.local_addr().expect("addr"));
        drop(closed);
        let urls = parse_urls(&[dead]).expect("urls");
        let state = Mutex::new(WalletState::default());
        poll_once(
            &urls,
            &WalletFilter::default(),
            Duration::from_secs(1),
            &state,
        )
        .await;
        let s = state.lock().expect("lock").clone();
        assert_eq!(s.wallet, Wallet::default());
        assert!(!s.stale);
        assert!(parse_urls(&["https://x/metrics".into()]).is_err());
    }
}
