//! The Docker watcher: one tokio task per engine socket that keeps a [`DockerView`]
//! current from the engine's event stream, with a full re-list (reconcile) every
//! `reconcile_interval`, because events can be missed.
//!
//! The collectors never talk to Docker: they render the view, so a scrape (and a
//! collection) never waits on the engine. The task connects with a fresh client on
//! every attempt (connecting fails at once while the socket is absent), negotiates the
//! API version (Debian's 20.10 engine speaks 1.41 at most), and backs off from 250 ms
//! to 5 s between attempts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, RwLock, Weak};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, EventMessage, EventMessageTypeEnum, Service, Task, TaskState,
};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptions, ListServicesOptions,
    ListTasksOptions,
};
use futures_util::StreamExt;

/// Longest a Docker API call may take before the engine counts as unresponsive.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Container event actions that change what the view holds. Others (exec_*, attach,
/// top, resize: a health check alone runs several exec events) are ignored.
const RELEVANT_ACTIONS: &[&str] = &[
    "create", "start", "restart", "die", "stop", "kill", "oom", "pause", "unpause", "rename",
    "update", "destroy",
];

/// One container as the engine last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// Full ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image as the container was created with (`Config.Image`), else the image ID.
    pub image: String,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub state: String,
    /// Whether it runs (a paused container runs, as Docker says).
    pub running: bool,
    /// `starting`, `healthy` or `unhealthy`; `None` without a health check.
    pub health: Option<String>,
    /// Docker's `RestartCount`: restarts by the restart policy since the container was
    /// created (a manual `docker restart` or a re-creation does not count).
    pub restart_count: i64,
    /// `State.StartedAt` as unix seconds; `None` if never started.
    pub started_at: Option<f64>,
    /// `State.ExitCode` of the last run (0 while running or never run).
    pub exit_code: i64,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

impl ContainerInfo {
    /// The Swarm service this container is a task of, if any.
    pub fn swarm_service(&self) -> Option<&str> {
        self.labels
            .get("com.docker.swarm.service.name")
            .map(String::as_str)
    }
}

/// A Swarm service and its tasks (only on a manager).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// `replicated` or `global` (jobs are reported as `replicated-job`/`global-job`).
    pub mode: String,
    /// Tasks the service wants running: replicas, or one per node for a global service
    /// (counted from tasks whose desired state is running).
    pub desired_tasks: u64,
    /// Tasks whose state is `running`.
    pub running_tasks: u64,
}

/// Whether the engine is reachable.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// No attempt has finished yet.
    Connecting,
    /// Connected; the negotiated API version.
    Connected {
        /// e.g. `1.41`.
        api_version: String,
    },
    /// Not reachable; a message that stays the same while the fault lasts.
    Down {
        /// What is wrong.
        message: String,
        /// The socket does not exist: Docker is not installed or not started.
        socket_absent: bool,
    },
}

/// Everything the collectors render.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerView {
    /// The engine's reachability.
    pub connection: Connection,
    /// Containers by ID (all of them: the collectors filter).
    pub containers: BTreeMap<String, ContainerInfo>,
    /// Swarm services, `None` unless the engine is a Swarm manager.
    pub services: Option<Vec<ServiceInfo>>,
    /// `start` events seen per container name since the agent started.
    pub observed_starts: HashMap<String, u64>,
}

impl Default for DockerView {
    fn default() -> Self {
        Self {
            connection: Connection::Connecting,
            containers: BTreeMap::new(),
            services: None,
            observed_starts: HashMap::new(),
        }
    }
}

/// The view of one engine, shared by the collectors that read it, and the task that
/// keeps it current (started on first use, inside the agent's runtime).
#[derive(Debug)]
pub struct DockerWatch {
    socket: PathBuf,
    reconcile_interval: Duration,
    view: RwLock<DockerView>,
    /// Ticks on every update of the view, for the collectors that render it.
    changed: tokio::sync::watch::Sender<u64>,
    started: Once,
}

/// Watches by socket, so the Docker and builder collectors share one connection.
static WATCHES: Mutex<Vec<Weak<DockerWatch>>> = Mutex::new(Vec::new());

impl DockerWatch {
    /// The watch of `socket`, shared with every other user of the same socket.
    pub fn shared(socket: &Path, reconcile_interval: Duration) -> Arc<DockerWatch> {
        let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|w| w.strong_count() > 0);
        if let Some(existing) = watches
            .iter()
            .filter_map(Weak::upgrade)
            .find(|w| w.socket == socket)
        {
            return existing;
        }
        let watch = Arc::new(DockerWatch {
            socket: socket.to_path_buf(),
            reconcile_interval,
            view: RwLock::new(DockerView::default()),
            changed: tokio::sync::watch::Sender::new(0),
            started: Once::new(),
        });
        watches.push(Arc::downgrade(&watch));
        watch
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts the watcher task on the current tokio runtime, once. Called from
    /// collections (which run on the runtime's blocking pool); without a runtime (a
    /// unit test calling `collect` directly) nothing starts and the view stays as is.
    pub fn ensure_started(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.call_once(|| {
            let watch = self.clone();
            handle.spawn(async move { watch.run().await });
        });
    }

    /// A copy of the current view.
    pub fn view(&self) -> DockerView {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the view without copying it.
    pub fn with_view<T>(&self, f: impl FnOnce(&DockerView) -> T) -> T {
        f(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many times the view was updated.
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Ticks after each update of the view.
    pub fn changes(&self) -> crate::collectors::ChangeSignal {
        self.changed.subscribe()
    }

    /// Applies `f`; signals the collectors when the view changed (a retry that fails
    /// as the last one did is no change).
    fn update(&self, f: impl FnOnce(&mut DockerView)) {
        let changed = {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let before = view.clone();
            f(&mut view);
            *view != before
        };
        if changed {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        let mut in_fault = false;
        let mut last_message = String::new();
        loop {
            let (message, socket_absent) = match self.session().await {
                Ok(never) => match never {},
                Err(fault) => fault,
            };
            let was_connected = matches!(
                self.with_view(|v| v.connection.clone()),
                Connection::Connected { .. }
            );
            if was_connected {
                backoff = BACKOFF_MIN;
                in_fault = false;
            }
            // One line when the fault starts; how it evolves (socket gone, connection
            // refused while the engine restarts) only at debug level.
            if !in_fault {
                tracing::warn!(
                    socket = %self.socket.display(),
                    error = message.as_str(),
                    "Docker engine unavailable; retrying with backoff."
                );
                in_fault = true;
            } else if message != last_message {
                tracing::debug!(
                    socket = %self.socket.display(),
                    error = message.as_str(),
                    "Docker engine still unavailable."
                );
            }
            last_message.clone_from(&message);
            self.update(|v| {
                v.connection = Connection::Down {
                    message,
                    socket_absent,
                };
                v.containers.clear();
                v.services = None;
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection: connect, subscribe, list, then follow events and reconcile
    /// until something fails. Returns the fault (message, socket absent).
    async fn session(&self) -> Result<std::convert::Infallible, (String, bool)> {
        let socket = self.socket.display().to_string();
        match std::fs::symlink_metadata(&self.socket) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err((format!("Docker socket {socket} does not exist"), true));
            }
            Err(e) => return Err((format!("cannot stat Docker socket {socket}: {e}"), false)),
            Ok(_) => {}
        }
        if let Err(errno) = nix::unistd::access(
            &self.socket,
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        ) {
            return Err((
                format!(
                    "no permission on Docker socket {socket} ({errno}): add the agent's user to the docker group, or point docker.socket at a read-only socket proxy"
                ),
                false,
            ));
        }
        let fault = |e: BollardError| (describe(&socket, &e), false);
        let docker =
            Docker::connect_with_unix(&socket, API_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
                .map_err(fault)?;
        let docker = timed(&socket, docker.negotiate_version()).await?;
        let version = docker.client_version();
        let api_version = format!("{}.{}", version.major_version, version.minor_version);
        // Events since a second ago: nothing between the subscription and the list
        // below is lost (a repeated event only repeats an idempotent inspect).
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1))
            .unwrap_or(0);
        let mut filters = HashMap::new();
        filters.insert(
            "type".to_string(),
            vec!["container".to_string(), "service".to_string()],
        );
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        }));
        self.reconcile(&docker, &socket).await?;
        tracing::info!(
            socket = socket.as_str(),
            api_version = api_version.as_str(),
            "Connected to the Docker engine."
        );
        self.update(|v| v.connection = Connection::Connected { api_version });
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.reconcile_interval,
            self.reconcile_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.handle_event(&docker, &socket, event).await?,
                    Some(Err(e)) => return Err(fault(e)),
                    None => return Err((format!("Docker event stream on {socket} ended (engine stopped?)"), false)),
                },
                _ = ticker.tick() => self.reconcile(&docker, &socket).await?,
            }
        }
    }

    /// Re-lists every container (and service, on a manager) and replaces the view.
    async fn reconcile(&self, docker: &Docker, socket: &str) -> Result<(), (String, bool)> {
        let summaries = timed(
            socket,
            docker.list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            })),
        )
        .await?;
        let mut containers = BTreeMap::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            if let Some(info) = inspect(docker, socket, &id).await? {
                containers.insert(id, info);
            }
        }
        let services = list_services(docker, socket).await?;
        self.update(|v| {
            v.containers = containers;
            v.services = services;
        });
        Ok(())
    }

    async fn handle_event(
        &self,
        docker: &Docker,
        socket: &str,
        event: EventMessage,
    ) -> Result<(), (String, bool)> {
        let action = event.action.as_deref().unwrap_or("");
        let id = event
            .actor
            .as_ref()
            .and_then(|a| a.id.clone())
            .unwrap_or_default();
        match event.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {
                let relevant =
                    RELEVANT_ACTIONS.contains(&action) || action.starts_with("health_status");
                if !relevant || id.is_empty() {
                    return Ok(());
                }
                if action == "destroy" {
                    self.update(|v| {
                        v.containers.remove(&id);
                    });
                    return Ok(());
                }
                if action == "die" {
                    // The event carries what matters; publish it before the inspect,
                    // which can wait on the engine's clean-up of the container.
                    let exit_code = event
                        .actor
                        .as_ref()
                        .and_then(|a| a.attributes.as_ref())
                        .and_then(|a| a.get("exitCode"))
                        .and_then(|c| c.parse().ok());
                    self.update(|v| {
                        if let Some(c) = v.containers.get_mut(&id) {
                            c.running = false;
                            c.state = "exited".into();
                            c.health = None;
                            if let Some(code) = exit_code {
                                c.exit_code = code;
                            }
                        }
                    });
                }
                let info = inspect(docker, socket, &id).await?;
                let swarm_task = info.as_ref().is_some_and(|i| i.swarm_service().is_some());
                self.update(|v| {
                    if action == "start"
                        && let Some(info) = &info
                    {
                        *v.observed_starts.entry(info.name.clone()).or_default() += 1;
                    }
                    match info {
                        Some(info) => {
                            v.containers.insert(id, info);
                        }
                        None => {
                            v.containers.remove(&id);
                        }
                    }
                });
                if swarm_task && matches!(action, "start" | "die") {
                    self.refresh_services(docker, socket).await?;
                }
            }
            Some(EventMessageTypeEnum::SERVICE) => self.refresh_services(docker, socket).await?,
            _ => {}
        }
        Ok(())
    }

    async fn refresh_services(&self, docker: &Docker, socket: &str) -> Result<(), (String, bool)> {
        let services = list_services(docker, socket).await?;
        self.update(|v| v.services = services);
        Ok(())
    }
}

/// Runs one API call under [`API_TIMEOUT`], turning errors into fault messages.
async fn timed<T>(
    socket: &str,
    call: impl std::future::Future<Output = Result<T, BollardError>>,
) -> Result<T, (String, bool)> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err((describe(socket, &e), false)),
        Err(_) => Err((
            format!(
                "Docker engine on {socket} did not answer within {}s",
                API_TIMEOUT.as_secs()
            ),
            false,
        )),
    }
}

/// A fault message that stays the same while the fault lasts (no IDs, no times), so
/// that it is logged once.
fn describe(socket: &str, error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("Docker API error on {socket}: {status_code} {message}"),
        BollardError::RequestTimeoutError => format!(
            "Docker engine on {socket} did not answer within {}s",
            API_TIMEOUT.as_secs()
        ),
        other => {
            // The innermost cause ("Connection refused") is the useful part.
            let mut cause: &dyn std::error::Error = other;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("cannot talk to the Docker engine on {socket}: {cause}")
        }
    }
}

/// Inspects one container; `None` if it no longer exists.
async fn inspect(
    docker: &Docker,
    socket: &str,
    id: &str,
) -> Result<Option<ContainerInfo>, (String, bool)> {
    let result = tokio::time::timeout(
        API_TIMEOUT,
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await;
    match result {
        Ok(Ok(response)) => Ok(Some(container_info(id, response))),
        Ok(Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(None),
        Ok(Err(e)) => Err((describe(socket, &e), false)),
        Err(_) => Err((
            format!(
                "Docker engine on {socket} did not answer within {}s",
                API_TIMEOUT.as_secs()
            ),
            false,
        )),
    }
}

/// Services and their task counts; `None` when the engine is not a Swarm manager.
async fn list_services(
    docker: &Docker,
    socket: &str,
) -> Result<Option<Vec<ServiceInfo>>, (String, bool)> {
    let services = tokio::time::timeout(
        API_TIMEOUT,
        docker.list_services(None::<ListServicesOptions>),
    )
    .await;
    let services = match services {
        Ok(Ok(services)) => services,
        // 503 "This node is not a swarm manager" (406 on older engines).
        Ok(Err(BollardError::DockerResponseServerError {
            status_code: 503 | 406,
            ..
        })) => return Ok(None),
        Ok(Err(e)) => return Err((describe(socket, &e), false)),
        Err(_) => {
            return Err((
                format!(
                    "Docker engine on {socket} did not answer within {}s",
                    API_TIMEOUT.as_secs()
                ),
                false,
            ));
        }
    };
    let tasks = timed(socket, docker.list_tasks(None::<ListTasksOptions>)).await?;
    Ok(Some(service_infos(&services, &tasks)))
}

/// Desired and running task counts per service.
pub fn service_infos(services: &[Service], tasks: &[Task]) -> Vec<ServiceInfo> {
    let mut out: Vec<ServiceInfo> = services
        .iter()
        .filter_map(|service| {
            let id = service.id.as_deref()?;
            let spec = service.spec.as_ref()?;
            let name = spec.name.clone().unwrap_or_else(|| id.to_string());
            let of_service = || {
                tasks
                    .iter()
                    .filter(move |t| t.service_id.as_deref() == Some(id))
            };
            let wanted = of_service()
                .filter(|t| t.desired_state == Some(TaskState::RUNNING))
                .count() as u64;
            let running = of_service()
                .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
                .count() as u64;
            let mode = spec.mode.as_ref();
            let (mode, desired) = match mode {
                Some(m) if m.global.is_some() => ("global", wanted),
                Some(m) if m.replicated_job.is_some() => ("replicated-job", wanted),
                Some(m) if m.global_job.is_some() => ("global-job", wanted),
                Some(m) => (
                    "replicated",
                    m.replicated
                        .as_ref()
                        .and_then(|r| r.replicas)
                        .map(|r| r.max(0) as u64)
                        .unwrap_or(1),
                ),
                None => ("replicated", 1),
            };
            Some(ServiceInfo {
                name,
                mode: mode.to_string(),
                desired_tasks: desired,
                running_tasks: running,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The fields the collectors use, from an inspect response.
pub fn container_info(id: &str, response: ContainerInspectResponse) -> ContainerInfo {
    let state = response.state.unwrap_or_default();
    let config = response.config.unwrap_or_default();
    let status = state
        .status
        .map(|s| s.as_ref().to_string())
        .unwrap_or_default();
    let health = state
        .health
        .and_then(|h| h.status)
        .map(|s| s.as_ref().to_string())
        .filter(|s| matches!(s.as_str(), "starting" | "healthy" | "unhealthy"));
    ContainerInfo {
        id: response.id.unwrap_or_else(|| id.to_string()),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.or(response.image).unwrap_or_default(),
        running: state.running.unwrap_or(status == "running"),
        state: status,
        health,
        restart_count: response.restart_count.unwrap_or(0),
        started_at: state.started_at.as_deref().and_then(parse_rfc3339),
        exit_code: state.exit_code.unwrap_or(0),
        labels: config.labels.unwrap_or_default(),
    }
}

/// Unix seconds of an RFC 3339 UTC timestamp as Docker writes it
/// (`2026-11-22T02:59:01.123456789Z`); `None` for Docker's "never"
/// (`0001-01-01T00:00:00Z`) or anything unparsable.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Offset: `Z` or `±HH:MM`.
    let (clock, offset_seconds) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else {
        let split = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(split);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        let h: i64 = h.parse().ok()?;
        let m: i64 = m.parse().ok()?;
        (clock, sign * (h * 3600 + m * 60))
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let seconds: f64 = clock_parts.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let whole = days * 86_400 + hour * 3600 + minute * 60 - offset_seconds;
    Some(whole as f64 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339("2026-11-22T02:59:01.5Z"),
            Some(1_795_316_341.5)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T04:59:01.5+02:00"),
            Some(1_795_316_341.5)
        );
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn inspect_response_of_api_1_41() {
        // Shape of GET /v1.41/containers/{id}/json (trimmed), as Docker 20.10 answers.
        let json = r#"{
          "Id": "4fa6e0f0c678",
          "Name": "/block-builder",
          "RestartCount": 2,
          "Image": "sha256:abc",
          "State": {"Status": "exited", "Running": false, "Paused": false,
                    "Restarting": false, "OOMKilled": false, "Dead": false, "Pid": 0,
                    "ExitCode": 137, "Error": "",
                    "StartedAt": "2026-11-22T02:59:01.000000000Z",
                    "FinishedAt": "2026-11-22T03:00:00.000000000Z",
                    "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": []}},
          "Config": {"Image": "local/builder-stub", "Labels": {"role": "builder"}}
        }"#;
        let response: ContainerInspectResponse = serde_json::from_str(json).expect("json");
        let info = container_info("4fa6e0f0c678", response);
        assert_eq!(info.name, "block-builder");
        assert_eq!(info.image, "local/builder-stub");
        assert_eq!(info.state, "exited");
        assert!(!info.running);
        assert_eq!(info.exit_code, 137);
        assert_eq!(info.restart_count, 2);
        assert_eq!(info.health.as_deref(), Some("unhealthy"));
        assert_eq!(info.started_at, Some(1_795_316_341.0));
        assert_eq!(info.labels.get("role").map(String::as_str), Some("builder"));
    }
}
