//! What a chat template can render, found by rendering probe conversations (as llama.cpp
//! probes a template), never by its file name; and the template-facing messages built
//! from a request to fit it.
//!
//! Detected, in order:
//! - a user turn renders at all (else the template is refused, with the error);
//! - a system role (a template that raises on one, like Gemma 2's, gets the system text
//!   folded into the first user turn, as vLLM and llama-server do), and more than one
//!   (else they are joined: Apertus refuses a second, such as the generic tool
//!   instructions beside the client's own);
//! - a `tool` role in flattened history (else results become user turns, for templates
//!   whose roles must alternate);
//! - `tools` rendered by the template itself (else the generic tool format describes them);
//! - assistant tool calls and tool results: with the content of a call-only message
//!   absent (Hugging Face's own normalisation of `null`), `none` (DeepSeek-R1's templates
//!   test `content is none`) or empty, arguments as an object (the Hugging Face
//!   convention) or as the API's JSON string, and call ids as clients
//!   send them or of a fixed shape (Mistral's nine alphanumerics, which the request's ids
//!   are then mapped to, the same id always to the same one);
//! - content as a list of text parts (else parts reach the template joined).
//!
//! SECURITY: probing renders fixed conversations only (no client data), each under the
//! template's fuel budget; the mapping of ids is a hash of the id alone, so it says
//! nothing the client did not send.

use super::ChatTemplate;
use crate::engine::{ChatMessage, ContentShape, ToolCall};
use serde_json::{json, Map, Value};

/// How tool-call arguments reach the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arguments {
    /// A JSON object (Hugging Face's convention; what most templates `tojson`).
    Object,
    /// The API's JSON text, as a string.
    String,
}

/// How a `null` content reaches the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullContent {
    /// The key is left out (transformers drops `None` values before rendering).
    Absent,
    /// `none` (templates that test `content is none`, as DeepSeek-R1's do).
    Null,
    /// An empty string (templates that concatenate `content` unconditionally).
    Empty,
}

/// What one template can render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub system_role: bool,
    /// More than one system message renders (else they are joined into the first: the
    /// generic tool instructions are a system message of their own).
    pub several_systems: bool,
    /// A `tool` message renders when tool history is flattened (else tool results become
    /// user turns, joined with an adjacent user turn, for templates with strictly
    /// alternating user/assistant roles).
    pub tool_role: bool,
    pub tools: bool,
    /// Assistant `tool_calls` and `tool` results are rendered natively (else flattened
    /// into text in the generic format).
    pub tool_calls: bool,
    pub arguments: Arguments,
    pub null_content: NullContent,
    /// Tool-call ids must be exactly this many ASCII letters and digits.
    pub call_id_len: Option<usize>,
    pub content_parts: bool,
    /// Without tools, the template gets `tools = []` (it renders exactly as with `none`,
    /// and Python would refuse `none` where the template loops over it).
    pub empty_tools_list: bool,
}

impl Caps {
    /// What is assumed before detection (and what detection starts from).
    pub fn assumed() -> Self {
        Caps {
            system_role: true,
            several_systems: true,
            tool_role: true,
            tools: false,
            tool_calls: false,
            arguments: Arguments::Object,
            null_content: NullContent::Absent,
            call_id_len: None,
            content_parts: false,
            empty_tools_list: false,
        }
    }

    /// Short column values for README's template table: system role, tools, tool calls,
    /// arguments, null content, call ids, content parts.
    pub fn columns(&self) -> [&'static str; 7] {
        [
            match (self.system_role, self.several_systems) {
                (false, _) => "folded into user",
                (true, true) => "yes",
                (true, false) => "one",
            },
            if self.tools { "template" } else { "generic" },
            match (self.tool_calls, self.tool_role) {
                (true, _) => "native",
                (false, true) => "flattened",
                (false, false) => "flattened, results as user",
            },
            match self.arguments {
                Arguments::Object => "object",
                Arguments::String => "string",
            },
            match self.null_content {
                NullContent::Absent => "absent",
                NullContent::Null => "null",
                NullContent::Empty => "\"\"",
            },
            match self.call_id_len {
                Some(9) => "9 alnum",
                Some(_) => "fixed",
                None => "as sent",
            },
            if self.content_parts {
                "parts"
            } else {
                "joined"
            },
        ]
    }

    /// One line for the start-up log and `check-config`.
    pub fn describe(&self) -> String {
        format!(
            "system role: {}; tools: {}; tool calls: {}; arguments: {}; null content: {}; call ids: {}; content parts: {}",
            match (self.system_role, self.several_systems) {
                (false, _) => "no (folded into the first user turn)",
                (true, true) => "yes",
                (true, false) => "one (several are joined)",
            },
            if self.tools { "rendered by the template" } else { "described in the generic format" },
            match (self.tool_calls, self.tool_role) {
                (true, _) => "native",
                (false, true) => "flattened into text",
                (false, false) => "flattened into text, results as user turns",
            },
            match self.arguments { Arguments::Object => "object", Arguments::String => "JSON string" },
            match self.null_content { NullContent::Absent => "absent", NullContent::Null => "null", NullContent::Empty => "empty string" },
            match self.call_id_len { Some(n) => format!("{n} alphanumerics (mapped)"), None => "as sent".into() },
            if self.content_parts { "as parts" } else { "joined" },
        )
    }
}

const PROBE_USER: &str = "probe-user-7f3a";
const PROBE_SYSTEM: &str = "probe-system-7f3a";
const PROBE_FUNCTION: &str = "probe_function_7f3a";
const PROBE_ARGUMENT: &str = "probe_argument_7f3a";
const PROBE_RESULT: &str = "probe-result-7f3a";
const PROBE_PART: &str = "probe-part-7f3a";

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn probe_tool() -> Value {
    json!({"type": "function", "function": {"name": PROBE_FUNCTION,
        "description": "probe", "parameters": {"type": "object",
        "properties": {PROBE_ARGUMENT: {"type": "string"}}, "required": [PROBE_ARGUMENT]}}})
}

/// Find what `t` renders; an error only when not even a single user turn renders.
pub fn detect(t: &ChatTemplate) -> Result<Caps, String> {
    let ok = |messages: &[Value], tools: Option<&[Value]>, marks: &[&str]| {
        t.probe(messages, tools)
            .is_ok_and(|out| marks.iter().all(|m| out.contains(m)))
    };
    let system = json!({"role": "system", "content": PROBE_SYSTEM});
    let system_role = ok(&[system.clone(), user(PROBE_USER)], None, &[PROBE_SYSTEM]);
    if !system_role {
        // The template must render something; report its own error if not.
        t.probe(&[user(PROBE_USER)], None)
            .map_err(|e| format!("cannot render a conversation of one user message: {e}"))?;
    }
    let second = json!({"role": "system", "content": PROBE_PART});
    let several_systems = system_role
        && ok(
            &[system.clone(), second, user(PROBE_USER)],
            None,
            &[PROBE_SYSTEM, PROBE_PART],
        );
    let tool_role = ok(
        &[
            user(PROBE_USER),
            json!({"role": "assistant", "content": PROBE_SYSTEM}),
            json!({"role": "tool", "content": PROBE_RESULT}),
        ],
        None,
        &[PROBE_RESULT],
    );
    let tools_list = [probe_tool()];
    let tools = ok(&[user(PROBE_USER)], Some(&tools_list), &[PROBE_FUNCTION]);
    let plain = [user(PROBE_USER)];
    let empty_tools_list = t.probe(&plain, Some(&[])).ok() == t.probe(&plain, None).ok();
    let mut caps = Caps {
        system_role,
        several_systems,
        tool_role,
        tools,
        empty_tools_list,
        ..Caps::assumed()
    };
    'search: for id_len in [None, Some(9)] {
        for null_content in [NullContent::Absent, NullContent::Null, NullContent::Empty] {
            for arguments in [Arguments::Object, Arguments::String] {
                let trial = Caps {
                    tool_calls: true,
                    arguments,
                    null_content,
                    call_id_len: id_len,
                    ..caps.clone()
                };
                let messages = trial.messages(&call_probe());
                let tools = tools.then_some(&tools_list[..]);
                if ok(
                    &messages,
                    tools,
                    &[PROBE_FUNCTION, PROBE_ARGUMENT, PROBE_RESULT],
                ) {
                    caps = trial;
                    break 'search;
                }
            }
        }
    }
    // Parts for every role the conversation may hold, or for none: a template that reads
    // a user's parts but prints a system message's list as-is gets joined text.
    let part =
        |role: &str| json!({"role": role, "content": [{"type": "text", "text": PROBE_PART}]});
    let mut parts = vec![part("user"), part("assistant"), part("user")];
    if caps.system_role {
        parts.insert(0, part("system"));
    }
    caps.content_parts = t
        .probe(&parts, None)
        .is_ok_and(|out| out.matches(PROBE_PART).count() == parts.len() && !out.contains("'text'"));
    Ok(caps)
}

/// A user turn, a call, its result: the second turn of every agent loop.
fn call_probe() -> Vec<ChatMessage> {
    let mut call = ChatMessage::text("assistant", String::new());
    call.shape = ContentShape::Null;
    call.tool_calls.push(ToolCall {
        id: "call_probe_1".into(),
        name: PROBE_FUNCTION.into(),
        arguments: format!(r#"{{"{PROBE_ARGUMENT}":"x"}}"#),
    });
    let mut result = ChatMessage::text("tool", PROBE_RESULT.into());
    result.tool_call_id = Some("call_probe_1".into());
    result.name = Some(PROBE_FUNCTION.into());
    vec![ChatMessage::text("user", PROBE_USER.into()), call, result]
}

impl Caps {
    /// The template-facing messages for a request's conversation.
    pub fn messages(&self, messages: &[ChatMessage]) -> Vec<Value> {
        let flattened;
        let messages = if self.tool_calls {
            messages
        } else {
            flattened = super::flatten(messages);
            &flattened
        };
        let joined;
        let messages = if self.several_systems || !self.system_role {
            messages
        } else {
            joined = join_systems(messages);
            &joined
        };
        let folded;
        let messages = if self.system_role {
            messages
        } else {
            folded = fold_system(messages);
            &folded
        };
        let as_user;
        let messages = if self.tool_calls || self.tool_role {
            messages
        } else {
            as_user = results_as_user_turns(messages);
            &as_user
        };
        messages.iter().map(|m| self.message(m)).collect()
    }

    fn message(&self, m: &ChatMessage) -> Value {
        let mut v = Map::new();
        v.insert("role".into(), json!(m.role));
        match &m.shape {
            ContentShape::Text => {
                v.insert("content".into(), json!(m.content));
            }
            ContentShape::Parts(parts) if self.content_parts => {
                let parts: Vec<Value> = parts
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                v.insert("content".into(), Value::Array(parts));
            }
            ContentShape::Parts(_) => {
                v.insert("content".into(), json!(m.content));
            }
            ContentShape::Null => match self.null_content {
                NullContent::Absent => {}
                NullContent::Null => {
                    v.insert("content".into(), Value::Null);
                }
                NullContent::Empty => {
                    v.insert("content".into(), json!(""));
                }
            },
        }
        if let Some(r) = &m.reasoning {
            v.insert("reasoning_content".into(), json!(r));
        }
        if !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": self.call_id(&c.id), "type": "function",
                           "function": {"name": c.name, "arguments": self.arguments(c)}})
                })
                .collect();
            v.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(id) = &m.tool_call_id {
            v.insert("tool_call_id".into(), json!(self.call_id(id)));
        }
        if let Some(name) = &m.name {
            v.insert("name".into(), json!(name));
        }
        Value::Object(v)
    }

    fn arguments(&self, c: &ToolCall) -> Value {
        match self.arguments {
            Arguments::String => Value::String(c.arguments.clone()),
            Arguments::Object => serde_json::from_str(&c.arguments)
                .unwrap_or_else(|_| Value::String(c.arguments.clone())),
        }
    }

    /// The id as the template needs it: as sent, or (fixed shape) the id itself when it
    /// already fits, else nine letters and digits derived from it, so the same client id
    /// maps to the same template id in every turn of a conversation.
    pub fn call_id(&self, id: &str) -> String {
        let Some(len) = self.call_id_len else {
            return id.to_string();
        };
        if id.len() == len && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return id.to_string();
        }
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        digest
            .as_ref()
            .iter()
            .cycle()
            .take(len)
            .filter_map(|b| ALPHABET.get(*b as usize % ALPHABET.len()))
            .map(|b| *b as char)
            .collect()
    }
}

/// For templates that take one system message: every system text, in order, joined
/// (a blank line between) in the first one's place.
fn join_systems(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let texts: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    if texts.len() < 2 {
        return messages.to_vec();
    }
    let mut joined = Some(ChatMessage::text("system", texts.join("\n\n")));
    messages
        .iter()
        .filter_map(|m| match m.role.as_str() {
            "system" => joined.take(),
            _ => Some(m.clone()),
        })
        .collect()
}

/// For templates that render neither tool calls nor a `tool` role (flattened history):
/// each result becomes user text, joined to an adjacent user turn (a blank line between)
/// so that user and assistant turns still alternate.
fn results_as_user_turns(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    // Whether the last message out holds a tool result (only those are joined).
    let mut last_is_result = false;
    for m in messages {
        let is_result = m.role == "tool";
        let m = if is_result {
            ChatMessage::text("user", m.content.clone())
        } else {
            m.clone()
        };
        match out.last_mut() {
            Some(last)
                if last.role == "user" && m.role == "user" && (is_result || last_is_result) =>
            {
                last.content = format!("{}\n\n{}", last.content, m.content);
                last.shape = ContentShape::Text;
            }
            _ => out.push(m),
        }
        last_is_result =
            is_result || (last_is_result && out.last().is_some_and(|l| l.role == "user"));
    }
    out
}

/// For templates without a system role: every system text, in order, goes before the
/// first user message's text (a blank line between); with no user message, a user
/// message holding it takes the first system message's place.
fn fold_system(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    if system.is_empty() {
        return messages.to_vec();
    }
    let prefix = system.join("\n\n");
    let has_user = messages.iter().any(|m| m.role == "user");
    let mut out = Vec::with_capacity(messages.len());
    let mut pending = Some(prefix);
    for m in messages {
        if m.role == "system" {
            if !has_user {
                if let Some(p) = pending.take() {
                    out.push(ChatMessage::text("user", p));
                }
            }
            continue;
        }
        if m.role == "user" {
            if let Some(p) = pending.take() {
                let mut m = m.clone();
                m.content = format!("{p}\n\n{}", m.content);
                if let ContentShape::Parts(parts) = &mut m.shape {
                    parts.insert(0, format!("{p}\n\n"));
                }
                out.push(m);
                continue;
            }
        }
        out.push(m.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_shape_ids_are_stable_and_fitting_ids_kept() {
        let caps = Caps {
            call_id_len: Some(9),
            ..Caps::assumed()
        };
        let a = caps.call_id("call_abc");
        assert_eq!(a.len(), 9);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert_eq!(a, caps.call_id("call_abc"));
        assert_ne!(a, caps.call_id("call_abd"));
        assert_eq!(caps.call_id("Ab3dE6gH9"), "Ab3dE6gH9");
    }

    #[test]
    fn systems_join_and_results_become_user_turns_where_templates_need_it() {
        let texts = |ms: &[ChatMessage]| -> Vec<(String, String)> {
            ms.iter()
                .map(|m| (m.role.clone(), m.content.clone()))
                .collect()
        };
        let joined = join_systems(&[
            ChatMessage::text("system", "tools".into()),
            ChatMessage::text("system", "persona".into()),
            ChatMessage::text("user", "U".into()),
        ]);
        assert_eq!(
            texts(&joined),
            [
                ("system".to_string(), "tools\n\npersona".to_string()),
                ("user".to_string(), "U".to_string()),
            ]
        );
        let turns = results_as_user_turns(&[
            ChatMessage::text("user", "U".into()),
            ChatMessage::text("assistant", "call".into()),
            ChatMessage::text("tool", "R1".into()),
            ChatMessage::text("tool", "R2".into()),
        ]);
        assert_eq!(
            texts(&turns),
            [
                ("user".to_string(), "U".to_string()),
                ("assistant".to_string(), "call".to_string()),
                ("user".to_string(), "R1\n\nR2".to_string()),
            ]
        );
    }

    #[test]
    fn system_text_folds_into_the_first_user_turn() {
        let out = fold_system(&[
            ChatMessage::text("system", "S1".into()),
            ChatMessage::text("user", "U1".into()),
            ChatMessage::text("assistant", "A".into()),
            ChatMessage::text("system", "S2".into()),
            ChatMessage::text("user", "U2".into()),
        ]);
        let got: Vec<(String, String)> = out
            .iter()
            .map(|m| (m.role.clone(), m.content.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("user".to_string(), "S1\n\nS2\n\nU1".to_string()),
                ("assistant".to_string(), "A".to_string()),
                ("user".to_string(), "U2".to_string()),
            ]
        );
        let only = fold_system(&[ChatMessage::text("system", "S".into())]);
        assert_eq!(only.len(), 1);
        assert_eq!(
            (only[0].role.as_str(), only[0].content.as_str()),
            ("user", "S")
        );
    }
}
