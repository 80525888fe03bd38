//! The one internal request model: every generating endpoint (chat completions,
//! completions, responses) translates its body into a `Generation`, which the admission path and
//! the engine take from there. Everything in it is validated.

use super::check::{OutputSchema, RequestedEffort};
use super::tools::ToolSet;
use crate::engine::{Prompt, Sampling};

/// A validated generation request, ready for the engine.
#[derive(Debug)]
pub struct Generation {
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices to generate (`n`), each its own sequence.
    pub n: u32,
    /// JSON Schema the output is constrained to (response_format or tools); compiled by
    /// `engine::constraint` before the request is queued.
    pub json_schema: Option<OutputSchema>,
    pub logit_bias: Vec<(i32, f32)>,
    /// Alternatives per token when log-probabilities were asked for.
    pub logprobs: Option<u32>,
    /// The tools the model may call; its answer is parsed into `tool_calls`.
    pub tools: Option<ToolSet>,
    /// `user` / `safety_identifier`, for the log as a hashed tag only.
    pub user: Option<String>,
    /// `reasoning_effort` (chat) / `reasoning.effort` (Responses).
    pub reasoning_effort: Option<RequestedEffort>,
    /// The request's settings as the Responses API echoes them in its response object
    /// (None for the other endpoints).
    pub echo: Option<serde_json::Map<String, serde_json::Value>>,
}
