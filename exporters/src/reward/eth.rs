//! The ETH source's loops: one thread per node with `[nodes.eth]`, each running the
//! INTMAX CLI ([`crate::intmax_cli`]) then waiting `eth_interval`, so runs of a node
//! never overlap and a slow node never holds up another.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{RewardState, lock};
use crate::intmax_cli;
use crate::unix_now;

impl RewardState {
    /// One run of node `node`'s ETH source (blocking). Returns at once if a run of that
    /// node is in flight.
    pub fn run_eth(state: &Mutex<RewardState>, node: usize) {
        let (argv, timeout, name) = {
            let mut s = lock(state);
            let Some(source) = s.config.nodes.get(node).and_then(|n| n.eth.clone()) else {
                return;
            };
            if s.eth[node].in_flight {
                return;
            }
            s.eth[node].in_flight = true;
            (
                source.argv(&s.config.ssh_program),
                source.timeout,
                s.config.nodes[node].name.clone(),
            )
        };
        let started = Instant::now();
        let result = intmax_cli::run(&argv, timeout, &|pgid| lock(state).eth[node].running = pgid)
            .and_then(|output| intmax_cli::parse_balance(&output));
        let mut s = lock(state);
        let eth = &mut s.eth[node];
        eth.in_flight = false;
        eth.running = None;
        eth.runs += 1;
        eth.last_duration = Some(started.elapsed().as_secs_f64());
        match result {
            Ok(balances) => {
                eth.value = Some(balances.eth);
                eth.read_at = Some(unix_now());
                eth.last_ok = Some(true);
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "ETH reward read (INTMAX CLI) failed");
                *eth.errors.entry(e.kind()).or_insert(0) += 1;
                eth.last_ok = Some(false);
                eth.last_error = Some(format!("node {name}: {e}"));
            }
        }
    }

    /// Starts one thread per node with an ETH source: a run, then `eth_interval`, until
    /// the returned guard is dropped.
    pub fn start_eth_loops(state: &Arc<Mutex<RewardState>>) -> StopOnDrop {
        let stop = StopOnDrop::default();
        let (nodes, interval) = {
            let s = lock(state);
            (
                s.config
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.eth.is_some())
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>(),
                s.config.eth_interval,
            )
        };
        for node in nodes {
            let (state, signal) = (state.clone(), stop.signal.clone());
            // A node's loop runs its runs one after another: they never overlap.
            let spawned = std::thread::Builder::new()
                .name(format!("eth-{node}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    loop {
                        RewardState::run_eth(&state, node);
                        let (stopped, wake) = &*signal;
                        let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                        let (guard, _) = wake
                            .wait_timeout_while(guard, interval, |stopped| !*stopped)
                            .unwrap_or_else(|e| e.into_inner());
                        if *guard {
                            return;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(node, error = %e, "cannot start the ETH source's thread");
            }
        }
        stop
    }

    /// Kills the runs in flight (shutdown).
    pub fn kill_runs(&self) {
        for eth in &self.eth {
            if let Some(pgid) = eth.running {
                intmax_cli::kill_group(pgid);
            }
        }
    }
}

/// Stops the ETH loops when dropped (they finish the run in flight, if any, first;
/// [`RewardState::kill_runs`] ends it at once).
#[derive(Debug, Default)]
pub struct StopOnDrop {
    signal: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.signal;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
    }
}
