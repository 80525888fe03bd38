//! The chat prompt of the chat-shaped endpoints (chat completions, Responses): the
//! messages, the tool instructions and tool objects, and the schema the output is
//! constrained to, with everything rendered counted against `limits.max_prompt_bytes`.

use super::check::{output_schema, FormatParams, OutputSchema};
use super::error::ApiError;
use super::generation::Generation;
use super::tools::ToolSet;
use crate::config::LimitsConfig;
use crate::engine::tool_syntax::{ToolPlan, ToolSyntax};
use crate::engine::{ChatMessage, Prompt};
use serde_json::Value;

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
        // Set with the reasoning plan (`generate`), once the effort is known.
        effort: None,
    };
    Ok((prompt, json_schema))
}

/// A model with its family's own tool syntax (`engine::tool_syntax`): the chat template
/// describes the tools in its own words, so the generic format's instructions message
/// (which `chat_prompt` put first) goes, and the output is constrained call by call (one
/// call's schema, started at each opener) instead of as one JSON envelope. Returns how
/// the engine runs the calls; None when the request has no tools.
pub(super) fn use_native_tools(
    generation: &mut Generation,
    syntax: ToolSyntax,
) -> Result<Option<ToolPlan>, ApiError> {
    let Some(tools) = &generation.tools else {
        return Ok(None);
    };
    if let Prompt::Chat { messages, .. } = &mut generation.prompt {
        let instructions = tools.instructions();
        if messages
            .first()
            .is_some_and(|m| m.role == "system" && m.content == instructions)
        {
            messages.remove(0);
        }
    }
    let call = tools.native_call(syntax);
    let parameters: Vec<&Value> = call.functions.iter().map(|(_, p)| p).collect();
    let mut schema = output_schema(Some(serde_json::json!(parameters)), "tools")?;
    if let Some(s) = schema.as_mut() {
        s.native = Some(call);
    }
    generation.json_schema = schema;
    Ok(Some(tools.native_plan(syntax)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::chat::ChatCompletionRequest;
    use crate::api::json::parse_json;

    fn chat(body: &str) -> Generation {
        parse_json::<ChatCompletionRequest>(body.as_bytes())
            .and_then(|r| r.validate(&LimitsConfig::default()))
            .expect("a valid request")
    }

    const WITH_TOOLS: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
        "tools":[{"type":"function","function":{"name":"add",
          "parameters":{"type":"object","properties":{"a":{"type":"integer"}}}}}]}"#;

    fn roles(g: &Generation) -> Vec<String> {
        match &g.prompt {
            Prompt::Chat { messages, .. } => messages.iter().map(|m| m.role.clone()).collect(),
            Prompt::Text(_) => Vec::new(),
        }
    }

    #[test]
    fn a_native_syntax_drops_the_generic_instructions_and_constrains_one_call() {
        let mut g = chat(WITH_TOOLS);
        assert_eq!(
            roles(&g),
            ["system", "user"],
            "the generic instructions first"
        );
        let plan = use_native_tools(&mut g, ToolSyntax::HERMES)
            .unwrap()
            .unwrap();
        assert_eq!(roles(&g), ["user"]);
        assert!(!plan.force, "auto: the model opens calls itself");
        assert_eq!(plan.max_calls, 8);
        let out = g.json_schema.as_ref().unwrap();
        let call = out
            .native
            .as_ref()
            .expect("one call in the family's syntax");
        assert_eq!(call.syntax, ToolSyntax::HERMES);
        assert_eq!(call.functions[0].0, "add");
        assert_eq!(call.functions[0].1["properties"]["a"]["type"], "integer");
        // What the size limit measures: the called functions' parameter schemas.
        assert_eq!(out.schema[0]["properties"]["a"]["type"], "integer");
        // The tool objects stay for the template to render.
        match &g.prompt {
            Prompt::Chat { tools, .. } => assert_eq!(tools.len(), 1),
            Prompt::Text(_) => panic!("a chat prompt"),
        }
        let named = WITH_TOOLS.replace(
            r#""tools":"#,
            r#""tool_choice":{"type":"function","function":{"name":"add"}},"tools":"#,
        );
        let mut g = chat(&named);
        let plan = use_native_tools(&mut g, ToolSyntax::MISTRAL)
            .unwrap()
            .unwrap();
        assert!(plan.force);
        assert_eq!(plan.max_calls, 1);
        let call = g.json_schema.as_ref().unwrap().native.as_ref().unwrap();
        assert_eq!(call.max_calls, 1);
        // No tools: nothing changes.
        let mut g = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert!(use_native_tools(&mut g, ToolSyntax::HERMES)
            .unwrap()
            .is_none());
        assert!(g.json_schema.is_none());
    }
}
