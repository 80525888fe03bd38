//! `POST /v1/chat/completions`: the request body, its messages (text or text parts, tool
//! calls and tool results) and its translation into a `Generation`.
//!
//! SECURITY: roles, contents, names and ids are checked before anything is rendered;
//! `limits.max_prompt_bytes` counts everything the template will render (tool
//! definitions, call ids, names and arguments included), not only message contents.

use super::check::{
    check_effort, check_logit_bias, check_max_tokens, check_n, check_response_format, check_stop,
    check_stream, check_text, check_user, sampling, ResponseFormat, SamplingFields, StopField,
    StreamOptions, CHAT_FORMAT, MAX_TOP_LOGPROBS,
};
use super::error::ApiError;
use super::generation::Generation;
use super::prompt::chat_prompt;
use super::tools::{self, RawTool, RawToolCall, RawToolChoice};
use crate::config::LimitsConfig;
use crate::engine::{ChatMessage, ContentShape, ToolCall};
use serde::Deserialize;
use std::collections::BTreeMap;

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
    /// An earlier answer's thinking, echoed back by clients that append the response
    /// message: given to the template, which renders or drops it as the model was trained.
    #[serde(default)]
    pub reasoning_content: Option<String>,
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
    /// How much a reasoning model may think (`engine::reasoning::Budgets`).
    #[serde(default)]
    pub reasoning_effort: Option<String>,
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
        let format_schema = check_response_format(self.response_format, &CHAT_FORMAT)?;
        let tools = tools::validate(self.tools, self.tool_choice, self.parallel_tool_calls)?;
        let messages = chat_messages(self.messages)?;
        let (prompt, json_schema) = chat_prompt(
            messages,
            tools.as_ref(),
            format_schema,
            &CHAT_FORMAT,
            limits,
        )?;
        Ok(Generation {
            model: self.model,
            prompt,
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
            reasoning_effort: check_effort(self.reasoning_effort.as_deref(), "reasoning_effort")?,
            echo: None,
        })
    }
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
        let mut shape = ContentShape::Text;
        let content = match m.content {
            None if role == "assistant" => {
                shape = ContentShape::Null;
                String::new()
            }
            None => {
                return Err(ApiError::invalid(
                    "`content` is required for this role",
                    format!("messages[{i}].content"),
                ))
            }
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut joined = String::new();
                let mut texts = Vec::with_capacity(parts.len());
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => {
                            joined.push_str(&t);
                            texts.push(t);
                        }
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
                shape = ContentShape::Parts(texts);
                joined
            }
        };
        check_text(&content, &format!("messages[{i}].content"))?;
        let mut message = ChatMessage::text(role, content);
        message.shape = shape;
        if let Some(r) = m.reasoning_content.filter(|_| role == "assistant") {
            check_text(&r, &format!("messages[{i}].reasoning_content"))?;
            message.reasoning = Some(r);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::parse_json;
    use crate::engine::Prompt;

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
            Prompt::Chat {
                messages, tools, ..
            } => {
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
        let Prompt::Chat {
            messages: m, tools, ..
        } = &g.prompt
        else {
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
}
