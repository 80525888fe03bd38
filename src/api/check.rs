//! Field checks shared by every endpoint: ranges (each error names its `param`), token
//! budgets, stop strings, `n`, `user`, `logit_bias`, `response_format`, streaming
//! options, the seed, the sampling block and the text limits, plus the wire types more
//! than one endpoint accepts. One copy of each rule, so the endpoints cannot drift apart.

use super::error::ApiError;
use super::schema;
use crate::config::LimitsConfig;
use crate::engine::reasoning::Effort;
use crate::engine::Sampling;
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

/// A JSON Schema to constrain the output to, and the request field it came from (named
/// in the 400 when it does not compile).
#[derive(Debug, Clone)]
pub struct OutputSchema {
    pub schema: Value,
    pub param: &'static str,
    /// A model family's call grammar replaces `schema` (which then holds the called
    /// functions' parameter schemas, for the size limit): built at compile time, where
    /// the model's special tokens are known.
    pub native: Option<NativeCall>,
}

/// One call in a model family's own syntax (`engine::family`): to one of `functions`
/// (name, parameters schema); a list body holds up to `max_calls`.
#[derive(Debug, Clone)]
pub struct NativeCall {
    pub syntax: crate::engine::tool_syntax::ToolSyntax,
    /// Shared with the answer's parser (`wire::Shape::functions`): made once a request.
    pub functions: std::sync::Arc<Vec<(String, Value)>>,
    pub max_calls: u32,
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
pub(super) const MAX_USER_LEN: usize = 256;

pub(super) fn check_range(
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

pub(super) fn check_max_tokens(
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

pub(super) fn check_stop(
    stop: Option<StopField>,
    limits: &LimitsConfig,
) -> Result<Vec<String>, ApiError> {
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

pub(super) fn check_n(n: Option<i64>, limits: &LimitsConfig) -> Result<u32, ApiError> {
    match n {
        None => Ok(1),
        Some(v) if v >= 1 && v <= limits.max_n as i64 => Ok(v as u32),
        Some(_) => Err(ApiError::invalid(
            format!("`n` must be between 1 and {} on this server", limits.max_n),
            "n",
        )),
    }
}

pub(super) fn check_user(user: &Option<String>, param: &str) -> Result<(), ApiError> {
    match user {
        Some(u) if u.len() > MAX_USER_LEN => Err(ApiError::invalid(
            format!("`{param}` must be at most {MAX_USER_LEN} bytes"),
            param,
        )),
        _ => Ok(()),
    }
}

/// `reasoning_effort` / `reasoning.effort`: one of OpenAI's levels (whether the model can
/// act on it is decided with the model's reasoning format, in `generate`).
pub(super) fn check_effort(
    effort: Option<&str>,
    param: &'static str,
) -> Result<Option<RequestedEffort>, ApiError> {
    let Some(name) = effort else {
        return Ok(None);
    };
    match Effort::parse(name) {
        Some(effort) => Ok(Some(RequestedEffort { effort, param })),
        None => Err(ApiError::invalid(
            format!("`{param}` must be {}", Effort::NAMES),
            param,
        )),
    }
}

/// A reasoning effort as asked, with the field that asked (for a 400 naming it).
#[derive(Debug, Clone, Copy)]
pub struct RequestedEffort {
    pub effort: Effort,
    pub param: &'static str,
}

pub(super) fn check_logit_bias(
    bias: Option<BTreeMap<String, f64>>,
) -> Result<Vec<(i32, f32)>, ApiError> {
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

/// Where an endpoint keeps its output format, for the `param` of its errors.
pub(super) struct FormatParams {
    /// The format field itself.
    pub field: &'static str,
    pub kind: &'static str,
    pub json_schema: &'static str,
    pub name: &'static str,
    pub schema: &'static str,
    /// The conversation (for a prompt over `max_prompt_bytes`).
    pub messages: &'static str,
}

/// Chat completions: `response_format`.
pub(super) const CHAT_FORMAT: FormatParams = FormatParams {
    field: "response_format",
    kind: "response_format.type",
    json_schema: "response_format.json_schema",
    name: "response_format.json_schema.name",
    schema: "response_format.json_schema.schema",
    messages: "messages",
};

/// The Responses API: `text.format`, flat.
pub(super) const RESPONSES_FORMAT: FormatParams = FormatParams {
    field: "text.format",
    kind: "text.format.type",
    json_schema: "text.format",
    name: "text.format.name",
    schema: "text.format.schema",
    messages: "input",
};

/// `response_format` → the JSON Schema the output is constrained to (None for text).
pub(super) fn check_response_format(
    format: Option<ResponseFormat>,
    params: &FormatParams,
) -> Result<Option<Value>, ApiError> {
    let Some(f) = format else {
        return Ok(None);
    };
    match (f.kind.as_str(), f.json_schema) {
        ("text", None) => Ok(None),
        ("json_object", None) => Ok(Some(serde_json::json!({"type": "object"}))),
        ("json_schema", Some(js)) => {
            if !valid_name(&js.name) {
                return Err(ApiError::invalid(
                    "`name` must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
                    params.name,
                ));
            }
            let _ = (js.description, js.strict);
            let schema = js
                .schema
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            schema::check(&schema, params.schema)?;
            Ok(Some(schema))
        }
        ("json_schema", None) => Err(ApiError::invalid(
            "`json_schema` is required when `type` is json_schema",
            params.json_schema,
        )),
        (_, Some(_)) => Err(ApiError::invalid(
            "`json_schema` is only allowed when `type` is json_schema",
            params.json_schema,
        )),
        _ => Err(ApiError::invalid(
            "`type` must be one of text, json_object, json_schema",
            params.kind,
        )),
    }
}

/// The schema the output is constrained to, size-checked.
pub(super) fn output_schema(
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
    Ok(Some(OutputSchema {
        schema,
        param,
        native: None,
    }))
}

pub(super) fn check_stream(
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
/// SECURITY: a failing random source is a 500, not a seed of 0 for everyone.
pub(super) fn seed_of(seed: Option<i64>) -> Result<u32, ApiError> {
    match seed {
        Some(s) => {
            let u = s as u64;
            Ok((u ^ (u >> 32)) as u32)
        }
        None => {
            let mut b = [0u8; 4];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(
                |_| {
                    tracing::error!("the system random source failed");
                    ApiError::internal()
                },
            )?;
            Ok(u32::from_le_bytes(b))
        }
    }
}

/// The sampling fields both endpoints share.
pub(super) struct SamplingFields {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub presence: Option<f64>,
    pub frequency: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
}

pub(super) fn sampling(f: SamplingFields) -> Result<Sampling, ApiError> {
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
        seed: seed_of(f.seed)?,
        presence_penalty: check_range(f.presence, -2.0, 2.0, 0.0, "presence_penalty")?,
        frequency_penalty: check_range(f.frequency, -2.0, 2.0, 0.0, "frequency_penalty")?,
        top_k,
        min_p: check_range(f.min_p, 0.0, 1.0, 0.0, "min_p")?,
        repeat_penalty: check_range(f.repeat_penalty, 0.5, 2.0, 1.0, "repeat_penalty")?,
    })
}

pub(super) fn check_text(text: &str, param: &str) -> Result<(), ApiError> {
    // SECURITY: llama.cpp takes C strings; an embedded NUL would silently truncate.
    if text.contains('\0') {
        return Err(ApiError::invalid(
            "Text must not contain NUL characters",
            param,
        ));
    }
    Ok(())
}

/// OpenAI's rule for function and schema names: 1 to 64 of a-z, A-Z, 0-9, _ and -.
pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_folding_is_deterministic() {
        assert_eq!(seed_of(Some(42)).unwrap(), seed_of(Some(42)).unwrap());
        assert_ne!(seed_of(Some(42)).unwrap(), seed_of(Some(43)).unwrap());
    }
}
