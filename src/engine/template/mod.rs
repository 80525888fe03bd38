//! The model's own chat template: the Jinja source in the GGUF (`tokenizer.chat_template`)
//! rendered with minijinja the way Hugging Face renders it, so a prompt is exactly what
//! the model was trained on — tool definitions and tool-call history included when the
//! template knows them.
//!
//! SECURITY: the template comes from the model file (operator-trusted), the messages from
//! clients. minijinja does no I/O and no unsafe; every render runs on a fuel budget
//! (`FUEL`) and a recursion limit, so a template looping over client data cannot spin the
//! engine thread. Message text is passed as data, never parsed as template syntax.
//!
//! Templates that do not mention `tools` get the tool history flattened into plain text
//! messages (`flatten`): the generic tool format (see `api::tools`).

use super::template_families::Family;
use super::{ChatMessage, ToolCall};
use minijinja::{Environment, ErrorKind, Value as JValue};
use serde_json::{json, Value};

/// Instructions one render may execute (a 256-message chat through a typical template
/// takes ~30 000).
const FUEL: u64 = 2_000_000;
/// Deepest nesting of template constructs.
const RECURSION_LIMIT: usize = 100;

/// Largest `model.chat_template_file` read (model templates are a few KiB; the largest
/// published ones are tens of KiB).
pub const MAX_TEMPLATE_FILE_BYTES: u64 = 256 * 1024;

/// Where the chat template in use comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// `model.chat_template_file`.
    File(std::path::PathBuf),
    /// `model.chat_template`: a built-in family.
    Family(Family),
    /// The GGUF's `tokenizer.chat_template`.
    ModelFile,
}

/// What the operator configured instead of the model file's template, if anything.
#[derive(Debug, Clone, Copy)]
pub enum Configured<'a> {
    None,
    /// `model.chat_template_file` and its text.
    File(&'a std::path::Path, &'a str),
    Family(Family),
}

/// The chat template start-up will use: the configured one, else the model file's;
/// None when there is neither.
pub fn effective(
    configured: Configured<'_>,
    gguf: Option<&str>,
) -> Option<(TemplateOrigin, String)> {
    match (configured, gguf) {
        (Configured::File(path, text), _) => {
            Some((TemplateOrigin::File(path.to_path_buf()), text.to_string()))
        }
        (Configured::Family(f), _) => Some((TemplateOrigin::Family(f), f.source().to_string())),
        (Configured::None, Some(text)) => Some((TemplateOrigin::ModelFile, text.to_string())),
        (Configured::None, None) => None,
    }
}

/// Read `model.chat_template_file`: UTF-8, at most `MAX_TEMPLATE_FILE_BYTES`, compiling
/// and rendering the probe conversation. Errors name the key.
pub fn read_file(path: &std::path::Path) -> Result<String, String> {
    let named = |e: String| format!("model.chat_template_file ({}): {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| named(e.to_string()))?;
    if meta.len() > MAX_TEMPLATE_FILE_BYTES {
        return Err(named(format!(
            "larger than {MAX_TEMPLATE_FILE_BYTES} bytes"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| named(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| named("not UTF-8".into()))?;
    ChatTemplate::new(&text, "", "")
        .and_then(|t| t.render(&probe(), &[]))
        .map_err(named)?;
    Ok(text)
}

/// The conversation a template must render to be used at all: a system and a user turn.
pub fn probe() -> Vec<ChatMessage> {
    vec![
        ChatMessage::text("system", "probe".into()),
        ChatMessage::text("user", "probe".into()),
    ]
}

/// A short conversation with every kind of turn (system, user, an assistant tool call,
/// its result, a reply), for `check-config` and the start-up check of a template file.
pub fn sample_conversation() -> Vec<ChatMessage> {
    let mut call = ChatMessage::text("assistant", String::new());
    call.tool_calls.push(ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    });
    let mut result = ChatMessage::text("tool", r#"{"temp_c":21}"#.into());
    result.tool_call_id = Some("call_1".into());
    result.name = Some("get_weather".into());
    vec![
        ChatMessage::text("system", "You are a helpful assistant.".into()),
        ChatMessage::text("user", "What is the weather in Paris?".into()),
        call,
        result,
        ChatMessage::text("assistant", "It is 21 °C in Paris.".into()),
        ChatMessage::text("user", "Thanks!".into()),
    ]
}

/// The one tool the sample conversation calls, as an OpenAI tool object.
pub fn sample_tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
    ]
}

/// SHA-256 of a template's text, in hex (what `template` prints, to compare deployments).
pub fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct ChatTemplate {
    env: Environment<'static>,
    supports_tools: bool,
    bos: String,
    eos: String,
}

fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(fmt)` as some templates call it (today's date in the system prompt).
/// Only the date formats templates use are supported; the clock is UTC.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let now = time::OffsetDateTime::now_utc();
    let month = |long: bool| {
        let m = now.month().to_string();
        if long {
            m
        } else {
            m[..3].to_string()
        }
    };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&now.year().to_string()),
            Some('m') => out.push_str(&format!("{:02}", u8::from(now.month()))),
            Some('d') => out.push_str(&format!("{:02}", now.day())),
            Some('B') => out.push_str(&month(true)),
            Some('b') => out.push_str(&month(false)),
            Some('%') => out.push('%'),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "unsupported strftime format",
                ))
            }
        }
    }
    Ok(out)
}

impl ChatTemplate {
    /// Compile `source`; `bos`/`eos` are the model's special-token texts.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("chat template does not compile: {e}"))?;
        Ok(Self {
            env,
            supports_tools: source.contains("tools"),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Does the template render `tools` and tool-call history itself?
    pub fn supports_tools(&self) -> bool {
        self.supports_tools
    }

    /// Render a conversation ending in the assistant's turn. `tools` are OpenAI tool
    /// objects (passed only to templates that render them).
    pub fn render(&self, messages: &[ChatMessage], tools: &[Value]) -> Result<String, String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| format!("chat template missing: {e}"))?;
        let msgs: Vec<Value> = if self.supports_tools {
            messages.iter().map(hf_message).collect()
        } else {
            flatten(messages).iter().map(hf_message).collect()
        };
        let tools = if self.supports_tools && !tools.is_empty() {
            JValue::from_serialize(tools)
        } else {
            JValue::from(())
        };
        template
            .render(minijinja::context! {
                messages => JValue::from_serialize(&msgs),
                tools => tools,
                add_generation_prompt => true,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| format!("chat template failed: {e}"))
    }
}

/// A message in the shape Hugging Face templates read.
fn hf_message(m: &ChatMessage) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("role".into(), json!(m.role));
    v.insert("content".into(), json!(m.content));
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": arguments(c)}})
            })
            .collect();
        v.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &m.tool_call_id {
        v.insert("tool_call_id".into(), json!(id));
    }
    if let Some(name) = &m.name {
        v.insert("name".into(), json!(name));
    }
    Value::Object(v)
}

/// Arguments are a JSON string in the API; templates expect the object.
fn arguments(c: &ToolCall) -> Value {
    serde_json::from_str(&c.arguments).unwrap_or_else(|_| Value::String(c.arguments.clone()))
}

/// For templates (and llama.cpp's built-in renderer) that know no tools: an assistant
/// message's calls become its text in the generic format, a tool result a `tool` message
/// with a JSON body naming the function.
pub fn flatten(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .map(|m| {
            let content = if !m.tool_calls.is_empty() {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({"name": c.name, "arguments": arguments(c)}))
                    .collect();
                let calls = json!({"tool_calls": calls}).to_string();
                if m.content.is_empty() {
                    calls
                } else {
                    format!("{}\n{calls}", m.content)
                }
            } else if m.role == "tool" {
                json!({"tool_response": {"name": m.name, "content": m.content}}).to_string()
            } else {
                m.content.clone()
            };
            ChatMessage::text(&m.role, content)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test model's template (SmolLM2-135M-Instruct), verbatim.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// A Hermes-style template that renders tools and tool calls itself.
    const HERMES: &str = "{%- if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>{% endif %}{% for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% else %}{{ m.content | trim }}{% endif %}{% endfor %}<|assistant|>";

    fn call() -> ChatMessage {
        ChatMessage {
            role: "assistant".into(),
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }],
            tool_call_id: None,
            name: None,
        }
    }

    #[test]
    fn renders_the_model_template_exactly() {
        let t = ChatTemplate::new(SMOLLM2, "", "<|im_end|>").unwrap();
        assert!(!t.supports_tools());
        let out = t
            .render(&[ChatMessage::text("user", "Hi {{ 7*7 }}".into())], &[])
            .unwrap();
        // Client text is data: no template syntax in it is evaluated.
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi {{ 7*7 }}<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tool_history_is_native_or_flattened() {
        let tool_result = ChatMessage {
            role: "tool".into(),
            content: "22 C".into(),
            tool_calls: vec![],
            tool_call_id: Some("call_1".into()),
            name: Some("get_weather".into()),
        };
        let history = [
            ChatMessage::text("user", "weather?".into()),
            call(),
            tool_result,
        ];
        let tools = [json!({"type": "function", "function": {"name": "get_weather"}})];
        let native = ChatTemplate::new(HERMES, "<s>", "</s>").unwrap();
        assert!(native.supports_tools());
        let out = native.render(&history, &tools).unwrap();
        assert!(out.starts_with("<tools>get_weather;</tools>"), "{out}");
        assert!(
            out.contains(r#"<tool_call>{"city":"Paris"}</tool_call>"#),
            "{out}"
        );
        let plain = ChatTemplate::new(SMOLLM2, "", "").unwrap();
        let out = plain.render(&history, &tools).unwrap();
        assert!(
            out.contains(
                r#"<|im_start|>assistant
{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"<|im_start|>tool
{"tool_response":{"name":"get_weather","content":"22 C"}}"#
            ),
            "{out}"
        );
    }

    #[test]
    fn hostile_or_broken_templates_fail_cleanly() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        assert!(t
            .render(&[], &[])
            .unwrap_err()
            .contains("roles must alternate"));
        // An endless loop runs out of fuel instead of holding the engine.
        let spin =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(spin, "", "").unwrap();
        let err = t.render(&[], &[]).unwrap_err();
        assert!(
            err.contains("fuel"),
            "stopped by the fuel budget, not something else: {err}"
        );
        let py = ChatTemplate::new(
            "{{ messages[0].content.strip().upper() }}{{ strftime_now('%Y') }}",
            "",
            "",
        )
        .unwrap();
        let out = py
            .render(&[ChatMessage::text("user", "  hi ".into())], &[])
            .unwrap();
        assert!(out.starts_with("HI2"), "{out}");
    }

    #[test]
    fn a_template_file_is_bounded_utf8_and_must_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jinja");
        std::fs::write(&path, SMOLLM2).unwrap();
        assert_eq!(read_file(&path).unwrap(), SMOLLM2);
        for (content, why) in [
            (
                vec![b'{'; MAX_TEMPLATE_FILE_BYTES as usize + 1],
                "larger than",
            ),
            (vec![0xff, 0xfe], "not UTF-8"),
            (b"{% for %}".to_vec(), "does not compile"),
            (b"{{ raise_exception('no') }}".to_vec(), "no"),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = read_file(&path).unwrap_err();
            assert!(e.starts_with("model.chat_template_file ("), "{e}");
            assert!(e.contains(why), "{e}");
        }
        let e = read_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.starts_with("model.chat_template_file ("), "{e}");
    }

    #[test]
    fn the_configured_file_wins_over_the_model_files_template() {
        let p = std::path::Path::new("/t.jinja");
        assert_eq!(
            effective(Configured::File(p, "file"), Some("gguf")),
            Some((TemplateOrigin::File(p.to_path_buf()), "file".into()))
        );
        assert_eq!(
            effective(Configured::Family(Family::Gemma), Some("gguf")),
            Some((
                TemplateOrigin::Family(Family::Gemma),
                Family::Gemma.source().into()
            ))
        );
        assert_eq!(
            effective(Configured::None, Some("gguf")),
            Some((TemplateOrigin::ModelFile, "gguf".into()))
        );
        assert_eq!(effective(Configured::None, None), None);
        // SHA-256 of "abc" (FIPS 180-2 test vector).
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_sample_conversation_renders_every_kind_of_turn() {
        let t = ChatTemplate::new(HERMES, "", "").unwrap();
        let text = t.render(&sample_conversation(), &sample_tools()).unwrap();
        assert!(text.contains("<tools>get_weather;</tools>"), "{text}");
        assert!(text.contains("<tool_call>"), "{text}");
        assert!(text.contains("<|tool|>"), "{text}");
    }
}
