//! The HTTP server: `/metrics`, `/api/health`, `/api/health/detailed`, a landing page,
//! a cap on concurrent requests, the connection limits, TLS and basic auth, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::auth::Auth;
use crate::connections::{ConnState, ConnectionMetrics, NextReap, Registration, Tracked, Tracker};
use crate::exposition::{Exposition, TEXT_CONTENT_TYPE};
use crate::health::{DetailedHealth, HealthStatus};
use crate::limits::{MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, ServerSettings};
use crate::requests::{RequestMetrics, UNMATCHED};
use crate::web_config::WebConfigHandle;

/// What a binary serves: its latest rendered metrics and its health.
pub trait MetricsSource: Send + Sync + 'static {
    /// The latest exposition. Must not wait on any collection.
    fn exposition(&self) -> Arc<Exposition>;
    /// The detailed health report.
    fn health(&self) -> DetailedHealth;
}

/// Server settings that come from flags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Path of the metrics endpoint (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// Cap on concurrent requests (`--web.max-requests`); 0 means no cap.
    pub max_requests: usize,
    /// Title of the landing page.
    pub title: String,
    /// Connection limits and `--web.config.file`.
    pub server: ServerSettings,
}

/// Resolves a node_exporter style listen address (`:9100`, `127.0.0.1:0`, `[::1]:9100`,
/// `localhost:9100`) and binds it. `:PORT` means every interface, IPv6 and IPv4 where
/// the host has IPv6, IPv4 only otherwise.
pub async fn bind(address: &str) -> Result<TcpListener, crate::Error> {
    let bind_err = |source| crate::Error::Bind {
        address: address.to_string(),
        source,
    };
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| crate::Error::ListenAddress {
            address: address.to_string(),
            reason: "the port is not a number from 0 to 65535".into(),
        })?;
        return match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(listener) => Ok(listener),
            // No IPv6 on this host: fall back to every IPv4 interface.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(libc_eafnosupport()) =>
            {
                TcpListener::bind(SocketAddr::from(([0u8; 4], port)))
                    .await
                    .map_err(bind_err)
            }
            Err(e) => Err(bind_err(e)),
        };
    }
    if !address.contains(':') {
        return Err(crate::Error::ListenAddress {
            address: address.to_string(),
            reason: "expected HOST:PORT or :PORT".into(),
        });
    }
    TcpListener::bind(address).await.map_err(bind_err)
}

const fn libc_eafnosupport() -> i32 {
    97 // EAFNOSUPPORT on Linux
}

struct AppState<S> {
    source: Arc<S>,
    title: String,
    telemetry_path: String,
}

/// Builds the router with the shared endpoints. Binaries merge their own routes into it
/// before calling [`serve`].
pub fn router<S: MetricsSource>(source: Arc<S>, options: &ServeOptions) -> Router {
    let state = Arc::new(AppState {
        source,
        title: options.title.clone(),
        telemetry_path: options.telemetry_path.clone(),
    });
    Router::new()
        .route(&options.telemetry_path, get(metrics::<S>))
        .route("/api/health", get(health::<S>))
        .route("/api/health/detailed", get(health_detailed::<S>))
        .route("/", get(landing::<S>))
        .with_state(state)
}

async fn metrics<S: MetricsSource>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
) -> Response {
    let exposition = state.source.exposition();
    // The request metrics change with every request: rendered now, after the cached body.
    let mut tail = Vec::new();
    RequestMetrics::global().render(&mut tail);
    ConnectionMetrics::global().render(&mut tail);
    let (body, gzip) = if accepts_gzip(&headers) {
        (exposition.gzip_with(&tail), true)
    } else {
        let text = exposition.text();
        let mut body = Vec::with_capacity(text.len() + tail.len());
        body.extend_from_slice(&text);
        body.extend_from_slice(&tail);
        (bytes::Bytes::from(body), false)
    };
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TEXT_CONTENT_TYPE),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// True when `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let zero_q = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        == Some(0.0)
                });
                (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero_q
            })
        })
}

fn status_code(status: HealthStatus) -> StatusCode {
    match status {
        HealthStatus::Healthy | HealthStatus::Degraded => StatusCode::OK,
        HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn health<S: MetricsSource>(State(state): State<Arc<AppState<S>>>) -> Response {
    let report = state.source.health();
    (status_code(report.status), axum::Json(report.basic())).into_response()
}

async fn health_detailed<S: MetricsSource>(State(state): State<Arc<AppState<S>>>) -> Response {
    let report = state.source.health();
    (status_code(report.status), axum::Json(report)).into_response()
}

async fn landing<S: MetricsSource>(State(state): State<Arc<AppState<S>>>) -> Html<String> {
    Html(format!(
        "<html><head><title>{t}</title></head><body><h1>{t}</h1><ul>\
         <li><a href=\"{m}\">Metrics</a></li><li><a href=\"/api/health/detailed\">Health</a></li>\
         </ul></body></html>\n",
        t = state.title,
        m = state.telemetry_path
    ))
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish within the shutdown deadline. Beyond `max_requests` concurrent
/// requests, answers 503 at once, as node_exporter does, rather than queueing.
///
/// Each connection is driven here rather than by `axum::serve`, for the limits of
/// [`crate::limits`]: the connection cap (the longest-idle connection makes room for a
/// new one), the header-read and idle timeouts, request-size limits, and a shutdown
/// that idle or half-open connections cannot hold up. With `--web.config.file`, TLS,
/// basic auth and response headers as [`crate::web_config`] describes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    let web = WebConfigHandle::open(options.server.web_config_file.as_deref())?;
    match crate::limits::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::debug!(before, after, "Raised the soft limit of open files.");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "Cannot raise the soft limit of open files."),
    }
    let limits = options.server.limits.clone();
    let router = if options.max_requests > 0 {
        let limit = Arc::new(Semaphore::new(options.max_requests));
        router.layer(middleware::from_fn(move |request: Request, next: Next| {
            let limit = limit.clone();
            async move {
                match limit.try_acquire() {
                    Ok(_permit) => next.run(request).await,
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Limit of concurrent requests reached, try again later.\n",
                    )
                        .into_response(),
                }
            }
        }))
    } else {
        router
    };
    let auth = Auth::new(web.clone());
    let router = router
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Before the request limit: a client without the password takes no slot.
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            crate::auth::check(auth.clone(), request, next)
        }))
        // Outermost, so the limit's 503s and the 401s are counted too.
        .layer(middleware::from_fn(record_request));
    let tracker = Tracker::new(limits.clone());
    let reaper = {
        let tracker = tracker.clone();
        // Ticks only while a request is under way; between scrapes it sleeps until
        // the first idle timeout or the next request, so an idle server does not wake.
        tokio::spawn(async move {
            loop {
                tracker.reaper.arm();
                match tracker.reap() {
                    NextReap::Tick(wait) => {
                        tracker.reaper.ticking();
                        tokio::time::sleep(wait).await;
                    }
                    NextReap::IdleEnds(wait) => {
                        let _ = tokio::time::timeout(wait, tracker.reaper.activity_seen()).await;
                    }
                    NextReap::NothingOpen => tracker.reaper.activity_seen().await,
                }
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES).max_headers(MAX_HEADERS);
    let http = Arc::new(http);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before it
                // was taken: never spin, never stop serving.
                ConnectionMetrics::global().accept_error();
                tracing::warn!(error = %e, "Cannot accept a connection.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if !tracker.make_room() {
            drop(stream);
            continue;
        }
        // Let evicted connections close before this one is served, so descriptors stay
        // at the cap even under a flood (their tasks run on this runtime).
        for _ in 0..16 {
            if tracker.len() < limits.max_connections {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = stream.set_nodelay(true);
        let registration = tracker.register();
        let config = web.current();
        connections.spawn(serve_connection(
            stream,
            peer,
            registration,
            config.tls.clone(),
            router.clone(),
            http.clone(),
        ));
    }
    drop(listener);
    tracker.close_all();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "Connections still open at the shutdown deadline are closed."
        );
    }
    connections.shutdown().await;
    reaper.abort();
    Ok(())
}

/// Serves one connection until the client closes it, a limit closes it, or shutdown.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    registration: Registration,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
) {
    let state = registration.state.clone();
    let io = Tracked::new(stream, state.clone());
    match tls {
        None => drive(io, peer, &state, router, &http).await,
        Some(config) => {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
            // The header timeout covers the handshake: the reaper closes it.
            let stream = tokio::select! {
                stream = handshake => stream,
                _ = state.close.notified() => return,
            };
            match stream {
                Ok(stream) => drive(stream, peer, &state, router, &http).await,
                Err(e) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed."),
            }
        }
    }
    drop(registration);
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    router: Router,
    http: &hyper::server::conn::http1::Builder,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn_state = state.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = conn_state.begin();
            let mut request = request.map(Body::new);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await;
                drop(in_flight);
                response
            }
        });
    let connection = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "Connection ended with an error.");
            }
            return;
        }
        _ = state.close.notified() => {}
    }
    // Asked to close: an idle connection goes now; a busy one after its answer (the
    // shutdown deadline bounds that).
    if state.finish_first() {
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// Counts a request and its duration under its route pattern.
async fn record_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    RequestMetrics::global().observe(
        route.as_ref().map_or(UNMATCHED, |r| r.as_str()),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called
/// (inside the runtime), not when the future is first polled: a signal sent as soon
/// as "Listening." is logged must stop the server, not kill it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .inspect_err(|e| tracing::warn!(error = %e, "Cannot listen for {name}."))
            .ok()
    };
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        let received = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = received(terminate) => tracing::info!("SIGTERM received, shutting down."),
            _ = received(interrupt) => tracing::info!("SIGINT received, shutting down."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    /// Beyond `max_requests` in flight, requests get 503 at once; when the slow ones
    /// finish, requests are served again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_requests_caps_concurrency() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let release = Arc::new(tokio::sync::Notify::new());
        let gate = release.clone();
        let router = Router::new().route(
            "/slow",
            get(move || {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    "done"
                }
            }),
        );
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let options = ServeOptions {
            telemetry_path: "/metrics".into(),
            max_requests: 2,
            title: "t".into(),
            server: ServerSettings::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, router, &options, async move {
                let _ = stopped.await;
            })
            .await
        });
        async fn get_status(address: SocketAddr) -> String {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response.lines().next().unwrap_or_default().to_string()
        }
        let slow: Vec<_> = (0..2).map(|_| tokio::spawn(get_status(address))).collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            get_status(address).await,
            "HTTP/1.1 503 Service Unavailable"
        );
        release.notify_waiters();
        for handle in slow {
            assert_eq!(handle.await.expect("join"), "HTTP/1.1 200 OK");
        }
        let again = tokio::spawn(get_status(address));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        release.notify_waiters();
        assert_eq!(again.await.expect("join"), "HTTP/1.1 200 OK");
        // Every answer is counted under its route, the limit's 503 included.
        let mut text = Vec::new();
        RequestMetrics::global().render(&mut text);
        let text = String::from_utf8(text).expect("utf8");
        for line in [
            "nodewatch_http_requests_total{code=\"200\",handler=\"/slow\"} 3",
            "nodewatch_http_requests_total{code=\"503\",handler=\"/slow\"} 1",
            "nodewatch_http_request_duration_seconds_count{handler=\"/slow\"} 4",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let _ = stop.send(());
        server.await.expect("join").expect("serve");
    }

    #[tokio::test]
    async fn bind_reports_bad_addresses() {
        assert!(matches!(
            bind("nonsense").await,
            Err(crate::Error::ListenAddress { .. })
        ));
        assert!(matches!(
            bind(":99999").await,
            Err(crate::Error::ListenAddress { .. })
        ));
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let taken = listener.local_addr().expect("addr").to_string();
        assert!(matches!(bind(&taken).await, Err(crate::Error::Bind { .. })));
    }
}
