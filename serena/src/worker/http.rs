//! The HTTP endpoint of a worker binary (feature `http`): `/metrics`, `/healthz`, `/readyz`.
//!
//! Turned on by [`Supervisor::http`] or the environment variable [`HTTP_ADDR_ENV`]
//! (`SERENA_HTTP_ADDR=0.0.0.0:9090`); the builder call wins. The listener is bound when
//! [`run`](Supervisor::run) starts (a refused address stops the supervisor with
//! [`SupervisorError::Http`] before it connects), and the server runs inside the supervisor's
//! future: it stops when the supervisor returns.
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | 200, the process's metrics in the Prometheus text format (see the [metric list](super#metrics)) |
//! | `GET /healthz` | 200 `ok` while the process serves requests (liveness) |
//! | `GET /readyz` | 200 `{"ready":true,...}` when every consumer is consuming; 503 with the state and the last error otherwise (readiness) |
//!
//! The metrics are those of the process's Prometheus recorder, which the first endpoint to
//! start installs as the global `metrics` recorder ([`prometheus`]). Histograms have buckets
//! from 0.5 ms to 60 s. The server speaks HTTP/1.1 (hyper), serves at most 64 connections at
//! once, and closes a connection that sends no complete request head within 5 s.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinSet;

use super::stats::{Readiness, SupervisorHandle};
use super::supervisor::{Supervisor, SupervisorError};

/// The environment variable that turns the endpoint on when [`Supervisor::http`] was not
/// called: a socket address such as `0.0.0.0:9090` or `127.0.0.1:0`.
pub const HTTP_ADDR_ENV: &str = "SERENA_HTTP_ADDR";

/// Buckets of the `_seconds` histograms: 0.5 ms to 60 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;

/// A connection must send a complete request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the recorder drains its histogram buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the HTTP endpoint could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The value of [`HTTP_ADDR_ENV`] is not a socket address.
    #[error("{HTTP_ADDR_ENV}={value:?} is not a socket address such as 0.0.0.0:9090")]
    InvalidAddr {
        /// The variable's value.
        value: String,
    },
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Another `metrics` recorder is installed in this process, so serena's metrics do not
    /// reach the Prometheus recorder `/metrics` renders.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
}

/// The process's Prometheus recorder: installed as the global `metrics` recorder on the first
/// call (also by the first HTTP endpoint to start), the same handle after. Render its text with
/// [`PrometheusHandle::render`] to serve metrics some other way. Fails when another recorder
/// was installed first.
pub fn prometheus() -> Result<PrometheusHandle, HttpError> {
    static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&DURATION_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(HttpError::Recorder)
}

/// A bound endpoint, not yet serving.
#[derive(Debug)]
pub(super) struct Endpoint {
    listener: std::net::TcpListener,
    prometheus: PrometheusHandle,
}

impl Supervisor {
    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` while the supervisor runs (see
    /// [`HTTP_ADDR_ENV`] for the same without code). Port 0 picks a free port:
    /// [`SupervisorHandle::http_addr`] tells which.
    ///
    /// ```no_run
    /// # async fn run(supervisor: serena::worker::Supervisor) -> Result<(), serena::worker::SupervisorError> {
    /// supervisor.http(([0, 0, 0, 0], 9090).into()).run().await
    /// # }
    /// ```
    #[must_use]
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// Binds the endpoint, if the builder or the environment asks for one, and installs the
    /// recorder before any metric handle is resolved.
    pub(super) fn start_http(&self) -> Result<Option<Endpoint>, SupervisorError> {
        let addr = match self.http {
            Some(addr) => addr,
            None => match addr_from_env(std::env::var(HTTP_ADDR_ENV).ok().as_deref()) {
                Ok(Some(addr)) => addr,
                Ok(None) => return Ok(None),
                Err(e) => return Err(SupervisorError::Http(e)),
            },
        };
        let bind = || {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        let listener = bind().map_err(|source| {
            SupervisorError::Http(HttpError::Bind {
                addr,
                source: Arc::new(source),
            })
        })?;
        let prometheus = prometheus().map_err(SupervisorError::Http)?;
        let bound = listener.local_addr().unwrap_or(addr);
        self.status.send_modify(|s| s.http_addr = Some(bound));
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
        Ok(Some(Endpoint {
            listener,
            prometheus,
        }))
    }
}

/// The address in the variable's value, `None` when unset or empty.
fn addr_from_env(value: Option<&str>) -> Result<Option<SocketAddr>, HttpError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| HttpError::InvalidAddr {
            value: v.to_owned(),
        }),
    }
}

/// Serves `endpoint` for `handle`'s supervisor; never returns (the supervisor's future drops
/// it, and with it every connection's task). Without an endpoint, waits forever.
pub(super) async fn serve(endpoint: Option<Endpoint>, handle: SupervisorHandle) {
    let Some(Endpoint {
        listener,
        prometheus,
    }) = endpoint
    else {
        return std::future::pending().await;
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP endpoint cannot use its listener");
            return std::future::pending().await;
        }
    };
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, handle.clone(), prometheus.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            _ = upkeep.tick() => prometheus.run_upkeep(),
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    handle: SupervisorHandle,
    prometheus: PrometheusHandle,
) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(request.method(), request.uri().path(), &handle, &prometheus);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// The answer to `method` `path`.
fn respond(
    method: &Method,
    path: &str,
    handle: &SupervisorHandle,
    prometheus: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/metrics" => {
            let mut response = text(StatusCode::OK, prometheus.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (status, body) = readiness_report(&handle.readiness(), handle.last_error());
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `/readyz`'s status and JSON body: 200 only when ready; otherwise 503 with the state, what
/// keeps it from being ready, and the last error.
fn readiness_report(
    readiness: &Readiness,
    last_error: Option<super::TreeError>,
) -> (StatusCode, serde_json::Value) {
    let mut body = serde_json::Map::new();
    let state = match readiness {
        Readiness::Starting => "starting",
        Readiness::Ready => "ready",
        Readiness::Standby { waiting } => {
            body.insert("waiting".into(), waiting.iter().map(|w| &**w).collect());
            "standby"
        }
        Readiness::Restarting {
            error,
            next_attempt,
        } => {
            body.insert("error".into(), error.to_string().into());
            let wait = next_attempt.saturating_duration_since(Instant::now());
            body.insert(
                "next_attempt_in_ms".into(),
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).into(),
            );
            "restarting"
        }
        Readiness::Stopped => "stopped",
    };
    let ready = matches!(readiness, Readiness::Ready);
    body.insert("ready".into(), ready.into());
    body.insert("state".into(), state.into());
    if let Some(e) = last_error {
        body.insert("last_error".into(), e.to_string().into());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::worker::{Phase, TreeError};

    #[test]
    fn the_address_comes_from_the_variable_or_is_refused() {
        assert_eq!(addr_from_env(None).unwrap(), None);
        assert_eq!(addr_from_env(Some("  ")).unwrap(), None);
        assert_eq!(
            addr_from_env(Some("127.0.0.1:9090")).unwrap(),
            Some(([127, 0, 0, 1], 9090).into())
        );
        let e = addr_from_env(Some("localhost")).unwrap_err();
        assert!(matches!(&e, HttpError::InvalidAddr { value } if value == "localhost"));
        assert!(e.to_string().contains(HTTP_ADDR_ENV));
    }

    #[test]
    fn readyz_is_200_only_when_ready_and_says_why_not() {
        let (status, body) = readiness_report(&Readiness::Ready, None);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["state"], "ready");

        let error = TreeError::new(Phase::Running, Error::Closed("connection"));
        let restarting = Readiness::Restarting {
            error: error.clone(),
            next_attempt: Instant::now() + Duration::from_secs(2),
        };
        let (status, body) = readiness_report(&restarting, Some(error.clone()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert_eq!(body["state"], "restarting");
        assert_eq!(body["error"], error.to_string());
        assert_eq!(body["last_error"], error.to_string());
        assert!(body["next_attempt_in_ms"].as_u64().unwrap() <= 2_000);

        let standby = Readiness::Standby {
            waiting: vec!["audit".into()],
        };
        let (status, body) = readiness_report(&standby, None);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["waiting"], serde_json::json!(["audit"]));
        assert_eq!(
            readiness_report(&Readiness::Starting, None).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
