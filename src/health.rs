//! The plain-HTTP health listener on its own port: `/health` (alive), `/ready` (model
//! loaded) and `/metrics` (Prometheus text; `[metrics] enabled = false` turns it into a
//! 404). The API port never serves metrics: they name key ids and traffic levels.
//!
//! SECURITY / robustness: it reads atomics only and never waits on the engine or takes a
//! lock the engine holds, so it answers in milliseconds while generation saturates the
//! CPU. It serves no request body, no credentials and no prompt text, has its own small
//! connection cap and header timeout, and answers any other path with 404.

use crate::engine::EngineStats;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Health checkers are few; a flood of them must not exhaust file descriptors.
const MAX_HEALTH_CONNECTIONS: usize = 64;
/// A probe that cannot send its request line in this time is dropped.
const HEALTH_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the health port reads: the engine's counters and, when enabled, the metrics.
pub struct HealthState {
    pub stats: Arc<EngineStats>,
    /// None: `[metrics] enabled = false`.
    pub metrics: Option<Arc<Metrics>>,
}

pub async fn serve_health(
    listener: TcpListener,
    state: Arc<HealthState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HEALTH_CONNECTIONS));
    crate::http::accept_loop(
        &listener,
        &permits,
        &mut shutdown,
        "health",
        |tcp, _, permit| {
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &state)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEALTH_HEADER_TIMEOUT)
                    .max_buf_size(8192)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        },
    )
    .await;
}

fn answer(req: &Request<Incoming>, state: &HealthState) -> Response<Full<Bytes>> {
    let stats = &state.stats;
    let path = req.uri().path();
    let known = match path {
        "/health" | "/ready" => true,
        "/metrics" => state.metrics.is_some(),
        _ => false,
    };
    if !known {
        return reply(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"status\":\"not_found\"}".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            "{\"status\":\"method_not_allowed\"}".into(),
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/health" => reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}".into(),
        ),
        "/ready" if stats.is_ready() => reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ready\"}".into(),
        ),
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            "{\"status\":\"loading\"}".into(),
        ),
        _ => {
            let mut text = metrics(stats);
            if let Some(m) = &state.metrics {
                m.export(&mut text);
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Prometheus exposition of the engine counters.
pub fn metrics(s: &EngineStats) -> String {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 12] = [
        (
            "lgi_ready",
            "gauge",
            "1 once the model is loaded",
            u64::from(s.is_ready()),
        ),
        (
            "lgi_queue_depth",
            "gauge",
            "requests waiting for the engine",
            g(&s.queued),
        ),
        (
            "lgi_active_requests",
            "gauge",
            "requests generating now",
            g(&s.active),
        ),
        (
            "lgi_requests_completed_total",
            "counter",
            "generations finished",
            g(&s.completed),
        ),
        (
            "lgi_requests_cancelled_total",
            "counter",
            "generations stopped because the client left",
            g(&s.cancelled),
        ),
        (
            "lgi_requests_failed_total",
            "counter",
            "generations that failed",
            g(&s.failed),
        ),
        (
            "lgi_prompt_tokens_total",
            "counter",
            "prompt tokens processed",
            g(&s.prompt_tokens),
        ),
        (
            "lgi_prompt_tokens_cached_total",
            "counter",
            "prompt tokens reused from the prefix cache instead of computed",
            g(&s.cached_tokens),
        ),
        (
            "lgi_completion_tokens_total",
            "counter",
            "tokens generated",
            g(&s.completion_tokens),
        ),
        (
            "lgi_argon2_verifications_total",
            "counter",
            "argon2 verifications run (first use of a key, failures, unknown ids)",
            crate::auth::argon2_runs_total(),
        ),
        (
            "lgi_auth_address_throttled_total",
            "counter",
            "requests refused with 429 for too many failed authentications from one address",
            crate::auth::address_throttled_total(),
        ),
        (
            "lgi_seccomp_denied_total",
            "counter",
            "syscalls denied by the seccomp filter (nonzero means a bug or an attack)",
            crate::sandbox::seccomp::denied_total(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}
