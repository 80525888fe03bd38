//! Generation (chat completions and completions): one request path for both endpoints,
//! from the admission gate through the constraint compile and the engine queue to the
//! answer — one JSON body, or an SSE stream (`stream.rs`).
//!
//! SECURITY: the output constraint compiles only after the key's slots are taken, on
//! the blocking pool within its budget, never on the engine thread; a full engine queue
//! is a 503 at once; every choice of `n` is its own engine sequence and slot.

use super::admission::{admit, Admissible, Admitted};
use super::chat::ChatCompletionRequest;
use super::check::OutputSchema;
use super::choice::{self, Kind};
use super::completions::CompletionRequest;
use super::error::ApiError;
use super::generation::Generation;
use super::json::parse_json;
use super::stream::{self, ChunkMeta, SseBody, StreamShape};
use super::{json_response, random_hex, secure_headers, unix_now, ApiBody, AppState};
use crate::auth::Principal;
use crate::engine::constraint::Constraint;
use crate::engine::{Event, GenerateRequest, Usage};
use crate::metrics::Trace;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

impl Admissible for Generation {
    fn model(&self) -> &str {
        &self.model
    }

    fn choices(&self) -> u32 {
        self.n
    }
}

pub(super) async fn generate(
    req: Request<Incoming>,
    state: &AppState,
    kind: Kind,
    principal: &Principal,
    trace: &Arc<Trace>,
) -> Result<Response<ApiBody>, ApiError> {
    let Admitted {
        request: generation,
        slots,
    } = admit(req, state, principal, |body, limits| match kind {
        Kind::Chat => parse_json::<ChatCompletionRequest>(body)?.validate(limits),
        Kind::Completion => parse_json::<CompletionRequest>(body)?.validate(limits),
    })
    .await?;
    if let Some(user) = &generation.user {
        // SECURITY: the end-user id is the client's data; only a short hash is logged.
        tracing::info!(user_tag = %user_tag(&state.user_tag_key, user), "end-user tag");
    }
    if state.log_prompts {
        // SECURITY: only with `logging.log_prompts = true`, which the operator chose.
        tracing::info!(prompt = ?generation.prompt, "prompt (logging.log_prompts)");
    }
    // The response's random id part first: a failing random source costs no engine work.
    let random = random_hex()?;
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
        id: response_id(kind, &random),
        created: unix_now(),
        model: state.model_id.clone(),
        kind,
        include_usage: generation.include_usage,
        system_fingerprint: state.system_fingerprint.clone(),
        random,
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
                let (mut m, called) = choice::tool_message(&text, false, &meta.random, i);
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

fn response_id(kind: Kind, random: &str) -> String {
    match kind {
        Kind::Chat => format!("chatcmpl-{random}"),
        Kind::Completion => format!("cmpl-{random}"),
    }
}
