//! `POST /v1/responses` (and `/v1/responses/input_tokens`): the Responses API request,
//! stateless, and its translation into the one internal `Generation`. Input is a string
//! or a list of items — messages, `function_call` and `function_call_output` (a client
//! replaying its tool loop), reasoning items (accepted and ignored) — rendered through the
//! same chat prompt, tools and constraint machinery as chat completions
//! (`chat::chat_prompt`). The response object and its typed stream events are written by
//! `wire::responses`.
//!
//! SECURITY: nothing is stored, so every field that would make the server keep or fetch
//! state (`previous_response_id`, `conversation`, `store: true`, `background`, stored
//! `prompt`s, `item_reference`) and every built-in tool (web search, file search, code
//! interpreter, computer use, image generation, MCP, shell) is a 400 naming it, never a
//! silent no-op. Items are read one by one into strict types (`json::from_value`), so an
//! unknown field anywhere is a 400 with its full path; the item count, every text's
//! bytes (through `max_prompt_bytes`) and `metadata` are bounded.

mod input;

use super::check::{
    check_effort, check_max_tokens, check_response_format, check_text, check_user, sampling,
    JsonSchemaFormat, ResponseFormat, SamplingFields, RESPONSES_FORMAT,
};
use super::error::ApiError;
use super::generation::Generation;
use super::json::from_value;
use super::prompt::chat_prompt;
use super::tools::{self, NamedChoice, NamedFunction, RawFunction, RawTool, RawToolChoice};
use crate::config::LimitsConfig;
use crate::engine::ChatMessage;
use input::input_messages;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Most `metadata` pairs, and the longest key and value (OpenAI's own limits).
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;

/// The body of `POST /v1/responses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Input,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Most tool calls in the answer (1 to `MAX_CALLS`).
    #[serde(default)]
    pub max_tool_calls: Option<i64>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<ResponsesStreamOptions>,
    /// Extra output to include; only values that need nothing this server lacks.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// How much a reasoning model may think; `summary` is accepted (no summary is made:
    /// the reasoning item carries the thinking itself).
    #[serde(default)]
    pub reasoning: Option<ReasoningParam>,
    /// A processing-tier hint: "auto" and "default" accepted and ignored.
    #[serde(default)]
    pub service_tier: Option<String>,
    /// A cache-routing hint: ignored (the prefix cache is per key already).
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    // Refused with a 400 naming them: they need state this server does not keep.
    #[serde(default)]
    pub previous_response_id: Option<Value>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub prompt: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    #[serde(default)]
    pub format: Option<TextFormat>,
    /// "low" | "medium" | "high": accepted and ignored.
    #[serde(default)]
    pub verbosity: Option<String>,
}

/// `text.format`: `{type: text}`, `{type: json_object}` or a flat
/// `{type: json_schema, name, schema, description?, strict?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningParam {
    #[serde(default)]
    pub effort: Option<String>,
    /// "auto" | "concise" | "detailed": accepted; the thinking is returned whole.
    #[serde(default)]
    pub summary: Option<String>,
    /// The deprecated name of `summary`.
    #[serde(default)]
    pub generate_summary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesStreamOptions {
    /// Random padding against length side channels; accepted, not needed here.
    #[serde(default)]
    pub include_obfuscation: Option<bool>,
}

/// A function tool as the Responses API writes it (flat, no `function` wrapper).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionTool {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

impl ResponsesRequest {
    pub fn validate(self, limits: &LimitsConfig) -> Result<Generation, ApiError> {
        refuse_state(&self)?;
        if self.truncation.as_deref().is_some_and(|t| t != "disabled") {
            return Err(ApiError::invalid(
                "Only `truncation: \"disabled\"` is supported: an input that does not fit the context is a 400",
                "truncation",
            ));
        }
        if self.top_logprobs.is_some_and(|k| k != 0) {
            return Err(ApiError::invalid(
                "Log-probabilities are not served on /v1/responses; use /v1/chat/completions",
                "top_logprobs",
            ));
        }
        for (i, inc) in self.include.iter().flatten().enumerate() {
            // Nothing to add for a model without separate reasoning; anything else asks
            // for data this server does not produce.
            if inc != "reasoning.encrypted_content" {
                return Err(ApiError::invalid(
                    "This `include` value is not supported on this server",
                    format!("include[{i}]"),
                ));
            }
        }
        if let Some(t) = &self.service_tier {
            if t != "auto" && t != "default" {
                return Err(ApiError::invalid(
                    "`service_tier` must be auto or default on this server",
                    "service_tier",
                ));
            }
        }
        if let Some(k) = &self.prompt_cache_key {
            check_user(&Some(k.clone()), "prompt_cache_key")?;
        }
        check_user(&self.user, "user")?;
        check_user(&self.safety_identifier, "safety_identifier")?;
        check_metadata(self.metadata.as_ref())?;
        let max_tokens = check_max_tokens(self.max_output_tokens, "max_output_tokens", limits)?;
        let format = self.text.as_ref().and_then(|t| t.format.clone());
        let format_schema = check_response_format(
            format.clone().map(response_format).transpose()?,
            &RESPONSES_FORMAT,
        )?;
        // `tools: []` is how SDKs say "no tools" here (unlike chat completions).
        let declared = self.tools.clone().filter(|t| !t.is_empty());
        let mut tools = tools::validate(
            declared.map(function_tools).transpose()?,
            self.tool_choice.clone().map(tool_choice).transpose()?,
            self.parallel_tool_calls,
        )
        .map_err(|e| e.with_param_renamed(".function.", "."))?;
        if let Some(n) = self.max_tool_calls {
            let most = crate::engine::family::MAX_CALLS;
            let n = u32::try_from(n)
                .ok()
                .filter(|n| (1..=most).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("`max_tool_calls` must be 1 to {most}"),
                        "max_tool_calls",
                    )
                })?;
            if let Some(t) = tools.as_mut() {
                t.max_tool_calls = Some(n);
            }
        }
        let mut messages = Vec::new();
        if let Some(text) = &self.instructions {
            check_text(text, "instructions")?;
            messages.push(ChatMessage::text("system", text.clone()));
        }
        messages.extend(input_messages(self.input, limits)?);
        let (prompt, json_schema) = chat_prompt(
            messages,
            tools.as_ref(),
            format_schema,
            &RESPONSES_FORMAT,
            limits,
        )?;
        let reasoning = self.reasoning.unwrap_or(ReasoningParam {
            effort: None,
            summary: None,
            generate_summary: None,
        });
        let reasoning_effort = check_effort(reasoning.effort.as_deref(), "reasoning.effort")?;
        let summary = reasoning.summary.or(reasoning.generate_summary);
        if let Some(s) = &summary {
            if !["auto", "concise", "detailed"].contains(&s.as_str()) {
                return Err(ApiError::invalid(
                    "`reasoning.summary` must be auto, concise or detailed",
                    "reasoning.summary",
                ));
            }
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "`stream_options` is only allowed when `stream` is true",
                "stream_options",
            ));
        }
        // The settings the response object echoes, as the request gave them (defaults
        // filled in as OpenAI reports them).
        let echo = json!({
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata.unwrap_or_default(),
            "parallel_tool_calls": self.parallel_tool_calls.unwrap_or(true),
            "max_tool_calls": self.max_tool_calls,
            "temperature": self.temperature.unwrap_or(1.0),
            "top_p": self.top_p.unwrap_or(1.0),
            "tool_choice": self.tool_choice.unwrap_or_else(|| json!("auto")),
            "tools": self.tools.unwrap_or_default(),
            "text": {"format": format.map_or_else(|| json!({"type": "text"}), format_echo)},
            "truncation": "disabled",
            "store": false,
            "background": false,
            "previous_response_id": null,
            "reasoning": {"effort": reasoning.effort, "summary": summary},
            "service_tier": self.service_tier.unwrap_or_else(|| "default".into()),
            "user": self.user.clone(),
            "safety_identifier": self.safety_identifier.clone(),
        });
        Ok(Generation {
            model: self.model,
            prompt,
            max_tokens,
            stop: Vec::new(),
            sampling: sampling(SamplingFields {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: None,
                presence: None,
                frequency: None,
                top_k: None,
                min_p: None,
                repeat_penalty: None,
            })?,
            stream,
            include_usage: false,
            n: 1,
            json_schema,
            logit_bias: Vec::new(),
            logprobs: None,
            tools,
            user: self.user.or(self.safety_identifier),
            reasoning_effort,
            echo: match echo {
                Value::Object(m) => Some(m),
                _ => None,
            },
        })
    }
}

/// SECURITY: what would need server-side state is refused by name, not ignored.
fn refuse_state(r: &ResponsesRequest) -> Result<(), ApiError> {
    let stateful = [
        ("previous_response_id", r.previous_response_id.is_some()),
        ("conversation", r.conversation.is_some()),
        ("store", r.store == Some(true)),
        ("background", r.background == Some(true)),
        ("prompt", r.prompt.is_some()),
    ];
    if let Some((field, _)) = stateful.iter().find(|(_, set)| *set) {
        return Err(ApiError::invalid(
            format!(
                "This server does not store responses, so `{field}` is not supported; send the whole conversation in `input` (and `store: false`)"
            ),
            *field,
        ));
    }
    Ok(())
}

fn check_metadata(m: Option<&BTreeMap<String, String>>) -> Result<(), ApiError> {
    let Some(m) = m else {
        return Ok(());
    };
    if m.len() > MAX_METADATA_PAIRS {
        return Err(ApiError::invalid(
            format!("`metadata` may hold at most {MAX_METADATA_PAIRS} pairs"),
            "metadata",
        ));
    }
    for (k, v) in m {
        if k.chars().count() > MAX_METADATA_KEY || v.chars().count() > MAX_METADATA_VALUE {
            return Err(ApiError::invalid(
                format!("`metadata` keys are at most {MAX_METADATA_KEY} characters and values at most {MAX_METADATA_VALUE}"),
                "metadata",
            ));
        }
    }
    Ok(())
}

/// `text.format` in the shape the shared check takes.
fn response_format(f: TextFormat) -> Result<ResponseFormat, ApiError> {
    let json_schema = if f.kind == "json_schema" {
        let name = f.name.ok_or_else(|| {
            ApiError::invalid("A json_schema format needs a `name`", "text.format.name")
        })?;
        Some(JsonSchemaFormat {
            name,
            description: f.description,
            schema: f.schema,
            strict: f.strict,
        })
    } else if f.schema.is_some() || f.name.is_some() {
        return Err(ApiError::invalid(
            "`name` and `schema` are only allowed when `type` is json_schema",
            "text.format",
        ));
    } else {
        None
    };
    Ok(ResponseFormat {
        kind: f.kind,
        json_schema,
    })
}

/// `text.format` as the response object echoes it.
fn format_echo(f: TextFormat) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(f.kind));
    if f.kind == "json_schema" {
        m.insert("name".into(), json!(f.name));
        m.insert("schema".into(), f.schema.unwrap_or_else(|| json!({})));
        m.insert("description".into(), json!(f.description));
        m.insert("strict".into(), json!(f.strict));
    }
    Value::Object(m)
}

/// The built-in tool types, refused by name (they would run code, reach the network or
/// read files on the server's side).
const BUILT_IN_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "computer",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "custom",
    "apply_patch",
];

/// Responses function tools as the shared tool check takes them.
fn function_tools(raw: Vec<Value>) -> Result<Vec<RawTool>, ApiError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            let why = if BUILT_IN_TOOLS.contains(&kind) {
                "Built-in tools are not available on this server; declare a `function` tool and run it in your application"
            } else {
                "Only tools of type `function` are supported"
            };
            return Err(ApiError::invalid(why, format!("{at}.type")));
        }
        let f: FunctionTool = from_value(t, &at)?;
        out.push(RawTool {
            kind: f.kind,
            function: RawFunction {
                name: f.name,
                description: f.description,
                parameters: f.parameters,
                strict: f.strict,
            },
        });
    }
    Ok(out)
}

/// `tool_choice`: "none" | "auto" | "required" | {"type": "function", "name": …}.
fn tool_choice(v: Value) -> Result<RawToolChoice, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Named {
        #[serde(rename = "type")]
        kind: String,
        name: String,
    }
    match v {
        Value::String(mode) => Ok(RawToolChoice::Mode(mode)),
        v => {
            let n: Named = from_value(v, "tool_choice")?;
            Ok(RawToolChoice::Named(NamedChoice {
                kind: n.kind,
                function: NamedFunction { name: n.name },
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::parse_json;
    use crate::engine::Prompt;

    fn validate(body: &str) -> Result<Generation, ApiError> {
        parse_json::<ResponsesRequest>(body.as_bytes())?.validate(&LimitsConfig::default())
    }

    fn messages(g: &Generation) -> &[ChatMessage] {
        match &g.prompt {
            Prompt::Chat { messages, .. } => messages,
            Prompt::Text(_) => panic!("a chat prompt"),
        }
    }

    fn param_of(body: &str) -> String {
        let e = validate(body).expect_err("refused");
        assert_eq!(e.status, 400, "{}", e.message);
        e.param.unwrap_or_default()
    }

    #[test]
    fn a_string_input_with_instructions_is_a_system_then_a_user_message() {
        let g = validate(r#"{"model":"m","input":"hi","instructions":"be brief"}"#).unwrap();
        let m = messages(&g);
        assert_eq!(
            (m[0].role.as_str(), m[0].content.as_str()),
            ("system", "be brief")
        );
        assert_eq!((m[1].role.as_str(), m[1].content.as_str()), ("user", "hi"));
        assert_eq!(g.n, 1);
        let echo = g.echo.expect("echo");
        assert_eq!(echo["instructions"], "be brief");
        assert_eq!(echo["temperature"], 1.0);
        assert_eq!(echo["tool_choice"], "auto");
        assert_eq!(echo["store"], false);
    }

    #[test]
    fn a_replayed_tool_loop_renders_as_calls_and_results() {
        let body = r#"{"model":"m","input":[
            {"role":"user","content":"weather?"},
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"message","id":"msg_1","status":"completed","role":"assistant",
             "content":[{"type":"output_text","text":"checking","annotations":[],"logprobs":[]}]},
            {"type":"function_call","id":"fc_1","call_id":"c1","name":"get_weather","arguments":"{}","status":"completed"},
            {"type":"function_call_output","call_id":"c1","output":"sunny"}
        ],"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{}},"strict":true}]}"#;
        let g = validate(body).unwrap();
        let m = messages(&g);
        // The tool instructions first, then the history (the reasoning item is not rendered).
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[2].role, "assistant");
        assert_eq!(m[2].content, "checking");
        assert_eq!(m[2].tool_calls.len(), 1);
        assert_eq!(m[2].tool_calls[0].name, "get_weather");
        assert_eq!(m[3].role, "tool");
        assert_eq!(m[3].content, "sunny");
        assert_eq!(m[3].name.as_deref(), Some("get_weather"));
        assert_eq!(m[3].tool_call_id.as_deref(), Some("c1"));
        assert!(g.tools.is_some() && g.json_schema.is_some());
    }

    #[test]
    fn max_tool_calls_bounds_the_calls() {
        let tools = r#""tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]"#;
        let g = validate(&format!(
            r#"{{"model":"m","input":"hi",{tools},"max_tool_calls":2}}"#
        ))
        .unwrap();
        assert_eq!(g.tools.as_ref().unwrap().max_calls(), 2);
        for bad in ["0", "9", "-1"] {
            let e = validate(&format!(
                r#"{{"model":"m","input":"hi",{tools},"max_tool_calls":{bad}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.param.as_deref(), Some("max_tool_calls"), "{bad}");
        }
    }

    #[test]
    fn stateful_fields_and_built_in_tools_are_refused_by_name() {
        let base = r#""model":"m","input":"hi""#;
        for (extra, param) in [
            (r#""previous_response_id":"resp_1""#, "previous_response_id"),
            (r#""conversation":"conv_1""#, "conversation"),
            (r#""store":true"#, "store"),
            (r#""background":true"#, "background"),
            (r#""prompt":{"id":"p"}"#, "prompt"),
            (r#""truncation":"auto""#, "truncation"),
            (r#""include":["file_search_call.results"]"#, "include[0]"),
            (r#""top_logprobs":3"#, "top_logprobs"),
            (r#""tools":[{"type":"web_search"}]"#, "tools[0].type"),
            (
                r#""tools":[{"type":"function","name":"f","bogus":1}]"#,
                "tools[0].bogus",
            ),
            (
                r#""tools":[{"type":"function","name":"f f"}]"#,
                "tools[0].name",
            ),
            (
                r#""tool_choice":{"type":"function","name":"nope"},"tools":[{"type":"function","name":"f"}]"#,
                "tool_choice",
            ),
            (
                r#""text":{"format":{"type":"json_schema","schema":{}}}"#,
                "text.format.name",
            ),
            (r#""text":{"format":{"type":"xml"}}"#, "text.format.type"),
            (
                r#""text":{"format":{"type":"json_object"}},"tools":[{"type":"function","name":"f"}]"#,
                "text.format",
            ),
            (r#""max_output_tokens":0"#, "max_output_tokens"),
            (
                r#""metadata":{"k":"v","k2":"v","k3":"v","k4":"v","k5":"v","k6":"v","k7":"v","k8":"v","k9":"v","k10":"v","k11":"v","k12":"v","k13":"v","k14":"v","k15":"v","k16":"v","k17":"v"}"#,
                "metadata",
            ),
            (
                r#""stream_options":{"include_obfuscation":false}"#,
                "stream_options",
            ),
            (r#""seed":1"#, "seed"),
        ] {
            assert_eq!(param_of(&format!("{{{base},{extra}}}")), param, "{extra}");
        }
        assert_eq!(param_of(r#"{"model":"m","input":[]}"#), "input");
        for (item, param) in [
            (r#"{"type":"item_reference","id":"x"}"#, "input[0].type"),
            (r#"{"type":"web_search_call","id":"x"}"#, "input[0].type"),
            (
                r#"{"role":"user","content":[{"type":"input_image","image_url":"x"}]}"#,
                "input[0].content[0].type",
            ),
            (
                r#"{"role":"user","content":"x","bogus":1}"#,
                "input[0].bogus",
            ),
            (r#"{"role":"tool","content":"x"}"#, "input[0].role"),
            (
                r#"{"type":"function_call","call_id":"c","name":"f"}"#,
                "input[0]",
            ),
            (
                r#"{"role":"user","content":"a\u0000b"}"#,
                "input[0].content",
            ),
        ] {
            assert_eq!(
                param_of(&format!(r#"{{"model":"m","input":[{item}]}}"#)),
                param,
                "{item}"
            );
        }
    }

    #[test]
    fn a_json_schema_text_format_constrains_the_output() {
        let g = validate(r#"{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"p","schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},"strict":true}}}"#).unwrap();
        let s = g.json_schema.expect("a schema");
        assert_eq!(s.param, "text.format.schema");
        assert_eq!(s.schema["required"][0], "a");
        let echo = g.echo.expect("echo");
        assert_eq!(echo["text"]["format"]["name"], "p");
        assert_eq!(echo["text"]["format"]["type"], "json_schema");
    }
}
