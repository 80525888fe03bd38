//! POST /v1/embeddings: request validation and the response shape.
//!
//! SECURITY: inputs are bounded in count (`limits.max_embedding_inputs`), in total bytes
//! (`limits.max_prompt_bytes`) and, on the engine, in tokens (the context); token-id
//! inputs are checked against the vocabulary there. Nothing is echoed into errors.

use super::admission::{admit, Admissible, Admitted};
use super::check::{check_text, check_user};
use super::error::ApiError;
use super::json::parse_json;
use super::{json_response, ApiBody, AppState};
use crate::auth::Principal;
use crate::config::LimitsConfig;
use crate::engine::{EmbedInput, Embeddings};
use crate::metrics::Trace;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InputField {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    ManyTokens(Vec<Vec<i64>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: InputField,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
}

/// A validated embeddings request.
#[derive(Debug)]
pub struct Embed {
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    /// Vectors as base64 of little-endian f32 (what the SDKs ask for by default).
    pub base64: bool,
}

impl EmbeddingsRequest {
    pub fn validate(self, limits: &LimitsConfig) -> Result<Embed, ApiError> {
        let base64 = match self.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(_) => {
                return Err(ApiError::invalid(
                    "`encoding_format` must be float or base64",
                    "encoding_format",
                ))
            }
        };
        if self.dimensions.is_some() {
            return Err(ApiError::invalid(
                "`dimensions` is not supported: this model returns its native embedding size",
                "dimensions",
            ));
        }
        check_user(&self.user, "user")?;
        let inputs: Vec<EmbedInput> = match self.input {
            InputField::One(s) => vec![EmbedInput::Text(s)],
            InputField::Many(v) => v.into_iter().map(EmbedInput::Text).collect(),
            InputField::Tokens(t) => vec![tokens(t)?],
            InputField::ManyTokens(v) => v.into_iter().map(tokens).collect::<Result<_, _>>()?,
        };
        if inputs.is_empty() || inputs.len() > limits.max_embedding_inputs as usize {
            return Err(ApiError::invalid(
                format!(
                    "`input` must hold 1 to {} inputs on this server",
                    limits.max_embedding_inputs
                ),
                "input",
            ));
        }
        let mut total = 0usize;
        for (i, input) in inputs.iter().enumerate() {
            let len = match input {
                EmbedInput::Text(t) => {
                    check_text(t, &format!("input[{i}]"))?;
                    t.len()
                }
                EmbedInput::Tokens(t) => t.len() * 4,
            };
            if len == 0 {
                return Err(ApiError::invalid(
                    "An input must not be empty",
                    format!("input[{i}]"),
                ));
            }
            total += len;
        }
        if total > limits.max_prompt_bytes as usize {
            return Err(ApiError::invalid(
                format!(
                    "The inputs are longer than {} bytes in total",
                    limits.max_prompt_bytes
                ),
                "input",
            ));
        }
        Ok(Embed {
            model: self.model,
            inputs,
            base64,
        })
    }
}

fn tokens(ids: Vec<i64>) -> Result<EmbedInput, ApiError> {
    ids.into_iter()
        .map(|id| i32::try_from(id).ok().filter(|v| *v >= 0))
        .collect::<Option<Vec<i32>>>()
        .map(EmbedInput::Tokens)
        .ok_or_else(|| ApiError::invalid("Token ids must be non-negative integers", "input"))
}

/// OpenAI's embeddings response.
pub fn response(model: &str, e: &Embeddings, base64: bool) -> Value {
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(<base64ct::Base64 as base64ct::Encoding>::encode_string(
                    &bytes,
                ))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    })
}

impl Admissible for Embed {
    fn model(&self) -> &str {
        &self.model
    }
}

/// POST /v1/embeddings.
pub(super) async fn handle(
    req: Request<Incoming>,
    state: &AppState,
    principal: &Principal,
    trace: &Trace,
) -> Result<Response<ApiBody>, ApiError> {
    if !state.api.embeddings {
        return Err(ApiError::unknown_url("POST", "/v1/embeddings"));
    }
    let Admitted {
        request: e,
        slots: slot,
    } = admit(req, state, principal, |body, limits| {
        parse_json::<EmbeddingsRequest>(body)?.validate(limits)
    })
    .await?;
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
        &response(&state.api.model_id, &result, e.base64),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::parse_json;

    fn validate(body: &str) -> Result<Embed, ApiError> {
        parse_json::<EmbeddingsRequest>(body.as_bytes())?.validate(&LimitsConfig::default())
    }

    #[test]
    fn inputs_and_errors() {
        let e = validate(r#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#).unwrap();
        assert_eq!(e.inputs.len(), 2);
        assert!(e.base64);
        let e = validate(r#"{"model":"m","input":[[1,2,3]]}"#).unwrap();
        assert!(matches!(&e.inputs[0], EmbedInput::Tokens(t) if t == &[1, 2, 3]));
        for (body, param) in [
            (r#"{"model":"m","input":"a","dimensions":8}"#, "dimensions"),
            (
                r#"{"model":"m","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m","input":[""]}"#, "input[0]"),
            (r#"{"model":"m","input":[-1]}"#, "input"),
        ] {
            let err = validate(body).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
        }
        let many = format!(
            r#"{{"model":"m","input":[{}]}}"#,
            vec!["\"a\""; 33].join(",")
        );
        assert_eq!(validate(&many).unwrap_err().param.as_deref(), Some("input"));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let e = Embeddings {
            vectors: vec![vec![1.0, -0.5]],
            prompt_tokens: 2,
        };
        let v = response("m", &e, true);
        let b64 = v["data"][0]["embedding"].as_str().unwrap();
        let bytes = <base64ct::Base64 as base64ct::Encoding>::decode_vec(b64).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat()
        );
        assert_eq!(response("m", &e, false)["data"][0]["embedding"][1], -0.5);
        assert_eq!(v["usage"]["prompt_tokens"], 2);
    }
}
