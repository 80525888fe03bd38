//! The OpenAI API, in request order: route → authenticate → read body → validate →
//! engine → respond. Only these routes exist:
//!
//! | method | path                     |
//! |--------|--------------------------|
//! | POST   | /v1/chat/completions     |
//! | POST   | /v1/completions          |
//! | POST   | /v1/embeddings           |
//! | GET    | /v1/models               |
//! | GET    | /v1/models/{id}          |
//!
//! Anything else is 404, a known path with the wrong method 405; every error is
//! OpenAI-shaped JSON (see `error.rs`).
//!
//! SECURITY: unknown paths are answered before authentication (they reveal nothing), but
//! no body is read and no engine work happens before the caller is authenticated. The
//! body is read under a size cap and a deadline; a full engine queue is a 503, never a wait.

pub mod chat;
pub mod check;
pub mod choice;
pub mod completions;
pub mod cors;
pub mod embeddings;
pub mod error;
pub mod generation;
pub mod json;
pub mod schema;
pub mod stream;
pub mod tools;

use crate::auth::{KeyStore, Principal};
use crate::config::LimitsConfig;
use crate::engine::constraint::Constraint;
use crate::engine::{EngineHandle, Event, GenerateRequest, Usage};
use crate::metrics::{Metrics, Trace};
use bytes::Bytes;
use chat::ChatCompletionRequest;
use choice::Kind;
use completions::CompletionRequest;
use error::ApiError;
use generation::{Generation, OutputSchema};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE,
    RETRY_AFTER, TRANSFER_ENCODING,
};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stream::{ChunkMeta, SseBody, StreamShape};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

pub type ApiBody = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub keys: KeyStore,
    pub engine: EngineHandle,
    pub limits: LimitsConfig,
    pub model_id: String,
    /// Unix time the model was registered (server start), for /v1/models.
    pub created: u64,
    pub body_read_timeout: Duration,
    /// Exact origins allowed to call the API from a browser (empty: no CORS).
    pub cors_allowed_origins: Vec<String>,
    /// `auth.max_concurrent_generations_per_key`, for the 429 message.
    pub generations_per_key: usize,
    /// Stable per model file and build (OpenAI's `system_fingerprint`).
    pub system_fingerprint: String,
    /// POST /v1/embeddings is served (`model.embeddings`).
    pub embeddings: bool,
    /// Request counts, latency histograms and the per-request log line.
    pub metrics: Arc<Metrics>,
    /// `logging.log_prompts`: log each request's prompt (off by default).
    pub log_prompts: bool,
    /// The rate-limited `auth failed` trail.
    pub auth_audit: crate::auth::audit::AuthAudit,
    /// Keys the end-user `user_tag` HMAC (`logging.user_tag_key_file`).
    pub user_tag_key: ring::hmac::Key,
}

impl AppState {
    /// The state every connection shares, from the resolved settings (the one place
    /// start-up and the in-process tests build it).
    pub fn new(
        settings: &crate::settings::Settings,
        keys: KeyStore,
        engine: EngineHandle,
        metrics: Arc<Metrics>,
        user_tag_key: ring::hmac::Key,
        system_fingerprint: String,
    ) -> AppState {
        let api = &settings.api;
        AppState {
            keys,
            engine,
            limits: settings.limits.clone(),
            model_id: api.model_id.clone(),
            created: unix_now(),
            body_read_timeout: api.body_read_timeout,
            cors_allowed_origins: api.cors_allowed_origins.clone(),
            generations_per_key: settings.auth.generations_per_key as usize,
            system_fingerprint,
            embeddings: api.embeddings,
            metrics,
            log_prompts: api.log_prompts,
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
    Models,
    Model(&'a str),
}

impl Route<'_> {
    /// The metrics label (a fixed set; see `metrics::ROUTES`).
    fn label(&self) -> &'static str {
        match self {
            Route::Chat => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Models => "models",
            Route::Model(_) => "model",
        }
    }
}

fn route(path: &str) -> Option<(Route<'_>, &'static str)> {
    match path {
        "/v1/chat/completions" => Some((Route::Chat, "POST")),
        "/v1/completions" => Some((Route::Completions, "POST")),
        "/v1/embeddings" => Some((Route::Embeddings, "POST")),
        "/v1/models" => Some((Route::Models, "GET")),
        _ => path
            .strip_prefix("/v1/models/")
            .filter(|id| !id.is_empty())
            .map(|id| (Route::Model(id), "GET")),
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
    let span = tracing::info_span!("request", %client, %method, path = %truncate(&path, 64), key_id = tracing::field::Empty);
    let peer = Peer {
        client,
        key: crate::http::address_key(client),
    };
    let label = route(&path).map_or("other", |(r, _)| r.label());
    // Logged and counted when the last holder drops it (for a stream: when it ends).
    let trace = Trace::new(state.metrics.clone(), label, span.clone());
    let origin = cors::allowed_origin(req.headers(), &state.cors_allowed_origins).cloned();
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

fn truncate(s: &str, n: usize) -> String {
    s.chars()
        .take(n)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Who is on the other end of the connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// The address itself, for logs.
    client: std::net::IpAddr,
    /// What per-address limits count (`http::address_key`).
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
        if let Some(origin) = cors::allowed_origin(req.headers(), &state.cors_allowed_origins) {
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            *r.status_mut() = StatusCode::NO_CONTENT;
            secure_headers(r.headers_mut());
            cors::add_preflight_headers(r.headers_mut(), origin.clone(), allowed);
            return Ok(r);
        }
    }
    if req.method().as_str() != allowed {
        return Err(ApiError::method_not_allowed(allowed));
    }
    let principal = authenticate(&req, state, peer).await?;
    tracing::Span::current().record("key_id", tracing::field::display(&principal.key_id));
    trace.set_key(principal.key_id.clone());
    let mut response = match route {
        Route::Models => Ok(json_response(StatusCode::OK, &models_list(state))),
        Route::Model(id) => {
            if id == state.model_id {
                Ok(json_response(StatusCode::OK, &model_object(state)))
            } else {
                Err(ApiError::model_not_found(id))
            }
        }
        Route::Chat => generate(req, state, Kind::Chat, &principal, trace).await,
        Route::Completions => generate(req, state, Kind::Completion, &principal, trace).await,
        Route::Embeddings => embeddings(req, state, &principal, trace).await,
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
                Missing => state.metrics.auth_failure("missing"),
                Malformed => state.metrics.auth_failure("malformed"),
                Invalid => state.metrics.auth_failure("invalid"),
                Expired => state.metrics.auth_failure("expired"),
                RateLimited { .. } => state.metrics.rate_limited("requests"),
                TooManyFailures { .. } => state.metrics.rate_limited("address"),
                VerifierBusy { .. } => state.metrics.rate_limited("verifier"),
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

fn models_list(state: &AppState) -> Value {
    json!({"object": "list", "data": [model_object(state)]})
}

fn model_object(state: &AppState) -> Value {
    json!({
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "llama-gguf-inference",
    })
}

/// Read the whole body: JSON content type, size cap, deadline.
async fn read_body(req: Request<Incoming>, state: &AppState) -> Result<Bytes, ApiError> {
    let headers = req.headers();
    if !is_json(headers) {
        return Err(ApiError::unsupported_media_type());
    }
    let limit = state.limits.max_body_bytes;
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(ApiError::payload_too_large(limit));
        }
    }
    let body = Limited::new(req.into_body(), limit as usize);
    match tokio::time::timeout(state.body_read_timeout, body.collect()).await {
        Err(_) => Err(ApiError::body_timeout()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::payload_too_large(limit))
        }
        Ok(Err(_)) => Err(ApiError::bad_request("The request body could not be read")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

async fn generate(
    req: Request<Incoming>,
    state: &AppState,
    kind: Kind,
    principal: &Principal,
    trace: &Arc<Trace>,
) -> Result<Response<ApiBody>, ApiError> {
    if !state.engine.stats.is_ready() {
        return Err(ApiError::not_ready());
    }
    // Tokens-per-minute: a key still in debt from earlier requests waits.
    check_token_budget(principal).inspect_err(|e| {
        if e.status == StatusCode::TOO_MANY_REQUESTS {
            state.metrics.rate_limited("tokens");
        }
    })?;
    let body = read_body(req, state).await?;
    let generation: Generation = match kind {
        Kind::Chat => json::parse_json::<ChatCompletionRequest>(&body)?.validate(&state.limits)?,
        Kind::Completion => {
            json::parse_json::<CompletionRequest>(&body)?.validate(&state.limits)?
        }
    };
    drop(body);
    if generation.model != state.model_id {
        return Err(ApiError::model_not_found(&generation.model));
    }
    if let Some(user) = &generation.user {
        // SECURITY: the end-user id is the client's data; only a short hash is logged.
        tracing::info!(user_tag = %user_tag(&state.user_tag_key, user), "end-user tag");
    }
    if state.log_prompts {
        // SECURITY: only with `logging.log_prompts = true`, which the operator chose.
        tracing::info!(prompt = ?generation.prompt, "prompt (logging.log_prompts)");
    }
    // SECURITY: a key's generations in progress are capped (each choice of `n` is one),
    // so one key within its rate limits cannot fill the shared engine queue. The slots
    // live as long as the request (for a stream: until its body is dropped).
    let slots = principal
        .generations
        .clone()
        .try_acquire_many_owned(generation.n)
        .map_err(|_| {
            state.metrics.rate_limited("generations");
            ApiError::too_many_generations(state.generations_per_key)
        })?;
    let constraint = compile_constraint(state, generation.json_schema.as_ref()).await?;
    let mut receivers = Vec::with_capacity(generation.n as usize);
    for choice in 0..generation.n {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut sampling = generation.sampling;
        // Choices differ by seed (consecutive, so a seeded request stays reproducible).
        sampling.seed = sampling.seed.wrapping_add(choice);
        state
            .engine
            .submit(GenerateRequest {
                key_id: principal.key_id.clone(),
                owner: principal.owner.clone(),
                prompt: generation.prompt.clone(),
                max_tokens: generation.max_tokens,
                default_max_tokens: state.limits.max_tokens,
                stop: generation.stop.clone(),
                sampling,
                constraint: constraint.as_ref().map(Constraint::fork),
                logit_bias: generation.logit_bias.clone(),
                logprobs: generation.logprobs,
                events: tx,
                deadline: Duration::from_secs(state.limits.max_generation_secs),
            })
            .map_err(|_| ApiError::overloaded(1))?;
        receivers.push(rx);
    }
    // Wait for the engine to accept the prompt (or refuse it) before choosing a status.
    let mut prompt_tokens = 0;
    for rx in &mut receivers {
        prompt_tokens = match rx.recv().await {
            Some(Event::Started { prompt_tokens }) => prompt_tokens,
            Some(Event::Failed(e)) => return Err(ApiError::from_engine(&e)),
            Some(_) | None => return Err(ApiError::internal()),
        };
    }
    // Charged as OpenAI counts it: prompt tokens plus the completion budget asked for.
    let token_budget = principal.tokens.as_ref().and_then(|bucket| {
        let mut b = bucket.lock().ok()?;
        let asked = generation
            .max_tokens
            .unwrap_or(state.limits.max_tokens)
            .saturating_mul(generation.n);
        b.charge(prompt_tokens.saturating_add(asked), Instant::now());
        Some((b.capacity(), b.remaining()))
    });
    let meta = ChunkMeta {
        id: response_id(kind),
        created: unix_now(),
        model: state.model_id.clone(),
        kind,
        include_usage: generation.include_usage,
        system_fingerprint: state.system_fingerprint.clone(),
    };
    let shape = StreamShape {
        logprobs: generation.logprobs.is_some(),
        tools: generation.tools.is_some(),
    };
    let mut response = if generation.stream {
        let mut response =
            Response::new(SseBody::new(meta, shape, receivers, slots, trace.clone()).boxed());
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        secure_headers(h);
        response
    } else {
        let r = collect_completion(meta, shape, receivers, trace).await?;
        drop(slots);
        r
    };
    if let Some((limit, remaining)) = token_budget {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit-tokens", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining-tokens", HeaderValue::from(remaining));
    }
    Ok(response)
}

/// Compile the output constraint (JSON schema or tools) on the blocking pool, within
/// `constraints.compile_timeout_ms`; a schema that does not compile is a 400 naming it.
/// SECURITY: after the key's generation slots are taken, so a key at its cap cannot make
/// the server compile; never on the engine thread.
async fn compile_constraint(
    state: &AppState,
    schema: Option<&OutputSchema>,
) -> Result<Option<Constraint>, ApiError> {
    let Some(s) = schema else {
        return Ok(None);
    };
    let compiler = state.engine.constraints().ok_or_else(ApiError::not_ready)?;
    let timeout_ms = compiler.settings().compile_timeout.as_millis();
    compiler
        .compile(s.schema.clone())
        .await
        .map(Some)
        .map_err(|e| ApiError::from_compile(&e, s.param, timeout_ms))
}

fn check_token_budget(principal: &Principal) -> Result<(), ApiError> {
    if let Some(bucket) = &principal.tokens {
        let mut b = bucket.lock().map_err(|_| ApiError::internal())?;
        if let Err(wait) = b.check(Instant::now()) {
            return Err(ApiError::token_rate_limited(b.capacity(), wait));
        }
    }
    Ok(())
}

/// A short, stable tag for an end-user id: the first 8 bytes of HMAC-SHA256 under the
/// deployment's `user_tag_key`, in hex. SECURITY: keyed, so it cannot be reversed by
/// hashing guessed ids.
fn user_tag(key: &ring::hmac::Key, user: &str) -> String {
    let d = ring::hmac::sign(key, user.as_bytes());
    d.as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Wait for every choice (they run in parallel on the engine) and build the response.
async fn collect_completion(
    meta: ChunkMeta,
    shape: StreamShape,
    receivers: Vec<UnboundedReceiver<Event>>,
    trace: &Trace,
) -> Result<Response<ApiBody>, ApiError> {
    let mut choices = Vec::with_capacity(receivers.len());
    let mut total = Usage::default();
    for (i, mut rx) in receivers.into_iter().enumerate() {
        let mut text = String::new();
        let mut lps = Vec::new();
        let (reason, usage) = loop {
            match rx.recv().await {
                Some(Event::Text(t)) => {
                    trace.first_token();
                    text.push_str(&t)
                }
                Some(Event::Token(t)) => {
                    trace.first_token();
                    lps.push(t)
                }
                Some(Event::Finished { reason, usage }) => break (reason, usage),
                Some(Event::Failed(e)) => return Err(ApiError::from_engine(&e)),
                Some(Event::Started { .. }) => {}
                None => return Err(ApiError::internal()),
            }
        };
        stream::add_usage(&mut total, &usage, i == 0);
        trace.add_tokens(
            if i == 0 { usage.prompt_tokens } else { 0 },
            usage.completion_tokens,
        );
        let logprobs = if shape.logprobs {
            choice::logprobs_json(meta.kind, &lps, &mut 0)
        } else {
            Value::Null
        };
        let (body, called) = match meta.kind {
            Kind::Chat if shape.tools => {
                let (mut m, called) = choice::tool_message(&text, false);
                m.insert("role".into(), json!("assistant"));
                m.insert("refusal".into(), Value::Null);
                (("message", Value::Object(m)), called)
            }
            Kind::Chat => (
                (
                    "message",
                    json!({"role": "assistant", "content": text, "refusal": null}),
                ),
                false,
            ),
            Kind::Completion => (("text", Value::String(text)), false),
        };
        let mut c = serde_json::Map::new();
        c.insert("index".into(), json!(i));
        c.insert(body.0.into(), body.1);
        c.insert("logprobs".into(), logprobs);
        c.insert(
            "finish_reason".into(),
            json!(choice::finish_str(reason, called)),
        );
        choices.push(Value::Object(c));
    }
    let body = json!({
        "id": meta.id,
        "object": meta.object(false),
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": meta.system_fingerprint,
        "choices": choices,
        "usage": stream::usage(&total),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// POST /v1/embeddings.
async fn embeddings(
    req: Request<Incoming>,
    state: &AppState,
    principal: &Principal,
    trace: &Trace,
) -> Result<Response<ApiBody>, ApiError> {
    if !state.embeddings {
        return Err(ApiError::unknown_url("POST", "/v1/embeddings"));
    }
    if !state.engine.stats.is_ready() {
        return Err(ApiError::not_ready());
    }
    check_token_budget(principal).inspect_err(|e| {
        if e.status == StatusCode::TOO_MANY_REQUESTS {
            state.metrics.rate_limited("tokens");
        }
    })?;
    let slot = principal
        .generations
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            state.metrics.rate_limited("generations");
            ApiError::too_many_generations(state.generations_per_key)
        })?;
    let body = read_body(req, state).await?;
    let e = json::parse_json::<embeddings::EmbeddingsRequest>(&body)?.validate(&state.limits)?;
    drop(body);
    if e.model != state.model_id {
        return Err(ApiError::model_not_found(&e.model));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    state
        .engine
        .submit_embed(crate::engine::EmbedRequest {
            key_id: principal.key_id.clone(),
            inputs: e.inputs,
            reply: tx,
            deadline: Duration::from_secs(state.limits.max_generation_secs),
        })
        .map_err(|_| ApiError::overloaded(1))?;
    let result = rx
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|err| match err {
            crate::engine::EngineError::UnknownToken(id) => ApiError::invalid(
                format!("Token id {id} is not in the model's vocabulary"),
                "input",
            ),
            other => ApiError::from_engine(&other),
        })?;
    drop(slot);
    trace.add_tokens(result.prompt_tokens, 0);
    if let Some(bucket) = &principal.tokens {
        if let Ok(mut b) = bucket.lock() {
            b.charge(result.prompt_tokens, Instant::now());
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &embeddings::response(&state.model_id, &result, e.base64),
    ))
}

/// 12 bytes from the system CSPRNG as 24 hex digits: the random part of response and
/// tool-call ids.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn response_id(kind: Kind) -> String {
    let hex = random_hex();
    match kind {
        Kind::Chat => format!("chatcmpl-{hex}"),
        Kind::Completion => format!("cmpl-{hex}"),
    }
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
