//! `POST /v1/completions` (legacy text completions): the request body and its
//! translation into a `Generation`. Raw prompts are tokenized without parsing special
//! tokens (see `engine::llama::batcher`), so client text cannot forge control tokens.

use super::check::{
    check_logit_bias, check_max_tokens, check_n, check_stop, check_stream, check_text, check_user,
    sampling, SamplingFields, StopField, StreamOptions, MAX_COMPLETION_LOGPROBS,
};
use super::error::ApiError;
use super::generation::Generation;
use crate::config::LimitsConfig;
use crate::engine::Prompt;
use serde::Deserialize;
use std::collections::BTreeMap;

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
            reasoning_effort: None,
            logit_bias: check_logit_bias(self.logit_bias)?,
            logprobs,
            tools: None,
            user: self.user,
            echo: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::parse_json;

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
}
