//! Request bodies: strict JSON into typed structs, then semantic validation.
//!
//! SECURITY: every body is parsed with `deny_unknown_fields` (an unsupported field is a
//! 400 naming it, never silently ignored), duplicate fields are errors, serde_json's
//! recursion limit bounds nesting, and every number is range-checked with the field
//! named in `param`. The output is the engine's own types, so nothing unvalidated
//! crosses into the engine.

use super::error::ApiError;
use super::schema;
use super::tools::{self, RawTool, RawToolCall, RawToolChoice, ToolSet};
use crate::config::LimitsConfig;
use crate::engine::{ChatMessage, Prompt, Sampling, ToolCall};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    /// Assistant messages: the calls it made.
    #[serde(default)]
    pub tool_calls: Option<Vec<RawToolCall>>,
    /// Tool messages: which call this is the result of.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Echoed back by SDKs that append a response message to the history; must be null.
    #[serde(default)]
    pub refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    /// Always enforced here (sampling is constrained); accepted for compatibility.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// Fields shared by both generation endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<RawMessage>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub logit_bias: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<RawTool>>,
    #[serde(default)]
    pub tool_choice: Option<RawToolChoice>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// llama.cpp-style extensions.
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub repeat_penalty: Option<f64>,
    /// OpenAI: "not used"/ignorable when false; `true` (storing completions) is refused.
    #[serde(default)]
    pub store: Option<bool>,
    /// OpenAI: a processing-tier hint; "auto" and "default" accepted and ignored.
    #[serde(default)]
    pub service_tier: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptField,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub logit_bias: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub repeat_penalty: Option<f64>,
    #[serde(default)]
    pub best_of: Option<i64>,
    #[serde(default)]
    pub suffix: Option<String>,
}

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
}

/// A JSON Schema to constrain the output to, and the request field it came from (named
/// in the 400 when it does not compile).
#[derive(Debug, Clone)]
pub struct OutputSchema {
    pub schema: Value,
    pub param: &'static str,
}

/// Most `logit_bias` entries (OpenAI documents a map; each entry is one sampler bias).
pub const MAX_LOGIT_BIAS: usize = 300;
/// Most alternatives per token for chat `top_logprobs` (OpenAI's own limit).
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Most alternatives per token for legacy completions `logprobs` (OpenAI's own limit).
pub const MAX_COMPLETION_LOGPROBS: i64 = 5;
/// Largest `top_k` extension value.
pub const MAX_TOP_K: i64 = 1000;
/// Largest serialized JSON Schema (response_format), in bytes.
pub const MAX_SCHEMA_BYTES: usize = 32 * 1024;

/// Longest `user` tag accepted (OpenAI documents no limit; we keep it log-friendly).
const MAX_USER_LEN: usize = 256;

/// Deepest JSON nesting accepted. A valid request nests at most 5 levels (body →
/// messages → message → content parts → part); 32 leaves room for clients' extras while
/// keeping the parser's recursion far below serde_json's own limit of 128.
pub const MAX_JSON_DEPTH: usize = 32;

/// Parse a JSON body into `T`, naming the failing field in `param`.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("Request body is not valid UTF-8"));
    }
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request(format!(
            "The JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // SECURITY: a field name is client-chosen; bound what is echoed in `param`.
        let path: String = e.path().to_string().chars().take(64).collect();
        let inner = e.into_inner();
        let msg = describe_json_error(&inner);
        if path.is_empty() || path == "." {
            let param = unknown_field_name(&msg);
            match param {
                Some(p) => ApiError::invalid(msg.clone(), p),
                None => ApiError::bad_request(msg),
            }
        } else {
            ApiError::invalid(msg, path)
        }
    })?;
    de.end()
        .map_err(|_| ApiError::bad_request("Unexpected data after the JSON body"))?;
    Ok(value)
}

/// Deepest `[`/`{` nesting in `body`, ignoring brackets inside strings. A linear scan
/// with no allocation, run before the recursive parser sees the body.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Longest parse-error message returned; serde messages can quote client input.
const MAX_ERROR_MESSAGE: usize = 200;

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    let msg = match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("We could not parse the JSON body of your request: {text}")
        }
        _ => {
            let cut = text.find(" at line ").unwrap_or(text.len());
            format!("Invalid request body: {}", redact_strings(&text[..cut]))
        }
    };
    // SECURITY: bounded, and never a quoted client string (it may be prompt text).
    msg.chars().take(MAX_ERROR_MESSAGE).collect()
}

/// Replace serde's quoted values (`string "..."`) with a placeholder.
fn redact_strings(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + "string \"".len()..];
        rest = match after.find("\", ") {
            Some(end) => &after[end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.chars().take(64).collect())
}

fn check_range(
    value: Option<f64>,
    lo: f64,
    hi: f64,
    default: f64,
    param: &str,
) -> Result<f32, ApiError> {
    match value {
        None => Ok(default as f32),
        Some(v) if v.is_finite() && v >= lo && v <= hi => Ok(v as f32),
        Some(_) => Err(ApiError::invalid(
            format!("`{param}` must be a number between {lo} and {hi}"),
            param,
        )),
    }
}

fn check_max_tokens(
    value: Option<i64>,
    param: &str,
    limits: &LimitsConfig,
) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v >= 1 && v <= limits.max_tokens as i64 => Ok(Some(v as u32)),
        Some(_) => Err(ApiError::invalid(
            format!(
                "`{param}` must be between 1 and {} on this server",
                limits.max_tokens
            ),
            param,
        )),
    }
}

fn check_stop(stop: Option<StopField>, limits: &LimitsConfig) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => vec![],
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    if list.len() > limits.max_stop as usize {
        return Err(ApiError::invalid(
            format!("`stop` may hold at most {} sequences", limits.max_stop),
            "stop",
        ));
    }
    for s in &list {
        if s.is_empty() || s.len() > limits.max_stop_bytes as usize {
            return Err(ApiError::invalid(
                format!(
                    "each stop sequence must be 1 to {} bytes",
                    limits.max_stop_bytes
                ),
                "stop",
            ));
        }
    }
    Ok(list)
}

fn check_n(n: Option<i64>, limits: &LimitsConfig) -> Result<u32, ApiError> {
    match n {
        None => Ok(1),
        Some(v) if v >= 1 && v <= limits.max_n as i64 => Ok(v as u32),
        Some(_) => Err(ApiError::invalid(
            format!("`n` must be between 1 and {} on this server", limits.max_n),
            "n",
        )),
    }
}

pub(crate) fn check_user(user: &Option<String>, param: &str) -> Result<(), ApiError> {
    match user {
        Some(u) if u.len() > MAX_USER_LEN => Err(ApiError::invalid(
            format!("`{param}` must be at most {MAX_USER_LEN} bytes"),
            param,
        )),
        _ => Ok(()),
    }
}

fn check_logit_bias(bias: Option<BTreeMap<String, f64>>) -> Result<Vec<(i32, f32)>, ApiError> {
    let Some(map) = bias else {
        return Ok(vec![]);
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            format!("`logit_bias` may hold at most {MAX_LOGIT_BIAS} tokens"),
            "logit_bias",
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        // Token ids beyond the vocabulary are refused by the engine (it knows the size).
        let id = k.parse::<i32>().ok().filter(|id| *id >= 0).ok_or_else(|| {
            ApiError::invalid(
                "`logit_bias` keys must be token ids (non-negative integers)",
                "logit_bias",
            )
        })?;
        if !(v.is_finite() && (-100.0..=100.0).contains(&v)) {
            return Err(ApiError::invalid(
                "`logit_bias` values must be between -100 and 100",
                "logit_bias",
            ));
        }
        out.push((id, v as f32));
    }
    Ok(out)
}

/// `response_format` → the JSON Schema the output is constrained to (None for text).
fn check_response_format(format: Option<ResponseFormat>) -> Result<Option<Value>, ApiError> {
    let Some(f) = format else {
        return Ok(None);
    };
    match (f.kind.as_str(), f.json_schema) {
        ("text", None) => Ok(None),
        ("json_object", None) => Ok(Some(serde_json::json!({"type": "object"}))),
        ("json_schema", Some(js)) => {
            if !tools::valid_name(&js.name) {
                return Err(ApiError::invalid(
                    "`name` must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
                    "response_format.json_schema.name",
                ));
            }
            let _ = (js.description, js.strict);
            let schema = js
                .schema
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            schema::check(&schema, "response_format.json_schema.schema")?;
            Ok(Some(schema))
        }
        ("json_schema", None) => Err(ApiError::invalid(
            "`json_schema` is required when `type` is json_schema",
            "response_format.json_schema",
        )),
        (_, Some(_)) => Err(ApiError::invalid(
            "`json_schema` is only allowed when `type` is json_schema",
            "response_format.json_schema",
        )),
        _ => Err(ApiError::invalid(
            "`type` must be one of text, json_object, json_schema",
            "response_format.type",
        )),
    }
}

/// The schema the output is constrained to, size-checked.
fn output_schema(
    schema: Option<Value>,
    param: &'static str,
) -> Result<Option<OutputSchema>, ApiError> {
    let Some(schema) = schema else {
        return Ok(None);
    };
    if schema.to_string().len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid(
            format!("The JSON schema is larger than {MAX_SCHEMA_BYTES} bytes"),
            param,
        )
        .with_code("invalid_json_schema"));
    }
    Ok(Some(OutputSchema { schema, param }))
}

fn check_stream(
    stream: Option<bool>,
    options: &Option<StreamOptions>,
) -> Result<(bool, bool), ApiError> {
    let stream = stream.unwrap_or(false);
    match options {
        Some(_) if !stream => Err(ApiError::invalid(
            "`stream_options` is only allowed when `stream` is true",
            "stream_options",
        )),
        Some(o) => Ok((true, o.include_usage)),
        None => Ok((stream, false)),
    }
}

/// Seeds are int64 in the API; llama.cpp takes u32. Fold deterministically. Without a
/// seed, a fresh random one is drawn.
fn seed_of(seed: Option<i64>) -> u32 {
    match seed {
        Some(s) => {
            let u = s as u64;
            (u ^ (u >> 32)) as u32
        }
        None => {
            let mut b = [0u8; 4];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
            u32::from_le_bytes(b)
        }
    }
}

/// The sampling fields both endpoints share.
struct SamplingFields {
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    presence: Option<f64>,
    frequency: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repeat_penalty: Option<f64>,
}

fn sampling(f: SamplingFields) -> Result<Sampling, ApiError> {
    let top_k = match f.top_k {
        None => 0,
        Some(k) if (0..=MAX_TOP_K).contains(&k) => k as u32,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("`top_k` must be between 0 and {MAX_TOP_K}"),
                "top_k",
            ))
        }
    };
    Ok(Sampling {
        temperature: check_range(f.temperature, 0.0, 2.0, 1.0, "temperature")?,
        top_p: check_range(f.top_p, 0.0, 1.0, 1.0, "top_p")?,
        seed: seed_of(f.seed),
        presence_penalty: check_range(f.presence, -2.0, 2.0, 0.0, "presence_penalty")?,
        frequency_penalty: check_range(f.frequency, -2.0, 2.0, 0.0, "frequency_penalty")?,
        top_k,
        min_p: check_range(f.min_p, 0.0, 1.0, 0.0, "min_p")?,
        repeat_penalty: check_range(f.repeat_penalty, 0.5, 2.0, 1.0, "repeat_penalty")?,
    })
}

pub(crate) fn check_text(text: &str, param: &str) -> Result<(), ApiError> {
    // SECURITY: llama.cpp takes C strings; an embedded NUL would silently truncate.
    if text.contains('\0') {
        return Err(ApiError::invalid(
            "Text must not contain NUL characters",
            param,
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    pub fn validate(self, limits: &LimitsConfig) -> Result<Generation, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                "messages",
            ));
        }
        if self.messages.len() > limits.max_messages as usize {
            return Err(ApiError::invalid(
                format!(
                    "`messages` may hold at most {} messages",
                    limits.max_messages
                ),
                "messages",
            ));
        }
        let logprobs = match (self.logprobs, self.top_logprobs) {
            (Some(true), None) => Some(0),
            (Some(true), Some(k)) if (0..=MAX_TOP_LOGPROBS).contains(&k) => Some(k as u32),
            (Some(true), Some(_)) => {
                return Err(ApiError::invalid(
                    format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}"),
                    "top_logprobs",
                ))
            }
            (_, Some(_)) => {
                return Err(ApiError::invalid(
                    "`top_logprobs` requires `logprobs` to be true",
                    "top_logprobs",
                ))
            }
            _ => None,
        };
        if self.store == Some(true) {
            return Err(ApiError::invalid(
                "This server does not store completions; `store` must be false",
                "store",
            ));
        }
        if let Some(t) = &self.service_tier {
            if t != "auto" && t != "default" {
                return Err(ApiError::invalid(
                    "`service_tier` must be auto or default on this server",
                    "service_tier",
                ));
            }
        }
        let n = check_n(self.n, limits)?;
        check_user(&self.user, "user")?;
        check_user(&self.safety_identifier, "safety_identifier")?;
        let (stream, include_usage) = check_stream(self.stream, &self.stream_options)?;
        let max_tokens = match self.max_completion_tokens {
            Some(_) => {
                check_max_tokens(self.max_completion_tokens, "max_completion_tokens", limits)?
            }
            None => check_max_tokens(self.max_tokens, "max_tokens", limits)?,
        };
        let format_schema = check_response_format(self.response_format)?;
        let tools = tools::validate(self.tools, self.tool_choice, self.parallel_tool_calls)?;
        if tools.is_some() && format_schema.is_some() {
            return Err(ApiError::invalid(
                "`response_format` json_object/json_schema cannot be combined with `tools` on this server",
                "response_format",
            ));
        }
        let mut messages = chat_messages(self.messages)?;
        if let Some(t) = &tools {
            // How to answer (the generic tool format) goes first, in a system message of
            // its own; templates that render tools also get the tool objects.
            messages.insert(0, ChatMessage::text("system", t.instructions()));
        }
        let tool_objects = tools
            .as_ref()
            .map(ToolSet::openai_objects)
            .unwrap_or_default();
        // SECURITY: everything rendered into the prompt counts against max_prompt_bytes:
        // message text, names, tool-call ids and arguments, and the tool definitions
        // (the instructions message above, and the tool objects templates render).
        let total: usize = messages.iter().map(rendered_bytes).sum::<usize>()
            + tool_objects
                .iter()
                .map(|t| t.to_string().len())
                .sum::<usize>();
        if total > limits.max_prompt_bytes as usize {
            return Err(ApiError::invalid(
                format!(
                    "The messages and tools are longer than {} bytes in total",
                    limits.max_prompt_bytes
                ),
                if tools.is_some() { "tools" } else { "messages" },
            ));
        }
        let json_schema = match &tools {
            Some(t) => output_schema(Some(t.answer_schema()), "tools")?,
            None => output_schema(format_schema, "response_format.json_schema.schema")?,
        };
        Ok(Generation {
            model: self.model,
            prompt: Prompt::Chat {
                messages,
                tools: tool_objects,
            },
            max_tokens,
            stop: check_stop(self.stop, limits)?,
            sampling: sampling(SamplingFields {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                presence: self.presence_penalty,
                frequency: self.frequency_penalty,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
            })?,
            stream,
            include_usage,
            n,
            json_schema,
            logit_bias: check_logit_bias(self.logit_bias)?,
            logprobs,
            tools,
            user: self.user.or(self.safety_identifier),
        })
    }
}

/// Bytes of client text one message puts into the rendered prompt.
fn rendered_bytes(m: &ChatMessage) -> usize {
    m.content.len()
        + m.name.as_ref().map_or(0, String::len)
        + m.tool_call_id.as_ref().map_or(0, String::len)
        + m.tool_calls
            .iter()
            .map(|c| c.arguments.len() + c.name.len() + c.id.len())
            .sum::<usize>()
}

/// Validate the history and turn it into plain role/text messages for the template.
fn chat_messages(raw: Vec<RawMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    let mut messages = Vec::with_capacity(raw.len());
    // Function names by call id, from earlier assistant messages, for tool results.
    let mut called: Vec<(String, String)> = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            "function" => {
                return Err(ApiError::invalid(
                    "The deprecated `function` role is not supported; use `tool` messages",
                    format!("messages[{i}].role"),
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    "`role` must be one of system, developer, user, assistant, tool",
                    format!("messages[{i}].role"),
                ))
            }
        };
        if let Some(name) = &m.name {
            check_text(name, &format!("messages[{i}].name"))?;
        }
        if m.refusal.is_some() {
            return Err(ApiError::invalid(
                "`refusal` must be null",
                format!("messages[{i}].refusal"),
            ));
        }
        if m.tool_calls.is_some() && role != "assistant" {
            return Err(ApiError::invalid(
                "Only assistant messages may carry `tool_calls`",
                format!("messages[{i}].tool_calls"),
            ));
        }
        if m.tool_call_id.is_some() != (role == "tool") {
            return Err(ApiError::invalid(
                "`tool_call_id` is required on tool messages and allowed only there",
                format!("messages[{i}].tool_call_id"),
            ));
        }
        let content = match m.content {
            None if role == "assistant" && m.tool_calls.is_some() => String::new(),
            None if role == "assistant" => String::new(),
            None => {
                return Err(ApiError::invalid(
                    "`content` is required for this role",
                    format!("messages[{i}].content"),
                ))
            }
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut joined = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => joined.push_str(&t),
                        ("text", None) => {
                            return Err(ApiError::invalid(
                                "A text part needs `text`",
                                format!("messages[{i}].content[{j}].text"),
                            ))
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                "Only `text` content parts are supported by this model",
                                format!("messages[{i}].content[{j}].type"),
                            ))
                        }
                    }
                }
                joined
            }
        };
        check_text(&content, &format!("messages[{i}].content"))?;
        let mut message = ChatMessage::text(role, content);
        if let Some(calls) = m.tool_calls {
            for (j, c) in calls.into_iter().enumerate() {
                if c.kind != "function" {
                    return Err(ApiError::invalid(
                        "Only tool calls of type `function` are supported",
                        format!("messages[{i}].tool_calls[{j}].type"),
                    ));
                }
                let param = format!("messages[{i}].tool_calls[{j}]");
                check_text(&c.id, &param)?;
                check_text(&c.function.name, &param)?;
                check_text(&c.function.arguments, &param)?;
                called.push((c.id.clone(), c.function.name.clone()));
                message.tool_calls.push(ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                });
            }
        }
        if let Some(id) = m.tool_call_id {
            check_text(&id, &format!("messages[{i}].tool_call_id"))?;
            message.name = called
                .iter()
                .find(|(cid, _)| *cid == id)
                .map(|(_, n)| n.clone());
            message.tool_call_id = Some(id);
        }
        messages.push(message);
    }
    Ok(messages)
}

impl CompletionRequest {
    pub fn validate(self, limits: &LimitsConfig) -> Result<Generation, ApiError> {
        let prompt = match self.prompt {
            PromptField::One(p) => p,
            PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptField::Many(_) => {
                return Err(ApiError::invalid(
                    "Only a single prompt string is supported",
                    "prompt",
                ))
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("`prompt` must not be empty", "prompt"));
        }
        if prompt.len() > limits.max_prompt_bytes as usize {
            return Err(ApiError::invalid(
                format!("`prompt` is longer than {} bytes", limits.max_prompt_bytes),
                "prompt",
            ));
        }
        check_text(&prompt, "prompt")?;
        if self.echo == Some(true) {
            return Err(ApiError::invalid(
                "`echo` is not supported on this server",
                "echo",
            ));
        }
        let logprobs = match self.logprobs {
            None => None,
            Some(k) if (0..=MAX_COMPLETION_LOGPROBS).contains(&k) => Some(k as u32),
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("`logprobs` must be between 0 and {MAX_COMPLETION_LOGPROBS}"),
                    "logprobs",
                ))
            }
        };
        if matches!(self.best_of, Some(n) if n != 1) {
            return Err(ApiError::invalid(
                "Only `best_of` = 1 is supported",
                "best_of",
            ));
        }
        if self.suffix.is_some() {
            return Err(ApiError::invalid(
                "`suffix` is not supported by this model",
                "suffix",
            ));
        }
        let n = check_n(self.n, limits)?;
        check_user(&self.user, "user")?;
        let (stream, include_usage) = check_stream(self.stream, &self.stream_options)?;
        Ok(Generation {
            model: self.model,
            prompt: Prompt::Text(prompt),
            max_tokens: check_max_tokens(self.max_tokens, "max_tokens", limits)?,
            stop: check_stop(self.stop, limits)?,
            sampling: sampling(SamplingFields {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                presence: self.presence_penalty,
                frequency: self.frequency_penalty,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
            })?,
            stream,
            include_usage,
            n,
            json_schema: None,
            logit_bias: check_logit_bias(self.logit_bias)?,
            logprobs,
            tools: None,
            user: self.user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Generation, ApiError> {
        parse_json::<ChatCompletionRequest>(body.as_bytes())?.validate(&LimitsConfig::default())
    }

    #[test]
    fn max_prompt_bytes_counts_tools_names_and_ids_not_only_contents() {
        let limits = LimitsConfig {
            max_prompt_bytes: 2000,
            ..LimitsConfig::default()
        };
        let validate = |body: &str| {
            parse_json::<ChatCompletionRequest>(body.as_bytes()).and_then(|r| r.validate(&limits))
        };
        // Short messages, but 1 200 bytes of tool description (rendered twice: in the
        // instructions and in the tool objects a template renders).
        let described = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],
              "tools":[{{"type":"function","function":{{"name":"f","description":"{}"}}}}]}}"#,
            "d".repeat(1200)
        );
        let e = validate(&described).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"), "{}", e.message);
        assert!(
            e.message.contains("longer than 2000 bytes"),
            "{}",
            e.message
        );
        // Tool-call ids and arguments in the history count too.
        let history = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}},
              {{"role":"assistant","tool_calls":[{{"id":"{}","type":"function",
                "function":{{"name":"f","arguments":"{{}}"}}}}]}},
              {{"role":"tool","tool_call_id":"x","content":"ok"}}]}}"#,
            "i".repeat(2100)
        );
        let e = validate(&history).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"), "{}", e.message);
        assert!(
            e.message.contains("longer than 2000 bytes"),
            "{}",
            e.message
        );
        // The same request with a short description fits.
        let short = described.replace(&"d".repeat(1200), "weather");
        assert!(validate(&short).is_ok());
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings_only() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{{\"]]]"}"#), 1);
        assert_eq!(json_depth(b"[]"), 1);
        assert_eq!(json_depth(b"42"), 0);
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let e = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested deeper than 32"), "{e:?}");
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parse_json::<serde_json::Value>(ok.as_bytes()).is_ok());
        // A body nested past serde_json's own limit gets the same clear answer.
        let very = "[".repeat(100_000);
        assert!(parse_json::<serde_json::Value>(very.as_bytes()).is_err());
    }

    #[test]
    fn accepts_sdk_shaped_chat() {
        let g = chat(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
               {"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"!"}]}],
               "max_tokens":5,"temperature":0,"stop":"END","stream":true,
               "stream_options":{"include_usage":true},"seed":-1}"#,
        )
        .unwrap();
        assert!(g.stream && g.include_usage);
        assert_eq!(g.max_tokens, Some(5));
        assert_eq!(g.stop, vec!["END"]);
        match g.prompt {
            Prompt::Chat { messages, tools } => {
                assert_eq!(messages[1].content, "hi!");
                assert!(tools.is_empty());
            }
            _ => panic!(),
        }
    }

    #[test]
    fn errors_name_the_param() {
        let cases = [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":-0.1}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":999999}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"5"}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":5}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#,
                "top_logprobs",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#,
                "top_logprobs",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"abc":1}}"#,
                "logit_bias",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"5":101}}"#,
                "logit_bias",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#,
                "response_format.type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","not":{}}}}}"#,
                "response_format.json_schema.schema.not",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#,
                "response_format.json_schema",
            ),
            (
                r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"store":true}"#,
                "store",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"functions":[]}"#,
                "functions",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_k":-1}"#,
                "top_k",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"bogus":1}"#,
                "bogus",
            ),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
                "stream_options",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"a\u0000b"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"frequency_penalty":1e300}"#,
                "frequency_penalty",
            ),
        ];
        for (body, param) in cases {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn malformed_json_and_trailing_data_are_400() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"model\":\"m\"} x",
            b"\xff\xfe",
            b"{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}",
        ] {
            let e = parse_json::<ChatCompletionRequest>(body).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn type_errors_do_not_echo_client_strings() {
        let e = parse_json::<ChatCompletionRequest>(
            br#"{"model":"m","messages":"my private prompt text, expected by nobody"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(!e.message.contains("private"), "{}", e.message);
        let long = format!(r#"{{"model":"m","messages":[],"{}":1}}"#, "k".repeat(5000));
        let e = parse_json::<ChatCompletionRequest>(long.as_bytes()).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_MESSAGE * 4,
            "{}",
            e.message.len()
        );
        assert!(e.param.unwrap().len() <= 64);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json::<ChatCompletionRequest>(body.as_bytes()).is_err());
    }

    #[test]
    fn completion_fields() {
        let limits = LimitsConfig::default();
        let ok =
            parse_json::<CompletionRequest>(br#"{"model":"m","prompt":["once"],"max_tokens":3}"#)
                .unwrap()
                .validate(&limits)
                .unwrap();
        assert!(matches!(ok.prompt, Prompt::Text(ref t) if t == "once"));
        for (body, param) in [
            (r#"{"model":"m","prompt":"x","echo":true}"#, "echo"),
            (r#"{"model":"m","prompt":["a","b"]}"#, "prompt"),
            (r#"{"model":"m","prompt":""}"#, "prompt"),
            (r#"{"model":"m","prompt":"x","best_of":3}"#, "best_of"),
            (r#"{"model":"m","prompt":"x","logprobs":6}"#, "logprobs"),
        ] {
            let e = parse_json::<CompletionRequest>(body.as_bytes())
                .and_then(|r| r.validate(&limits))
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn tool_history_renders_calls_and_results() {
        let g = chat(
            r#"{"model":"m","messages":[
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
                  "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"22 C"}],
              "tools":[{"type":"function","function":{"name":"get_weather",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
              "tool_choice":"required","n":2,"logprobs":true,"top_logprobs":3,"logit_bias":{"7":-100}}"#,
        )
        .unwrap();
        let Prompt::Chat { messages: m, tools } = &g.prompt else {
            panic!()
        };
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.contains("get_weather"));
        assert_eq!(m[2].tool_calls[0].name, "get_weather");
        assert_eq!(m[2].tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(m[3].role, "tool");
        assert_eq!(m[3].name.as_deref(), Some("get_weather"));
        assert_eq!(tools[0]["function"]["name"], "get_weather");
        let s = g.json_schema.as_ref().unwrap();
        assert!(s.schema.to_string().contains("tool_calls"));
        assert_eq!(s.param, "tools");
        assert_eq!((g.n, g.logprobs), (2, Some(3)));
        assert_eq!(g.logit_bias, vec![(7, -100.0)]);
    }

    #[test]
    fn response_formats_become_schemas() {
        let g = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#).unwrap();
        let s = g.json_schema.as_ref().unwrap();
        assert_eq!(s.schema, serde_json::json!({"type": "object"}));
        assert_eq!(s.param, "response_format.json_schema.schema");
        let g = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}}"#).unwrap();
        assert!(g.json_schema.is_none());
    }

    #[test]
    fn seed_folding_is_deterministic() {
        assert_eq!(seed_of(Some(42)), seed_of(Some(42)));
        assert_ne!(seed_of(Some(42)), seed_of(Some(43)));
    }
}
