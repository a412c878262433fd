//! `nodewatch-agent test-alert` and `POST /api/test-alert`: a synthetic alert,
//! `NodewatchTestAlert`, joins the firing alerts for a while, so every output that
//! follows them (buzzer and LED, display, LoRa and through the gateway Alertmanager)
//! shows it exactly as it would a real one, then resolves. The running daemon owns
//! the hardware, so the command asks it over HTTP; the endpoint answers loopback
//! clients only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::bus::AlertBus;
use super::{FiringAlert, Severity};
use crate::snapshot::Snapshot;

/// The test alert's name.
pub const TEST_ALERT_NAME: &str = "NodewatchTestAlert";
/// The longest a test alert may last.
pub const MAX_DURATION_SECS: u64 = 600;

/// The request's query: `?severity=critical&duration_secs=15`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestAlertRequest {
    /// Default critical (it exercises the most: the repeating buzzer, the display's
    /// takeover, LoRa's first place in the queue).
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// How long it fires before it resolves. Default 15 s, at most 600.
    #[serde(default = "default_duration")]
    pub duration_secs: u64,
}

fn default_severity() -> Severity {
    Severity::Critical
}

fn default_duration() -> u64 {
    15
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestAlertAnswer {
    /// `NodewatchTestAlert`.
    pub alertname: String,
    /// Its severity.
    pub severity: String,
    /// How long it fires.
    pub duration_secs: u64,
    /// The outputs that follow the alerts on this agent, with their health.
    pub outputs: BTreeMap<String, bool>,
}

/// The alert the request stands for.
pub fn test_alert(severity: Severity, node: &str) -> FiringAlert {
    FiringAlert {
        alertname: TEST_ALERT_NAME.into(),
        severity,
        labels: BTreeMap::from([("node".to_string(), node.to_string())]),
        value: 1.0,
        summary: format!("Test alert from {node}"),
        description: "Sent by `nodewatch-agent test-alert` to check alert delivery.".into(),
        active_since_unix: crate::metrics::unix_now(),
    }
}

#[derive(Debug)]
struct TestAlertState {
    bus: Arc<AlertBus>,
    /// For the outputs' health in the answer.
    snapshot: Arc<Snapshot>,
    node: String,
    alerting: bool,
}

/// `POST /api/test-alert` on the agent's router.
pub fn router(bus: Arc<AlertBus>, snapshot: Arc<Snapshot>, node: String, alerting: bool) -> Router {
    Router::new()
        .route("/api/test-alert", post(handle))
        .with_state(Arc::new(TestAlertState {
            bus,
            snapshot,
            node,
            alerting,
        }))
}

async fn handle(
    State(state): State<Arc<TestAlertState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<TestAlertRequest>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "test alerts are accepted from this machine only (loopback)\n",
        )
            .into_response();
    }
    let Query(request) = match query {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    if !state.alerting {
        return (
            StatusCode::CONFLICT,
            "local alerting is off (alerts.enabled = false): no output follows alerts\n",
        )
            .into_response();
    }
    if request.duration_secs == 0 || request.duration_secs > MAX_DURATION_SECS {
        return (
            StatusCode::BAD_REQUEST,
            format!("duration_secs must be 1 to {MAX_DURATION_SECS}\n"),
        )
            .into_response();
    }
    let alert = test_alert(request.severity, &state.node);
    let until = tokio::time::Instant::now().into_std() + Duration::from_secs(request.duration_secs);
    state.bus.inject_test_alert(alert, until);
    tracing::warn!(
        severity = request.severity.as_str(),
        duration_secs = request.duration_secs,
        "Test alert requested."
    );
    let outputs = state
        .snapshot
        .outputs()
        .health()
        .into_iter()
        .filter(|(name, _)| name != "alerts")
        .map(|(name, h)| (name, h.ok))
        .collect();
    Json(TestAlertAnswer {
        alertname: TEST_ALERT_NAME.into(),
        severity: request.severity.as_str().into(),
        duration_secs: request.duration_secs,
        outputs,
    })
    .into_response()
}

/// The command's side: asks the agent listening at `listen_address` (its port on
/// loopback) and describes the answer.
pub async fn request(
    listen_address: &str,
    severity: Severity,
    duration_secs: u64,
) -> Result<String, String> {
    let port = listen_address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| format!("web.listen_address {listen_address:?} has no port"))?;
    let path = format!(
        "/api/test-alert?severity={}&duration_secs={duration_secs}",
        severity.as_str()
    );
    let url = crate::http_client::parse_http_url(&format!("http://127.0.0.1:{port}{path}"))?;
    // The command speaks plain HTTP and holds no password: behind --web.config.file,
    // curl does the same request.
    let with_curl = format!(
        "with --web.config.file, use curl -u USER -X POST 'https://127.0.0.1:{port}{path}' \
         (--cacert CA_FILE for TLS; http:// when only basic auth is on)"
    );
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        crate::http_client::post_json(&url, bytes::Bytes::new(), 64 * 1024),
    )
    .await
    .map_err(|_| format!("the agent on port {port} did not answer within 10 s; {with_curl}"))?
    .map_err(|e| {
        format!("cannot reach the agent on port {port} (is it running?): {e}; {with_curl}")
    })?;
    let (status, body) = answer;
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if status == 401 {
        return Err(format!("the agent asks for a password; {with_curl}"));
    }
    if status != 200 {
        return Err(format!("the agent refused: HTTP {status}: {text}"));
    }
    let answer: TestAlertAnswer = serde_json::from_str(&text)
        .map_err(|e| format!("unexpected answer from the agent: {e}: {text}"))?;
    let mut out = format!(
        "{} ({}) fires for {} s, then resolves.\n",
        answer.alertname, answer.severity, answer.duration_secs
    );
    if answer.outputs.is_empty() {
        out.push_str("No output follows alerts on this agent (see /api/health/detailed).\n");
    }
    for (name, ok) in &answer.outputs {
        out.push_str(&format!(
            "  {name}: {}\n",
            if *ok {
                "ok"
            } else {
                "FAILING (see /api/health/detailed)"
            }
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn snapshot() -> Arc<Snapshot> {
        Arc::new(Snapshot::new(Vec::new()))
    }

    async fn post_from(router: Router, peer: &str, query: &str) -> (StatusCode, String) {
        let mut request = Request::post(format!("/api/test-alert{query}"))
            .body(Body::empty())
            .expect("request");
        let peer: SocketAddr = peer.parse().expect("addr");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn only_loopback_clients_may_fire_a_test_alert() {
        let snap = snapshot();
        let bus = Arc::new(AlertBus::default());
        let (status, body) = post_from(
            router(bus.clone(), snap.clone(), "pi-a".into(), true),
            "192.168.1.20:5000",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(bus.alerts().is_empty());
        for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            let (status, body) = post_from(
                router(bus.clone(), snap.clone(), "pi-a".into(), true),
                peer,
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{peer}: {body}");
        }
        let alerts = bus.alerts();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alertname, TEST_ALERT_NAME);
        assert_eq!(alerts[0].severity, Severity::Critical);
        assert_eq!(alerts[0].labels["node"], "pi-a");
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_the_reason() {
        let snap = snapshot();
        let bus = Arc::new(AlertBus::default());
        let (status, body) = post_from(
            router(bus.clone(), snap.clone(), "pi-a".into(), true),
            "127.0.0.1:1",
            "?duration_secs=0",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("duration_secs"), "{body}");
        let (status, _) = post_from(
            router(bus.clone(), snap.clone(), "pi-a".into(), true),
            "127.0.0.1:1",
            "?severity=loud",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = post_from(
            router(bus.clone(), snap.clone(), "pi-a".into(), false),
            "127.0.0.1:1",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(body.contains("alerts.enabled"), "{body}");
        assert!(bus.alerts().is_empty());
    }

    #[test]
    fn the_test_alert_ends_and_takes_its_place_by_severity() {
        let bus = Arc::new(AlertBus::default());
        let now = std::time::Instant::now();
        bus.inject_test_alert(
            test_alert(Severity::Warning, "n"),
            now + Duration::from_secs(5),
        );
        assert!(bus.test_alert(now).is_some());
        assert!(bus.test_alert(now + Duration::from_secs(6)).is_none());
        let mut critical = test_alert(Severity::Critical, "n");
        critical.alertname = "UnderVoltage".into();
        let mut info = test_alert(Severity::Info, "n");
        info.alertname = "Info".into();
        let merged = super::super::with_test_alert(
            vec![critical, info],
            Some(test_alert(Severity::Warning, "n")),
        );
        let names: Vec<&str> = merged.iter().map(|a| a.alertname.as_str()).collect();
        assert_eq!(names, ["UnderVoltage", TEST_ALERT_NAME, "Info"]);
    }
}
