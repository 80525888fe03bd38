//! The HTTPS accept loop: connection cap, accept backoff, TLS handshake under a deadline,
//! hyper (HTTP/1.1 and HTTP/2 by ALPN) with protocol limits, graceful drain on shutdown.
//!
//! SECURITY:
//! - A semaphore permit is taken *before* `accept`, so at the cap the server stops
//!   accepting (the kernel backlog absorbs the burst) instead of accepting and dropping.
//! - tokio-rustls has no handshake timeout of its own: the handshake runs inside the
//!   spawned task under `tls_handshake_timeout_secs`, so a silent client holds one
//!   permit for at most that long.
//! - hyper's `header_read_timeout` only works with a timer installed; we install one.
//! - HTTP/2 is capped at `H2_MAX_STREAMS` concurrent streams and a small header list,
//!   with hyper's reset-flood protections (pending/local-error reset limits) set.

use crate::api::{self, AppState};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Concurrent HTTP/2 streams per connection (each may hold an engine request).
const H2_MAX_STREAMS: u32 = 32;
/// Largest request head (HTTP/1 read buffer and HTTP/2 header list), in bytes (hyper's floor is 8 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// HTTP/2 resets a client may cause before the connection is closed (CVE-2023-44487 class).
const H2_MAX_PENDING_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// First and last delay after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Per-listener settings taken from the config.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: u32,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
}

/// Serve the API until `shutdown` flips, then drain for at most `grace`.
pub async fn serve_api(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: Arc<AppState>,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let graceful = GracefulShutdown::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = ACCEPT_BACKOFF_MIN; x }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(
                limits.tls_handshake_timeout,
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = connection_builder(limits);
            let service = service_fn(move |req| api::handle(req, state.clone()));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "API listener closed; draining connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

fn connection_builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}
