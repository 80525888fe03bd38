//! The plain-HTTP health listener on its own port: `/health` (alive; `/ping` too, the
//! old gateway's name for it), `/ready` (model loaded) and `/metrics` (Prometheus text; `[metrics] enabled = false` turns it into a
//! 404). The API port never serves metrics: they name key ids and traffic levels.
//!
//! SECURITY / robustness: it reads atomics only and never waits on the engine or takes a
//! lock the engine holds, so it answers in milliseconds while generation saturates the
//! CPU. It serves no request body, no credentials and no prompt text, has its own small
//! connection cap and header timeout, and answers any other path with 404.

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Health checkers are few; a flood of them must not exhaust file descriptors.
const MAX_HEALTH_CONNECTIONS: usize = 64;
/// A probe that cannot send its request line in this time is dropped.
const HEALTH_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the health port reads: the registry (readiness is the engine's counter there).
pub struct HealthState {
    pub metrics: Arc<Metrics>,
    /// `[metrics] enabled`: false makes /metrics a 404.
    pub export: bool,
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
    let ready = state.metrics.engine().is_ready();
    let path = req.uri().path();
    let known = match path {
        "/health" | "/ping" | "/ready" => true,
        "/metrics" => state.export,
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
        "/health" | "/ping" => reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}".into(),
        ),
        "/ready" if ready => reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ready\"}".into(),
        ),
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            "{\"status\":\"loading\"}".into(),
        ),
        _ => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
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
