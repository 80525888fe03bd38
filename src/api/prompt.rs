//! The chat prompt of the chat-shaped endpoints (chat completions, Responses): the
//! messages, the tool instructions and tool objects, and the schema the output is
//! constrained to, with everything rendered counted against `limits.max_prompt_bytes`.

use super::check::{output_schema, FormatParams, OutputSchema};
use super::error::ApiError;
use super::tools::ToolSet;
use crate::config::LimitsConfig;
use crate::engine::{ChatMessage, Prompt};

/// The prompt of a chat-shaped request (chat completions, Responses) and the schema its
/// output is constrained to: the tool instructions go first, in a system message of their
/// own (templates that render tools also get the tool objects); a response format cannot
/// be combined with tools.
/// SECURITY: everything rendered into the prompt counts against max_prompt_bytes:
/// message text, names, tool-call ids and arguments, and the tool definitions (the
/// instructions message, and the tool objects templates render).
pub(super) fn chat_prompt(
    mut messages: Vec<ChatMessage>,
    tools: Option<&ToolSet>,
    format_schema: Option<serde_json::Value>,
    format: &FormatParams,
    limits: &LimitsConfig,
) -> Result<(Prompt, Option<OutputSchema>), ApiError> {
    if tools.is_some() && format_schema.is_some() {
        return Err(ApiError::invalid(
            format!(
                "`{}` json_object/json_schema cannot be combined with `tools` on this server",
                format.field
            ),
            format.field,
        ));
    }
    if let Some(t) = tools {
        messages.insert(0, ChatMessage::text("system", t.instructions()));
    }
    let tool_objects = tools.map(ToolSet::openai_objects).unwrap_or_default();
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
            if tools.is_some() {
                "tools"
            } else {
                format.messages
            },
        ));
    }
    let json_schema = match tools {
        Some(t) => output_schema(Some(t.answer_schema()), "tools")?,
        None => output_schema(format_schema, format.schema)?,
    };
    let prompt = Prompt::Chat {
        messages,
        tools: tool_objects,
    };
    Ok((prompt, json_schema))
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
