//! The one admission gate every engine endpoint passes, in this order:
//! ready → token budget → the key's generation slot → body → parse and validate → model
//! → the rest of the slots (one per choice of `n`).
//!
//! SECURITY: each step is cheaper than the next, and a request stops at the first it
//! fails: a key that is over its token budget or already at
//! `auth.max_concurrent_generations_per_key` is answered 429 before its body is even
//! read, so it cannot make the server read, parse or compile anything. The slots live as
//! long as the request (for a stream, until its body is dropped).

use super::error::ApiError;
use super::AppState;
use crate::auth::Principal;
use crate::config::LimitsConfig;
use crate::metrics::RateLimit;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

/// What the gate needs to know of a validated request.
pub(super) trait Admissible {
    /// The `model` it names (must be the served one).
    fn model(&self) -> &str;
    /// Generation slots it takes: one per choice.
    fn choices(&self) -> u32 {
        1
    }
}

/// A request through the gate: validated, holding its slots.
pub(super) struct Admitted<T> {
    pub request: T,
    pub slots: OwnedSemaphorePermit,
}

/// Run the gate; `parse` turns the body into the endpoint's validated request.
pub(super) async fn admit<T: Admissible>(
    req: Request<Incoming>,
    state: &AppState,
    principal: &Principal,
    parse: impl FnOnce(&[u8], &LimitsConfig) -> Result<T, ApiError>,
) -> Result<Admitted<T>, ApiError> {
    if !state.engine.stats.is_ready() {
        return Err(ApiError::not_ready());
    }
    check_token_budget(principal).inspect_err(|e| {
        if e.status == StatusCode::TOO_MANY_REQUESTS {
            state.metrics.rate_limited(RateLimit::Tokens);
        }
    })?;
    let mut slots = take_slots(state, principal, 1)?;
    let body = read_body(req, state).await?;
    let request = parse(&body, &state.limits)?;
    drop(body);
    if !state.api.serves(request.model()) {
        return Err(ApiError::model_not_found(request.model()));
    }
    if request.choices() > 1 {
        slots.merge(take_slots(state, principal, request.choices() - 1)?);
    }
    Ok(Admitted { request, slots })
}

/// SECURITY: a key's generations in progress are capped, so one key within its rate
/// limits cannot fill the shared engine queue.
fn take_slots(
    state: &AppState,
    principal: &Principal,
    n: u32,
) -> Result<OwnedSemaphorePermit, ApiError> {
    principal
        .generations
        .clone()
        .try_acquire_many_owned(n)
        .map_err(|_| {
            state.metrics.rate_limited(RateLimit::Generations);
            ApiError::too_many_generations(state.generations_per_key)
        })
}

/// Tokens-per-minute: a key still in debt from earlier requests waits.
fn check_token_budget(principal: &Principal) -> Result<(), ApiError> {
    if let Some(bucket) = &principal.tokens {
        let mut b = bucket.lock().map_err(|_| ApiError::internal())?;
        if let Err(wait) = b.check(Instant::now()) {
            return Err(ApiError::token_rate_limited(b.capacity(), wait));
        }
    }
    Ok(())
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
    match tokio::time::timeout(state.api.body_read_timeout, body.collect()).await {
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
