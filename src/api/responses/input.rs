//! The Responses `input`: a string, or items read one by one into strict types by their
//! `type` — messages, `function_call`, `function_call_output`, `reasoning` (accepted, not
//! rendered) — and turned into the chat messages the template renders.
//!
//! SECURITY: an item of any other type (`item_reference`: nothing is stored; built-in
//! tool calls) is a 400 naming `input[i].type`; an unknown field is a 400 with its path;
//! the item count is `limits.max_messages`; every text is checked for NUL.

use super::super::check::check_text;
use super::super::error::ApiError;
use super::super::json::from_value;
use super::Input;
use crate::config::LimitsConfig;
use crate::engine::{ChatMessage, ToolCall};
use serde::Deserialize;
use serde_json::Value;

/// A message item; `type` may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageItem {
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    role: String,
    content: Value,
    /// Replayed output items carry their id and status; neither is used.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// A text part of a message: `input_text`, or `output_text` replayed from an answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextPart {
    #[serde(rename = "type")]
    _kind: String,
    text: String,
    #[serde(default)]
    annotations: Option<Vec<Value>>,
    #[serde(default)]
    logprobs: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionCallItem {
    #[serde(rename = "type")]
    _kind: String,
    call_id: String,
    name: String,
    arguments: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionCallOutputItem {
    #[serde(rename = "type")]
    _kind: String,
    call_id: String,
    output: Value,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// A reasoning item replayed from an earlier answer: accepted, not rendered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasoningItem {
    #[serde(rename = "type")]
    _kind: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    summary: Option<Value>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    encrypted_content: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
}

/// The input as chat messages: a string is one user message; items are read in order,
/// consecutive function calls joining the assistant turn before them.
pub(super) fn input_messages(
    input: Input,
    limits: &LimitsConfig,
) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match input {
        Input::Text(t) => {
            check_text(&t, "input")?;
            return Ok(vec![ChatMessage::text("user", t)]);
        }
        Input::Items(items) => items,
    };
    if items.is_empty() {
        return Err(ApiError::invalid("`input` must not be empty", "input"));
    }
    if items.len() > limits.max_messages as usize {
        return Err(ApiError::invalid(
            format!("`input` may hold at most {} items", limits.max_messages),
            "input",
        ));
    }
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(items.len());
    // Function names by call id, from earlier calls, for their outputs.
    let mut called: Vec<(String, String)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = match item.get("type") {
            None => "message".to_string(),
            Some(Value::String(k)) => k.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "`type` must be a string",
                    format!("{at}.type"),
                ))
            }
        };
        match kind.as_str() {
            "message" => {
                let m: MessageItem = from_value(item, &at)?;
                let _ = (m.id, m.status);
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    _ => {
                        return Err(ApiError::invalid(
                            "`role` must be one of user, system, developer, assistant",
                            format!("{at}.role"),
                        ))
                    }
                };
                let text = message_text(m.content, &format!("{at}.content"))?;
                messages.push(ChatMessage::text(role, text));
            }
            "function_call" => {
                let c: FunctionCallItem = from_value(item, &at)?;
                let _ = (c.id, c.status);
                for (field, text) in [("call_id", &c.call_id), ("name", &c.name), ("arguments", &c.arguments)] {
                    check_text(text, &format!("{at}.{field}"))?;
                }
                called.push((c.call_id.clone(), c.name.clone()));
                let call = ToolCall {
                    id: c.call_id,
                    name: c.name,
                    arguments: c.arguments,
                };
                match messages.last_mut() {
                    Some(m) if m.role == "assistant" => m.tool_calls.push(call),
                    _ => {
                        let mut m = ChatMessage::text("assistant", String::new());
                        m.tool_calls.push(call);
                        messages.push(m);
                    }
                }
            }
            "function_call_output" => {
                let o: FunctionCallOutputItem = from_value(item, &at)?;
                let _ = (o.id, o.status);
                check_text(&o.call_id, &format!("{at}.call_id"))?;
                let text = message_text(o.output, &format!("{at}.output"))?;
                let mut m = ChatMessage::text("tool", text);
                m.name = called
                    .iter()
                    .find(|(id, _)| *id == o.call_id)
                    .map(|(_, n)| n.clone());
                m.tool_call_id = Some(o.call_id);
                messages.push(m);
            }
            "reasoning" => {
                let r: ReasoningItem = from_value(item, &at)?;
                let _ = (r.id, r.summary, r.content, r.encrypted_content, r.status);
            }
            "item_reference" => {
                return Err(ApiError::invalid(
                    "This server does not store items; send the item itself instead of a reference",
                    format!("{at}.type"),
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    "Input items must be message, function_call, function_call_output or reasoning on this server",
                    format!("{at}.type"),
                ))
            }
        }
    }
    Ok(messages)
}

/// A message's (or a tool output's) text: a string, or a list of text parts.
fn message_text(content: Value, at: &str) -> Result<String, ApiError> {
    let text = match content {
        Value::String(s) => s,
        Value::Array(parts) => {
            let mut joined = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                let at = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => {
                        let part: TextPart = from_value(p, &at)?;
                        let _ = (part.annotations, part.logprobs);
                        joined.push_str(&part.text);
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            "Only input_text and output_text parts are supported by this model",
                            format!("{at}.type"),
                        ))
                    }
                }
            }
            joined
        }
        _ => {
            return Err(ApiError::invalid(
                "Content must be a string or a list of text parts",
                at.to_string(),
            ))
        }
    };
    check_text(&text, at)?;
    Ok(text)
}
