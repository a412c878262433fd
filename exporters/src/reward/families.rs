//! The families the reward exporter serves. A value is served only after a successful
//! read: never a 0 for unknown.

use nodewatch_http::MetricSink;
use prometheus::proto::MetricFamily;

use super::RewardState;
use crate::unix_now;

impl RewardState {
    /// The families to serve, in the order written: the wiki's, then each source's
    /// success, the ETH runs, the on-chain refresh, the claims.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = MetricSink::new();
        self.reward_families(&mut out);
        self.source_families(&mut out);
        self.eth_run_families(&mut out, unix_now());
        self.refresh_families(&mut out);
        self.claim_families(&mut out);
        out.into_families_as_written()
    }

    /// The nodes with an ETH source.
    fn eth_nodes(&self) -> Vec<usize> {
        (0..self.config.nodes.len())
            .filter(|n| self.config.nodes[*n].eth.is_some())
            .collect()
    }

    /// How many of `eth_nodes` have no value yet.
    fn eth_nodes_missing(&self, eth_nodes: &[usize]) -> usize {
        eth_nodes
            .iter()
            .filter(|n| self.eth[**n].value.is_none())
            .count()
    }

    /// The wiki's `intmax_builder_reward_*`.
    fn reward_families(&self, out: &mut MetricSink) {
        for (n, node) in self.config.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if let Some(v) = self.eth[n].value {
                out.gauge(
                    "intmax_builder_reward_eth",
                    "ETH fee reward of the builder (INTMAX L2 balance read by the INTMAX CLI), in ETH; the last good read.",
                    &[("node", name)],
                    v,
                );
            }
        }
        for (n, node) in self.config.nodes.iter().enumerate() {
            if let Some(v) = self.sitx[n] {
                out.gauge(
                    "intmax_builder_reward_sitx",
                    "Claimable sITX builder reward, summed over finished periods, in sITX.",
                    &[("node", &node.name)],
                    v,
                );
            }
        }
        // The total only when every node with an ETH source has a value: a sum with a
        // node missing would be a made-up number.
        let eth_nodes = self.eth_nodes();
        let missing = self.eth_nodes_missing(&eth_nodes);
        if !eth_nodes.is_empty() && missing == 0 {
            out.gauge(
                "intmax_builder_reward_total_eth",
                "Sum of intmax_builder_reward_eth over every node with an ETH source; absent while one has no value yet.",
                &[],
                eth_nodes.iter().filter_map(|n| self.eth[*n].value).sum(),
            );
        }
        for n in 0..self.config.nodes.len() {
            if let Some(ok) = self.node_success(n) {
                out.gauge(
                    "intmax_builder_reward_check_success",
                    "1 if the node's last checks all succeeded (on-chain sITX and, if configured, the ETH source), 0 otherwise.",
                    &[("node", &self.config.nodes[n].name)],
                    if ok { 1.0 } else { 0.0 },
                );
            }
        }
        if let Some(t) = self.last_check {
            out.gauge(
                "intmax_builder_reward_last_check",
                "Unix time of the last reward check that read every period of every node.",
                &[],
                t.floor(),
            );
        }
    }

    /// `nodewatch_reward_source_success` and `nodewatch_reward_eth_nodes_missing`.
    fn source_families(&self, out: &mut MetricSink) {
        for (n, node) in self.config.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if let Some(ok) = self.node_ok[n] {
                out.gauge(
                    "nodewatch_reward_source_success",
                    "1 if the node's last read from this source succeeded (chain: on-chain sITX; cli: the INTMAX CLI's ETH).",
                    &[("node", name), ("source", "chain")],
                    if ok { 1.0 } else { 0.0 },
                );
            }
            if node.eth.is_some()
                && let Some(ok) = self.eth[n].last_ok
            {
                out.gauge(
                    "nodewatch_reward_source_success",
                    "1 if the node's last read from this source succeeded (chain: on-chain sITX; cli: the INTMAX CLI's ETH).",
                    &[("node", name), ("source", "cli")],
                    if ok { 1.0 } else { 0.0 },
                );
            }
        }
        let eth_nodes = self.eth_nodes();
        if !eth_nodes.is_empty() {
            out.gauge(
                "nodewatch_reward_eth_nodes_missing",
                "Nodes with an ETH source that has never been read successfully.",
                &[],
                self.eth_nodes_missing(&eth_nodes) as f64,
            );
        }
    }

    /// Per node with an ETH source: staleness, data age, runs and errors.
    fn eth_run_families(&self, out: &mut MetricSink, now: f64) {
        for n in &self.eth_nodes() {
            let (name, eth) = (self.config.nodes[*n].name.as_str(), &self.eth[*n]);
            if let (Some(_), Some(at)) = (eth.value, eth.read_at) {
                out.gauge(
                    "nodewatch_reward_eth_stale",
                    "1 if the node's last ETH run failed and the value served is an older one.",
                    &[("node", name)],
                    if eth.last_ok == Some(false) { 1.0 } else { 0.0 },
                );
                out.gauge(
                    "nodewatch_reward_eth_data_age_seconds",
                    "Seconds since the node's ETH value served was read.",
                    &[("node", name)],
                    (now - at).max(0.0),
                );
            }
            out.counter(
                "nodewatch_reward_eth_runs_total",
                "Runs of the node's ETH source (the INTMAX CLI), successful or not.",
                &[("node", name)],
                eth.runs as f64,
            );
            for (kind, count) in &eth.errors {
                out.counter(
                    "nodewatch_reward_eth_errors_total",
                    "Failed runs of the node's ETH source, by kind (spawn, timeout, exit, format).",
                    &[("node", name), ("kind", kind)],
                    *count as f64,
                );
            }
        }
    }

    /// The on-chain refresh: periods counted, errors, requests.
    fn refresh_families(&self, out: &mut MetricSink) {
        if let Some(p) = self.periods_counted {
            out.gauge(
                "nodewatch_reward_periods_counted",
                "Finished periods summed in the last check.",
                &[],
                p as f64,
            );
        }
        for (kind, n) in &self.errors {
            out.counter(
                "nodewatch_reward_errors_total",
                "Failed JSON-RPC requests and failed reads, by kind.",
                &[("kind", kind)],
                *n as f64,
            );
        }
        out.counter(
            "nodewatch_reward_rpc_requests_total",
            "JSON-RPC HTTP requests sent by the on-chain refresh (claims not included).",
            &[],
            self.requests as f64,
        );
    }

    /// Per node with `[nodes.claim]`: the auto-claim's counts and state.
    fn claim_families(&self, out: &mut MetricSink) {
        for (n, node) in self.config.nodes.iter().enumerate() {
            let Some(settings) = &node.claim else {
                continue;
            };
            let (name, c) = (node.name.as_str(), &self.claims[n]);
            out.gauge(
                "nodewatch_reward_claim_dry_run",
                "1 if auto-claim of the node is a dry run (logs, sends nothing), 0 if it sends.",
                &[("node", name)],
                if settings.dry_run { 1.0 } else { 0.0 },
            );
            out.counter(
                "nodewatch_reward_claim_dry_runs_total",
                "Claims prepared and logged but not sent (dry run).",
                &[("node", name)],
                c.dry_runs as f64,
            );
            out.counter(
                "nodewatch_reward_claims_sent_total",
                "batchClaimReward transactions sent.",
                &[("node", name)],
                c.sent as f64,
            );
            out.counter(
                "nodewatch_reward_claims_confirmed_total",
                "batchClaimReward transactions mined successfully.",
                &[("node", name)],
                c.confirmed as f64,
            );
            out.counter(
                "nodewatch_reward_claimed_sitx_total",
                "sITX claimed by mined batchClaimReward transactions, in sITX.",
                &[("node", name)],
                c.claimed_sitx,
            );
            for (stage, count) in &c.failures {
                out.counter(
                    "nodewatch_reward_claim_failures_total",
                    "Failed claims by stage (prepare, sign, state, send, reverted, dropped).",
                    &[("node", name), ("stage", stage)],
                    *count as f64,
                );
            }
            for (reason, count) in &c.refused {
                out.counter(
                    "nodewatch_reward_claim_refused_total",
                    "Claims not sent because the fee per gas or the total cost was over its ceiling.",
                    &[("node", name), ("reason", reason)],
                    *count as f64,
                );
            }
            out.counter(
                "nodewatch_reward_claim_replacements_total",
                "Stuck claims replaced at the same nonce with higher fees.",
                &[("node", name)],
                c.replacements as f64,
            );
            out.gauge(
                "nodewatch_reward_claim_pending",
                "1 while a signed claim waits to be mined (kept in the state dir).",
                &[("node", name)],
                if c.pending { 1.0 } else { 0.0 },
            );
        }
    }
}
