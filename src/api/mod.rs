//! The OpenAI API, in request order: route → authenticate → read body → validate →
//! engine → respond. Only these routes exist:
//!
//! | method | path                     |
//! |--------|--------------------------|
//! | POST   | /v1/chat/completions     |
//! | POST   | /v1/completions          |
//! | POST   | /v1/embeddings           |
//! | POST   | /v1/responses            |
//! | POST   | /v1/responses/input_tokens |
//! | GET, POST, DELETE | /v1/responses/{id}… (404: nothing is stored) |
//! | GET    | /v1/models               |
//! | GET    | /v1/models/{id}          |
//!
//! Anything else is 404, a known path with the wrong method 405; every error is
//! OpenAI-shaped JSON (see `error.rs`).
//!
//! SECURITY: unknown paths are answered before authentication (they reveal nothing), but
//! no body is read and no engine work happens before the caller is authenticated. The
//! body is read under a size cap and a deadline; a full engine queue is a 503, never a wait.

mod admission;
pub mod chat;
pub mod check;
pub mod completions;
pub mod cors;
pub mod embeddings;
pub mod envelope;
pub mod error;
mod generate;
pub mod generation;
pub mod json;
mod prompt;
pub mod responses;
pub mod schema;
pub mod slips;
pub mod stream;
pub mod tools;
pub mod wire;

use crate::auth::{KeyStore, Principal};
use crate::config::LimitsConfig;
use crate::engine::EngineHandle;
use crate::metrics::{self, AuthFailure, Metrics, RateLimit, Trace};
use crate::settings::{ApiSettings, Settings};
use bytes::Bytes;
use error::ApiError;
use generate::Endpoint;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER,
    TRANSFER_ENCODING,
};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument;

pub type ApiBody = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub keys: KeyStore,
    pub engine: EngineHandle,
    /// Model id, body deadline, CORS origins, embeddings on/off, prompt logging.
    pub api: ApiSettings,
    /// Request limits (`max_n` the effective one).
    pub limits: LimitsConfig,
    /// `auth.max_concurrent_generations_per_key`, for the 429 message.
    pub generations_per_key: usize,
    /// Unix time the model was registered (server start), for /v1/models.
    pub created: u64,
    /// Stable per model file and build (OpenAI's `system_fingerprint`).
    pub system_fingerprint: String,
    /// Request counts, latency histograms and the per-request log line.
    pub metrics: Arc<Metrics>,
    /// The rate-limited `auth failed` trail.
    pub auth_audit: crate::auth::audit::AuthAudit,
    /// Keys the end-user `user_tag` HMAC (`logging.user_tag_key_file`).
    pub user_tag_key: ring::hmac::Key,
}

impl AppState {
    /// The state every connection shares, from the resolved settings (the one place
    /// start-up and the in-process tests build it).
    pub fn new(
        settings: &Settings,
        keys: KeyStore,
        engine: EngineHandle,
        metrics: Arc<Metrics>,
        user_tag_key: ring::hmac::Key,
        system_fingerprint: String,
    ) -> AppState {
        AppState {
            keys,
            engine,
            api: settings.api.clone(),
            limits: settings.limits.clone(),
            generations_per_key: settings.auth.generations_per_key as usize,
            created: unix_now(),
            system_fingerprint,
            metrics,
            auth_audit: crate::auth::audit::AuthAudit::new(),
            user_tag_key,
        }
    }
}

/// Which route a request addresses.
enum Route<'a> {
    Chat,
    Completions,
    Embeddings,
    Responses,
    InputTokens,
    /// `/v1/responses/{id}` and below: retrieve, cancel, delete, list input items.
    StoredResponse,
    Models,
    Model(&'a str),
}

impl Route<'_> {
    /// The metrics label.
    fn metric(&self) -> metrics::Route {
        match self {
            Route::Chat => metrics::Route::ChatCompletions,
            Route::Completions => metrics::Route::Completions,
            Route::Embeddings => metrics::Route::Embeddings,
            Route::Responses => metrics::Route::Responses,
            Route::InputTokens => metrics::Route::InputTokens,
            Route::StoredResponse => metrics::Route::StoredResponse,
            Route::Models => metrics::Route::Models,
            Route::Model(_) => metrics::Route::Model,
        }
    }
}

fn route(path: &str) -> Option<(Route<'_>, &'static str)> {
    match path {
        "/v1/chat/completions" => Some((Route::Chat, "POST")),
        "/v1/completions" => Some((Route::Completions, "POST")),
        "/v1/embeddings" => Some((Route::Embeddings, "POST")),
        "/v1/responses" => Some((Route::Responses, "POST")),
        "/v1/responses/input_tokens" => Some((Route::InputTokens, "POST")),
        "/v1/models" => Some((Route::Models, "GET")),
        _ => {
            if let Some(id) = path.strip_prefix("/v1/models/").filter(|id| !id.is_empty()) {
                return Some((Route::Model(id), "GET"));
            }
            path.strip_prefix("/v1/responses/")
                .filter(|rest| !rest.is_empty())
                .map(|_| (Route::StoredResponse, "GET, POST, DELETE"))
        }
    }
}

/// Entry point for one HTTP request on the API listener. `client` is the peer's address;
/// per-address limits count its address key (IPv6 reduced to its /64).
pub async fn handle(
    req: Request<Incoming>,
    state: Arc<AppState>,
    client: std::net::IpAddr,
) -> Result<Response<ApiBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The client address is on every request line (operators of an internet-facing
    // service need to know who asked); the key id is added once authenticated.
    let span = tracing::info_span!("request", %client, %method, path = %crate::sanitize::shown(&path, 64), key_id = tracing::field::Empty);
    let peer = Peer {
        client,
        key: crate::address::address_key(client),
    };
    let label = route(&path).map_or(metrics::Route::Other, |(r, _)| r.metric());
    // Logged and counted when the last holder drops it (for a stream: when it ends).
    let trace = Trace::new(state.metrics.clone(), label, span.clone());
    let origin = cors::allowed_origin(req.headers(), &state.api.cors_allowed_origins).cloned();
    let response = async {
        let result = dispatch(req, &state, peer, &trace).await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        if let Some(o) = origin {
            if !response
                .headers()
                .contains_key("access-control-allow-origin")
            {
                cors::add_response_headers(response.headers_mut(), o);
            }
        }
        trace.set_status(response.status().as_u16());
        response
    }
    .instrument(span)
    .await;
    Ok(response)
}

/// Who is on the other end of the connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// The address itself, for logs.
    client: std::net::IpAddr,
    /// What per-address limits count (`address::address_key`).
    key: std::net::IpAddr,
}

async fn dispatch(
    req: Request<Incoming>,
    state: &AppState,
    peer: Peer,
    trace: &Arc<Trace>,
) -> Result<Response<ApiBody>, ApiError> {
    // SECURITY: request bodies must declare their length. Transfer-Encoding is where
    // request smuggling lives (hyper quietly drops a Content-Length sent alongside it, as
    // RFC 9112 §6.3 permits), and a known length lets the body cap apply up front. The
    // connection is closed so bytes after this request are never read as another one.
    if req.headers().contains_key(TRANSFER_ENCODING) {
        return Err(ApiError::length_required().closing());
    }
    let path = req.uri().path();
    let Some((route, allowed)) = route(path) else {
        return Err(ApiError::unknown_url(req.method().as_str(), path));
    };
    if req.method() == hyper::Method::OPTIONS {
        if let Some(origin) = cors::allowed_origin(req.headers(), &state.api.cors_allowed_origins) {
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            *r.status_mut() = StatusCode::NO_CONTENT;
            secure_headers(r.headers_mut());
            cors::add_preflight_headers(r.headers_mut(), origin.clone(), allowed);
            return Ok(r);
        }
    }
    if !allowed.split(", ").any(|m| m == req.method().as_str()) {
        return Err(ApiError::method_not_allowed(allowed));
    }
    let principal = authenticate(&req, state, peer).await?;
    tracing::Span::current().record("key_id", tracing::field::display(&principal.key_id));
    trace.set_key(principal.key_id.clone());
    let mut response = match route {
        Route::Models => Ok(json_response(StatusCode::OK, &models_list(state))),
        Route::Model(id) => {
            if state.api.serves(id) {
                Ok(json_response(StatusCode::OK, &model_object(state, id)))
            } else {
                Err(ApiError::model_not_found(id))
            }
        }
        Route::Chat => generate::generate(req, state, Endpoint::Chat, &principal, trace).await,
        Route::Completions => {
            generate::generate(req, state, Endpoint::Completion, &principal, trace).await
        }
        Route::Responses => {
            generate::generate(req, state, Endpoint::Responses, &principal, trace).await
        }
        Route::InputTokens => {
            generate::generate(req, state, Endpoint::InputTokens, &principal, trace).await
        }
        Route::StoredResponse => Err(ApiError::response_not_stored()),
        Route::Embeddings => embeddings::handle(req, state, &principal, trace).await,
    }?;
    if let Some((limit, remaining)) = principal.rate {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit-requests", HeaderValue::from(limit));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from(remaining),
        );
    }
    Ok(response)
}

async fn authenticate(
    req: &Request<Incoming>,
    state: &AppState,
    peer: Peer,
) -> Result<Principal, ApiError> {
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    state
        .keys
        .authenticate(header, peer.key)
        .await
        .map_err(|refusal| {
            let e = &refusal.error;
            use crate::auth::AuthError::*;
            match e {
                Missing => state.metrics.auth_failure(AuthFailure::Missing),
                Malformed => state.metrics.auth_failure(AuthFailure::Malformed),
                Invalid => state.metrics.auth_failure(AuthFailure::Invalid),
                Expired => state.metrics.auth_failure(AuthFailure::Expired),
                RateLimited { .. } => state.metrics.rate_limited(RateLimit::Requests),
                TooManyFailures { .. } => state.metrics.rate_limited(RateLimit::Address),
                VerifierBusy { .. } => state.metrics.rate_limited(RateLimit::Verifier),
                Internal => {}
            }
            if matches!(e, RateLimited { .. }) {
                // The key proved itself; this is its budget, not a failed login.
                tracing::info!(reason = e.reason(), "request refused");
            } else {
                // SECURITY: the trail names the address, the id (if well-formed) and
                // the reason, never the secret; rate-limited per address.
                state.auth_audit.record(
                    peer.client,
                    peer.key,
                    refusal.key_id.as_deref(),
                    e.reason(),
                );
            }
            ApiError::from_auth(e)
        })
}

/// The model, then each alias as its own entry (clients that check the name they
/// hard-code against this list find it).
fn models_list(state: &AppState) -> Value {
    let names = std::iter::once(&state.api.model_id).chain(&state.api.model_aliases);
    let data: Vec<Value> = names.map(|n| model_object(state, n)).collect();
    json!({"object": "list", "data": data})
}

fn model_object(state: &AppState, name: &str) -> Value {
    json!({
        "id": name,
        "object": "model",
        "created": state.created,
        "owned_by": "llama-gguf-inference",
    })
}

/// 12 bytes from the system CSPRNG as 24 hex digits: the random part of response and
/// tool-call ids.
/// SECURITY: a failing random source is a 500, never an all-zero (guessable, colliding)
/// id.
pub(crate) fn random_hex() -> Result<String, ApiError> {
    let mut b = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(|_| {
        tracing::error!("the system random source failed");
        ApiError::internal()
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// SECURITY: responses are never cached by intermediaries or sniffed as another type.
pub fn secure_headers(h: &mut HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<ApiBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    secure_headers(h);
    r
}

pub fn error_response(e: &ApiError) -> Response<ApiBody> {
    let mut r = json_response(e.status, &e.body());
    let h = r.headers_mut();
    if let Some(secs) = e.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = e.allow {
        h.insert(ALLOW, HeaderValue::from_static(allow));
    }
    if e.close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        h.insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    r
}
