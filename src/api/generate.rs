//! Generation (chat completions, completions, responses, and the Responses token count):
//! one request path for every generating endpoint, from the admission gate through the
//! constraint compile and the engine queue to the answer — one JSON body, or an SSE
//! stream (`stream.rs`), in the endpoint's wire format (`wire/`).
//!
//! SECURITY: the output constraint compiles only after the key's slots are taken, on
//! the blocking pool within its budget, never on the engine thread; a full engine queue
//! is a 503 at once; every choice of `n` is its own engine sequence and slot.

use super::admission::{admit, Admissible, Admitted};
use super::chat::ChatCompletionRequest;
use super::check::OutputSchema;
use super::completions::CompletionRequest;
use super::error::ApiError;
use super::generation::Generation;
use super::json::parse_json;
use super::prompt::use_native_tools;
use super::responses::ResponsesRequest;
use super::stream::SseBody;
use super::wire::completions::{Kind, Meta};
use super::wire::responses::ResponsesWire;
use super::wire::{self, Shape, Wire};
use super::{json_response, random_hex, secure_headers, unix_now, ApiBody, AppState};
use crate::auth::Principal;
use crate::engine::constraint::Constraint;
use crate::engine::reasoning::Plan;
use crate::engine::{Event, GenerateRequest, Prompt};
use crate::metrics::Trace;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
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

/// The generating endpoints: one request path, three request and answer shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Chat,
    Completion,
    Responses,
    /// `POST /v1/responses/input_tokens`: a Responses body, counted, not generated.
    InputTokens,
}

pub(super) async fn generate(
    req: Request<Incoming>,
    state: &AppState,
    endpoint: Endpoint,
    principal: &Principal,
    trace: &Arc<Trace>,
) -> Result<Response<ApiBody>, ApiError> {
    let Admitted {
        request: mut generation,
        slots,
    } = admit(req, state, principal, |body, limits| match endpoint {
        Endpoint::Chat => parse_json::<ChatCompletionRequest>(body)?.validate(limits),
        Endpoint::Completion => parse_json::<CompletionRequest>(body)?.validate(limits),
        Endpoint::Responses | Endpoint::InputTokens => {
            parse_json::<ResponsesRequest>(body)?.validate(limits)
        }
    })
    .await?;
    let count_only = endpoint == Endpoint::InputTokens;
    let reasoning = reasoning_plan(endpoint, &generation, &state.api)?;
    // The effort reaches the template too (gpt-oss's `Reasoning:` line), for a model
    // that thinks.
    if let (Some(_), Prompt::Chat { effort, .. }) = (reasoning, &mut generation.prompt) {
        *effort = generation.reasoning_effort.map(|e| e.effort);
    }
    // A model family's own tool syntax replaces the generic envelope (`prompt.rs`).
    let tools = match state.api.tool_syntax {
        Some(syntax) => use_native_tools(&mut generation, syntax)?,
        None => None,
    };
    if let Some(user) = &generation.user {
        // SECURITY: the end-user id is the client's data; only a short hash is logged.
        tracing::info!(user_tag = %user_tag(&state.user_tag_key, user), "end-user tag");
    }
    if state.api.log_prompts {
        // SECURITY: only with `logging.log_prompts = true`, which the operator chose.
        tracing::info!(prompt = ?generation.prompt, "prompt (logging.log_prompts)");
    }
    // The response's random id part first: a failing random source costs no engine work.
    let random = random_hex()?;
    // Counting needs no constraint: nothing is sampled.
    let constraint = match count_only {
        true => None,
        false => compile_constraint(state, generation.json_schema.as_ref()).await?,
    };
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
                count_only,
                reasoning,
                tools,
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
    // Charged as OpenAI counts it: prompt tokens plus the completion budget asked for
    // (a count generates nothing).
    let token_budget = principal.tokens.as_ref().and_then(|bucket| {
        let mut b = bucket.lock().ok()?;
        let asked = match count_only {
            true => 0,
            false => generation
                .max_tokens
                .unwrap_or(state.limits.max_tokens)
                .saturating_mul(generation.n),
        };
        b.charge(prompt_tokens.saturating_add(asked), Instant::now());
        Some((b.capacity(), b.remaining()))
    });
    let shape = Shape {
        logprobs: generation.logprobs.is_some(),
        tools: generation.tools.is_some(),
        syntax: tools.map(|plan| plan.syntax),
        // Only a native syntax reads argument text by the declared schemas.
        functions: generation
            .json_schema
            .as_ref()
            .and_then(|s| s.native.as_ref())
            .map(|call| call.functions.clone())
            .unwrap_or_default(),
        stream: generation.stream,
    };
    let created = unix_now();
    let chunks = |kind: Kind| Meta {
        id: match kind {
            Kind::Chat => format!("chatcmpl-{random}"),
            Kind::Completion => format!("cmpl-{random}"),
        },
        created,
        model: state.api.model_id.clone(),
        kind,
        include_usage: generation.include_usage,
        system_fingerprint: state.system_fingerprint.clone(),
        random: random.clone(),
    };
    let answer = Answer {
        shape,
        receivers,
        slots,
        trace,
    };
    let mut response = match endpoint {
        Endpoint::Chat => answer.send(chunks(Kind::Chat)).await?,
        Endpoint::Completion => answer.send(chunks(Kind::Completion)).await?,
        Endpoint::Responses => {
            let echo = generation.echo.take().unwrap_or_default();
            let model = state.api.model_id.clone();
            answer
                .send(ResponsesWire::new(random, created, model, echo))
                .await?
        }
        Endpoint::InputTokens => {
            drop(answer);
            let body = json!({"object": "response.input_tokens", "input_tokens": prompt_tokens});
            json_response(StatusCode::OK, &body)
        }
    };
    if let Some((limit, remaining)) = token_budget {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit-tokens", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining-tokens", HeaderValue::from(remaining));
    }
    Ok(response)
}

/// A generation the engine has started, to be answered in some wire format.
struct Answer<'a> {
    shape: Shape,
    receivers: Vec<UnboundedReceiver<Event>>,
    /// The key's generation slots: held by a stream until it ends, released here for a
    /// whole body once it is complete.
    slots: tokio::sync::OwnedSemaphorePermit,
    trace: &'a Arc<Trace>,
}

impl Answer<'_> {
    /// One JSON body once every choice finished, or an SSE stream as they run.
    async fn send<W: Wire>(self, mut wire: W) -> Result<Response<ApiBody>, ApiError> {
        if self.shape.stream {
            let body = SseBody::new(
                wire,
                self.shape,
                self.receivers,
                self.slots,
                self.trace.clone(),
            );
            let mut response = Response::new(body.boxed());
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            secure_headers(h);
            Ok(response)
        } else {
            let body = wire::collect(&mut wire, self.shape, self.receivers, self.trace).await?;
            drop(self.slots);
            Ok(json_response(StatusCode::OK, &body))
        }
    }
}

/// The reasoning split for this request: chat and Responses requests to a reasoning
/// model get one (with the thinking budget of their effort); raw completions never do.
/// An effort the model cannot act on (it does not reason) is a 400 naming the field.
fn reasoning_plan(
    endpoint: Endpoint,
    generation: &Generation,
    api: &crate::settings::ApiSettings,
) -> Result<Option<Plan>, ApiError> {
    let effort = generation.reasoning_effort;
    match (endpoint, api.reasoning, effort) {
        (Endpoint::Completion, _, _) => Ok(None),
        (_, None, Some(e)) => Err(ApiError::invalid(
            format!(
                "This model does not think separately from its answer (model.reasoning_format), so `{}` cannot act; leave it out",
                e.param
            ),
            e.param,
        )),
        (_, None, None) => Ok(None),
        (_, Some(format), effort) => Ok(Some(Plan {
            format,
            budget: api.reasoning_budgets.for_request(
                effort.map(|e| e.effort),
                generation
                    .tools
                    .as_ref()
                    .is_some_and(|t| t.choice != crate::api::tools::Choice::Auto),
            ),
        })),
    }
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
    let compiled = match &s.native {
        Some(call) => {
            let special = |marker: &str| compiler.special_token(marker);
            let grammar = call
                .syntax
                .grammar(&call.functions, call.max_calls, &special);
            compiler.compile_call(grammar).await
        }
        None => compiler.compile(s.schema.clone()).await,
    };
    compiled
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
