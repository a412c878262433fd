//! Docker collector: the state of every container (or those selected by name pattern
//! and labels) and, on a Swarm manager, each service's desired versus running tasks.
//!
//! The engine is watched by a [`watch::DockerWatch`] task over the Unix socket
//! (`docker.socket`), driven by events with a periodic reconcile; this collector only
//! renders its view, so it is cheap and never waits on Docker. It runs on each change
//! of that view ([`Cadence::Watch`](super::Cadence::Watch)), so a stop reaches
//! `/metrics` as soon as Docker reports it.
//!
//! Families: `nodewatch_container_info{id,image,name}`,
//! `nodewatch_container_running{name}`, `nodewatch_container_state{name,state}`,
//! `nodewatch_container_health_status{name,status}`,
//! `nodewatch_container_restart_count{name}`,
//! `nodewatch_container_observed_starts_total{name}`,
//! `nodewatch_container_start_time_seconds{name}`,
//! `nodewatch_container_last_exit_code{name}`,
//! `nodewatch_swarm_service_desired_tasks{mode,service}`,
//! `nodewatch_swarm_service_running_tasks{service}`.
//!
//! While the engine is unreachable the collector fails (success 0, its samples leave
//! `/metrics`); an absent socket is "no data" (Docker not installed or not started).

pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex_lite::Regex;
use serde::Deserialize;

use super::{BuildError, Cadence, CollectError, Collector, CollectorSpec, compile_regex};
use crate::metrics::MetricSink;
use watch::{Connection, ContainerInfo, DockerView, DockerWatch};

/// The Docker engine, watched by events over its Unix socket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The engine's Unix socket (no TCP, no TLS). Default `/var/run/docker.sock`.
    /// Access to it is root-equivalent: see docs/builder.md, "Permissions".
    pub socket: PathBuf,
    /// Report only containers whose name (without `/`) matches this regular
    /// expression (unanchored). Default empty: every container.
    pub container_pattern: String,
    /// Report only containers that carry every one of these labels, each `key` or
    /// `key=value`. Default: none required.
    pub labels: Vec<String>,
    /// Full re-list of containers (and Swarm services) every this many seconds, in
    /// case an event was missed; changes arrive by events at once. Default 30.
    pub reconcile_interval_secs: f64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: "/var/run/docker.sock".into(),
            container_pattern: String::new(),
            labels: Vec::new(),
            reconcile_interval_secs: 30.0,
        }
    }
}

/// The `docker` collector: the `[docker]` section.
pub const SPEC: CollectorSpec = CollectorSpec {
    cadence: Cadence::Watch,
    ..CollectorSpec::system("docker", |ctx| {
        let config: DockerConfig = ctx.section("docker", "docker")?;
        super::seconds(
            "docker",
            "docker.reconcile_interval_secs",
            config.reconcile_interval_secs,
        )?;
        Ok(Box::new(DockerCollector::new(&config)?))
    })
    .with_section("docker", &[])
};

/// Interval of the collector: every change of the view runs it at once besides.
const SAFETY_INTERVAL: Duration = Duration::from_secs(60);

/// The states Docker reports, each exported as one `nodewatch_container_state` series.
const STATES: &[&str] = &[
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];
/// Health states of a container with a health check.
const HEALTH_STATES: &[&str] = &["starting", "healthy", "unhealthy"];

/// Which containers the Docker collector reports.
#[derive(Debug, Clone)]
pub struct ContainerFilter {
    name: Option<Regex>,
    labels: Vec<(String, Option<String>)>,
}

impl ContainerFilter {
    /// From `docker.container_pattern` and `docker.labels`.
    pub fn new(config: &DockerConfig) -> Result<Self, BuildError> {
        let name = if config.container_pattern.is_empty() {
            None
        } else {
            Some(compile_regex(
                "docker",
                "docker.container_pattern",
                &config.container_pattern,
            )?)
        };
        let labels = config
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (l.clone(), None),
            })
            .collect();
        Ok(Self { name, labels })
    }

    /// Whether `container` is selected.
    pub fn matches(&self, container: &ContainerInfo) -> bool {
        self.name
            .as_ref()
            .is_none_or(|r| r.is_match(&container.name))
            && self.labels.iter().all(|(k, v)| match v {
                Some(v) => container.labels.get(k) == Some(v),
                None => container.labels.contains_key(k),
            })
    }
}

/// The Docker collector.
#[derive(Debug)]
pub struct DockerCollector {
    watch: Arc<DockerWatch>,
    filter: ContainerFilter,
}

impl DockerCollector {
    /// A collector of the engine on `config.socket`.
    pub fn new(config: &DockerConfig) -> Result<Self, BuildError> {
        Ok(Self {
            watch: DockerWatch::shared(
                &config.socket,
                Duration::from_secs_f64(config.reconcile_interval_secs),
            ),
            filter: ContainerFilter::new(config)?,
        })
    }

    /// The shared watch (the builder collector reads the same one).
    pub fn watch(&self) -> &Arc<DockerWatch> {
        &self.watch
    }
}

impl Collector for DockerCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        self.watch.ensure_started();
        self.watch
            .with_view(|view| render(view, &self.filter, self.watch.socket(), out))
    }

    fn changes(&self) -> Vec<super::ChangeSignal> {
        vec![self.watch.changes()]
    }

    /// The view changes only by what the watch signals: the interval is a safety net.
    fn interval(&self) -> Option<Duration> {
        Some(SAFETY_INTERVAL)
    }
}

/// Writes the families of `view`, or the error that stands for an unreachable engine.
pub fn render(
    view: &DockerView,
    filter: &ContainerFilter,
    socket: &std::path::Path,
    out: &mut MetricSink,
) -> Result<(), CollectError> {
    match &view.connection {
        Connection::Connecting => {
            return Err(CollectError::NoData(format!(
                "waiting for the Docker engine on {}",
                socket.display()
            )));
        }
        Connection::Down {
            message,
            socket_absent: true,
        } => return Err(CollectError::NoData(message.clone())),
        Connection::Down { message, .. } => return Err(CollectError::Other(message.clone())),
        Connection::Connected { .. } => {}
    }
    for c in view.containers.values().filter(|c| filter.matches(c)) {
        let name = [("name", c.name.as_str())];
        let short_id = c.id.get(..12).unwrap_or(&c.id);
        out.gauge(
            "nodewatch_container_info",
            "A metric with a constant '1' value labeled by the container's name, short ID and image.",
            &[("name", &c.name), ("id", short_id), ("image", &c.image)],
            1.0,
        );
        out.gauge(
            "nodewatch_container_running",
            "Whether the container is running (1) or not (0).",
            &name,
            if c.running { 1.0 } else { 0.0 },
        );
        for state in STATES {
            out.gauge(
                "nodewatch_container_state",
                "The container's state as Docker reports it: 1 for the current state, 0 for the others.",
                &[("name", &c.name), ("state", state)],
                if c.state == *state { 1.0 } else { 0.0 },
            );
        }
        if let Some(health) = &c.health {
            for status in HEALTH_STATES {
                out.gauge(
                    "nodewatch_container_health_status",
                    "The result of the container's Docker health check: 1 for the current status (containers with a health check only).",
                    &[("name", &c.name), ("status", status)],
                    if health == status { 1.0 } else { 0.0 },
                );
            }
        }
        out.gauge(
            "nodewatch_container_restart_count",
            "Docker's RestartCount: restarts by the restart policy since the container was created (manual restarts and re-creations do not count).",
            &name,
            c.restart_count as f64,
        );
        out.counter(
            "nodewatch_container_observed_starts_total",
            "Starts of a container with this name that the agent saw (Docker 'start' events) since the agent started.",
            &name,
            view.observed_starts.get(&c.name).copied().unwrap_or(0) as f64,
        );
        if let Some(started) = c.started_at {
            out.gauge(
                "nodewatch_container_start_time_seconds",
                "When the container last started, in unix seconds.",
                &name,
                started,
            );
        }
        out.gauge(
            "nodewatch_container_last_exit_code",
            "Exit code of the container's last run (137 after a kill, 0 while it has never exited).",
            &name,
            c.exit_code as f64,
        );
    }
    for service in view.services.iter().flatten() {
        out.gauge(
            "nodewatch_swarm_service_desired_tasks",
            "Tasks the Swarm service wants running (replicas, or one per eligible node for a global service).",
            &[("service", &service.name), ("mode", &service.mode)],
            service.desired_tasks as f64,
        );
        out.gauge(
            "nodewatch_swarm_service_running_tasks",
            "Tasks of the Swarm service in state running.",
            &[("service", &service.name)],
            service.running_tasks as f64,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::value_of;
    use std::collections::{BTreeMap, HashMap};
    use std::path::Path;
    use watch::ServiceInfo;

    fn container(name: &str, state: &str, labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: format!("{name:0<64}"),
            name: name.into(),
            image: "local/builder-stub".into(),
            state: state.into(),
            running: state == "running",
            health: None,
            restart_count: 1,
            started_at: Some(1000.5),
            exit_code: if state == "exited" { 137 } else { 0 },
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn view(containers: Vec<ContainerInfo>) -> DockerView {
        DockerView {
            connection: Connection::Connected {
                api_version: "1.41".into(),
            },
            containers: containers
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect::<BTreeMap<_, _>>(),
            services: None,
            observed_starts: HashMap::from([("web".to_string(), 3)]),
        }
    }

    fn text(view: &DockerView, config: &DockerConfig) -> Result<String, CollectError> {
        let filter = ContainerFilter::new(config).expect("filter");
        let mut sink = MetricSink::new();
        render(view, &filter, Path::new("/x.sock"), &mut sink)?;
        let mut body = Vec::new();
        nodewatch_http::encode_families(&sink.into_families(), &mut body).expect("encode");
        Ok(String::from_utf8(body).expect("utf8"))
    }

    #[test]
    fn renders_containers() {
        let mut web = container("web", "running", &[]);
        web.health = Some("healthy".into());
        let v = view(vec![web, container("db", "exited", &[])]);
        let t = text(&v, &DockerConfig::default()).expect("render");
        assert_eq!(
            value_of(&t, "nodewatch_container_running{name=\"web\"}"),
            1.0
        );
        assert_eq!(
            value_of(&t, "nodewatch_container_running{name=\"db\"}"),
            0.0
        );
        assert_eq!(
            value_of(
                &t,
                "nodewatch_container_state{name=\"db\",state=\"exited\"}"
            ),
            1.0
        );
        assert_eq!(
            value_of(
                &t,
                "nodewatch_container_state{name=\"db\",state=\"running\"}"
            ),
            0.0
        );
        assert_eq!(
            value_of(&t, "nodewatch_container_last_exit_code{name=\"db\"}"),
            137.0
        );
        assert_eq!(
            value_of(
                &t,
                "nodewatch_container_health_status{name=\"web\",status=\"healthy\"}"
            ),
            1.0
        );
        assert!(!t.contains("nodewatch_container_health_status{name=\"db\""));
        assert_eq!(
            value_of(
                &t,
                "nodewatch_container_observed_starts_total{name=\"web\"}"
            ),
            3.0
        );
        assert_eq!(
            value_of(&t, "nodewatch_container_start_time_seconds{name=\"web\"}"),
            1000.5
        );
        assert!(t.contains("nodewatch_container_info{id=\"web000000000\",image=\"local/builder-stub\",name=\"web\"} 1"), "{t}");
    }

    #[test]
    fn filters_by_name_and_label() {
        let v = view(vec![
            container("web", "running", &[("role", "builder")]),
            container("db", "running", &[("role", "db")]),
            container("cache", "running", &[]),
        ]);
        let config = DockerConfig {
            container_pattern: "^(web|db)$".into(),
            labels: vec!["role=builder".into()],
            ..DockerConfig::default()
        };
        let t = text(&v, &config).expect("render");
        assert!(t.contains("name=\"web\""));
        assert!(!t.contains("name=\"db\""));
        assert!(!t.contains("name=\"cache\""));
        let config = DockerConfig {
            labels: vec!["role".into()],
            ..DockerConfig::default()
        };
        let t = text(&v, &config).expect("render");
        assert!(t.contains("name=\"db\"") && !t.contains("name=\"cache\""));
    }

    #[test]
    fn swarm_services() {
        let mut v = view(vec![]);
        v.services = Some(vec![ServiceInfo {
            name: "block-builder-stack-mainnet_block-builder-mainnet".into(),
            mode: "replicated".into(),
            desired_tasks: 1,
            running_tasks: 0,
        }]);
        let t = text(&v, &DockerConfig::default()).expect("render");
        assert_eq!(
            value_of(
                &t,
                "nodewatch_swarm_service_desired_tasks{mode=\"replicated\",service=\"block-builder-stack-mainnet_block-builder-mainnet\"}"
            ),
            1.0
        );
        assert_eq!(
            value_of(
                &t,
                "nodewatch_swarm_service_running_tasks{service=\"block-builder-stack-mainnet_block-builder-mainnet\"}"
            ),
            0.0
        );
    }

    #[test]
    fn unreachable_engine_fails_and_absent_socket_is_no_data() {
        let mut v = view(vec![container("web", "running", &[])]);
        v.connection = Connection::Down {
            message: "no permission on Docker socket /x.sock".into(),
            socket_absent: false,
        };
        let err = text(&v, &DockerConfig::default()).expect_err("down");
        assert!(!err.is_no_data());
        assert!(err.to_string().contains("no permission"), "{err}");
        v.connection = Connection::Down {
            message: "Docker socket /x.sock does not exist".into(),
            socket_absent: true,
        };
        assert!(
            text(&v, &DockerConfig::default())
                .expect_err("absent")
                .is_no_data()
        );
        v.connection = Connection::Connecting;
        assert!(
            text(&v, &DockerConfig::default())
                .expect_err("connecting")
                .is_no_data()
        );
    }

    #[test]
    fn bad_pattern_is_a_build_error() {
        let config = DockerConfig {
            container_pattern: "(".into(),
            ..DockerConfig::default()
        };
        let err = DockerCollector::new(&config).expect_err("regex");
        assert!(
            err.to_string().contains("docker.container_pattern"),
            "{err}"
        );
    }
}
