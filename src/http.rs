//! The HTTPS accept loop: connection cap, accept backoff, TLS handshake under a deadline,
//! hyper (HTTP/1.1 and HTTP/2 by ALPN) with protocol limits, graceful drain on shutdown.
//!
//! SECURITY:
//! - A semaphore permit is taken *before* `accept`, so at the cap the server stops
//!   accepting (the kernel backlog absorbs the burst) instead of accepting and dropping.
//!   Per-address caps accept and close at once: `server.max_connections_per_address`
//!   per IPv4 address or IPv6 /64, and `server.max_connections_per_ipv6_48` per IPv6 /48,
//!   so a network that owns many /64s (one /48 holds 65 536) cannot take the global cap.
//! - A connection serves at most `server.max_requests_per_connection` requests.
//! - tokio-rustls has no handshake timeout of its own: the handshake runs inside the
//!   spawned task under `tls_handshake_timeout_secs`, so a silent client holds one
//!   permit for at most that long.
//! - hyper's `header_read_timeout` only works with a timer installed; we install one.
//! - One idle timeout for both protocols (`server.idle_timeout_secs`): a connection with
//!   no request in progress for that long is closed gracefully — HTTP/1 between
//!   requests, HTTP/2 with no open stream. hyper's HTTP/2 keep-alive only checks that the
//!   peer answers PINGs, which every client library does by itself, so it cannot end an
//!   idle connection; we count requests in flight (a request is in flight until its
//!   response body is dropped) instead. `server.max_connection_lifetime_secs` closes any
//!   connection gracefully after that long, however busy.
//! - HTTP/2 is capped at `H2_MAX_STREAMS` concurrent streams and a small header list,
//!   with hyper's reset-flood protections (pending/local-error reset limits) set.

use crate::address::{address_key, ipv6_48};
use crate::api::{self, AppState};
use crate::settings::ConnLimits;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Concurrent HTTP/2 streams per connection (each may hold an engine request).
const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2 resets a client may cause before the connection is closed (CVE-2023-44487 class).
const H2_MAX_PENDING_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// HTTP/2 flow-control windows: small, because request bodies are small JSON (1 MiB cap)
/// and a large window only lets a client park more unread data in our memory.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// First and last delay after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Open connections per client address and per IPv6 /48. Entries exist only while a
/// connection is open, so each table holds at most `max_connections` entries.
struct PerAddress {
    open: Mutex<OpenCounts>,
    cap: u32,
    cap_48: u32,
}

#[derive(Default)]
struct OpenCounts {
    /// By `address_key` (IPv4 address, IPv6 /64).
    by_address: HashMap<IpAddr, u32>,
    /// By IPv6 /48 (`ipv6_48`).
    by_48: HashMap<IpAddr, u32>,
}

/// Count one connection less under `key`, forgetting keys that reach zero.
fn count_down(table: &mut HashMap<IpAddr, u32>, key: IpAddr) {
    if let Some(n) = table.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            table.remove(&key);
        }
    }
}

impl PerAddress {
    fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let wide = ipv6_48(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.by_address.get(&key).copied().unwrap_or(0);
        let n48 = wide.and_then(|w| open.by_48.get(&w).copied()).unwrap_or(0);
        if n >= self.cap || n48 >= self.cap_48 {
            return None;
        }
        open.by_address.insert(key, n + 1);
        if let Some(w) = wide {
            open.by_48.insert(w, n48 + 1);
        }
        Some(AddressSlot {
            table: self.clone(),
            key,
            wide,
        })
    }
}

/// One open connection counted against its address (and /48); released on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
    wide: Option<IpAddr>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        count_down(&mut open.by_address, self.key);
        if let Some(w) = self.wide {
            count_down(&mut open.by_48, w);
        }
    }
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
    let per_address = Arc::new(PerAddress {
        open: Mutex::new(OpenCounts::default()),
        cap: limits.max_connections_per_address,
        cap_48: limits.max_connections_per_ipv6_48,
    });
    // Each connection watches its own copy of the shutdown signal.
    let connections_shutdown = shutdown.clone();
    accept_loop(
        &listener,
        &permits,
        &mut shutdown,
        "API",
        |tcp, peer, permit| {
            // SECURITY: one address cannot take the whole global cap. Unlike the global cap
            // (where we stop accepting), this needs the peer address, so the connection is
            // accepted and closed at once, before any TLS work.
            let Some(slot) = per_address.try_open(peer.ip()) else {
                tracing::debug!(%peer, "per-address (or per-/48) connection cap reached; closing");
                drop(tcp);
                return;
            };
            let acceptor = tls.clone();
            let state = state.clone();
            let shutdown = connections_shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _slot = slot;
                let stream =
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
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
                // SECURITY: the protocol comes from ALPN, never from sniffing the first bytes:
                // the auto builder's sniffing waits for those bytes with no timeout (a silent
                // client would be held forever). No ALPN means HTTP/1.1 (h2 over TLS needs it).
                let h2 =
                    limits.http2 && stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                serve_connection(stream, h2, peer, state, limits, shutdown).await;
            });
        },
    )
    .await;
    drop(listener);
    let open = limits.max_connections as usize - permits.available_permits();
    tracing::info!(
        connections = open,
        "API listener closed; draining connections"
    );
    // Every connection task holds one permit until it ends.
    if tokio::time::timeout(grace, permits.acquire_many(limits.max_connections))
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// The accept loop of both listeners (API and health), until `shutdown` flips.
/// SECURITY: a connection permit is taken *before* `accept`, so at the cap the loop
/// stops accepting and the kernel backlog absorbs the burst; a failed `accept` (e.g. out
/// of file descriptors) backs off, doubling from `ACCEPT_BACKOFF_MIN` to
/// `ACCEPT_BACKOFF_MAX`, instead of spinning. `on_connection` gets the permit and must
/// keep it for as long as the connection lives.
pub(crate) async fn accept_loop(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
    name: &'static str,
    mut on_connection: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = ACCEPT_BACKOFF_MIN; x }
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        on_connection(tcp, peer, permit);
    }
}

/// One connection (after TLS): hyper with our limits, HTTP/2 if `h2` else HTTP/1.1;
/// closes gracefully after `max_requests_per_connection` requests, after `idle_timeout`
/// with no request in flight, after `max_lifetime`, or at server shutdown.
/// Public so the fuzz target drives exactly this code over an in-memory stream.
pub async fn serve_connection<I>(
    stream: I,
    h2: bool,
    peer: std::net::SocketAddr,
    state: Arc<AppState>,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicU32::new(0));
    let last_served = Arc::new(Notify::new());
    let activity = Arc::new(Activity::new());
    let service = {
        let last_served = last_served.clone();
        let activity = activity.clone();
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            let last = n >= limits.max_requests_per_connection;
            let h2 = req.version() == hyper::Version::HTTP_2;
            let state = state.clone();
            let last_served = last_served.clone();
            let in_flight = InFlight::start(activity.clone());
            async move {
                let resp = api::handle(req, state, peer.ip()).await?;
                // In flight until hyper drops the body (sent, or the stream was reset).
                let mut resp = resp.map(|body| Tracked {
                    inner: body,
                    _in_flight: in_flight,
                });
                if last {
                    if h2 {
                        // GOAWAY: streams already open finish, new ones go elsewhere.
                        last_served.notify_one();
                    } else {
                        resp.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let builder = connection_builder(limits, h2);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let end_of_life = tokio::time::sleep(limits.max_lifetime);
    tokio::pin!(end_of_life);
    let result = loop {
        let idle_check = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = tokio::time::sleep_until(idle_check), if !closing => {
                if activity.idle_for(limits.idle_timeout) {
                    tracing::debug!(%peer, "connection idle; closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = &mut end_of_life, if !closing => {
                tracing::debug!(%peer, "connection lifetime reached; closing");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = last_served.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        }
    }

    fn last_end(&self) -> Instant {
        *self.last_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection would have been idle for `timeout`, if nothing starts first.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: look again after a full timeout (the end of a request resets it).
            Instant::now() + timeout
        } else {
            self.last_end() + timeout
        }
    }

    fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last_end().elapsed() >= timeout
    }
}

/// One request in flight; ends (and restarts the idle clock) when dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it.
struct Tracked {
    inner: api::ApiBody,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn connection_builder(limits: ConnLimits, h2: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // SECURITY: with a timer installed, header_read_timeout bounds both the wait for a
    // complete request head and the idle wait between keep-alive requests (hyper >= 1.6),
    // so one setting drops slowloris clients and idle keep-alive connections.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    if h2 {
        b.http2_only()
    } else {
        b.http1_only()
    }
}
