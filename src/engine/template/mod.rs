//! The model's own chat template: the Jinja source in the GGUF (`tokenizer.chat_template`)
//! rendered with minijinja the way Hugging Face renders it, so a prompt is exactly what
//! the model was trained on — tool definitions and tool-call history included when the
//! template knows them.
//!
//! SECURITY: the template comes from the model file (operator-trusted), the messages from
//! clients. minijinja does no I/O and no unsafe; every render runs on a fuel budget
//! (`env::FUEL`) and a recursion limit, so a template looping over client data cannot spin
//! the engine thread. Message text is passed as data, never parsed as template syntax.
//!
//! - `env`: the Jinja environment, matching transformers' (issue 28: byte parity over the
//!   71-template corpus is tested against transformers itself);
//! - `caps`: what the template renders, detected by probing, and the messages shaped to
//!   it. Templates that do not render tool calls get the tool history flattened into
//!   plain text messages (`flatten`): the generic tool format (see `api::tools`).

pub mod caps;
pub mod env;

use super::reasoning::Effort;
use super::template_families::Family;
use super::{ChatMessage, ToolCall};
pub use caps::Caps;
use minijinja::{Environment, Value as JValue};
use serde_json::{json, Value};

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
    caps: Caps,
    /// The template reads `functions` (the tools as indented JSON text) and `datetime`
    /// (firefunction-v2's contract with its serving code, which llama.cpp follows too).
    reads_functions: bool,
    reads_datetime: bool,
    bos: String,
    eos: String,
}

/// What a template is rendered with: the messages shaped to its capabilities, the tool
/// objects, and the extra variables it reads. Serialises as the reference renderer's
/// input (tests/template_reference.py).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Input {
    pub messages: Vec<Value>,
    pub tools: Option<Vec<Value>>,
    pub extra: serde_json::Map<String, Value>,
}

impl ChatTemplate {
    /// Compile `source` and find what it renders (`caps::detect`); `bos`/`eos` are the
    /// model's special-token texts. An error only when it does not compile or cannot
    /// render a single user message.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, String> {
        let env = env::build(source)?;
        let reads = env
            .get_template("chat")
            .map(|t| t.undeclared_variables(false))
            .unwrap_or_default();
        let mut t = Self {
            env,
            caps: Caps::assumed(),
            reads_functions: reads.contains("functions"),
            reads_datetime: reads.contains("datetime"),
            bos: bos.to_string(),
            eos: eos.to_string(),
        };
        t.caps = caps::detect(&t)?;
        Ok(t)
    }

    /// Does the template render `tools` itself?
    pub fn supports_tools(&self) -> bool {
        self.caps.tools
    }

    /// What the template renders, as detected.
    pub fn capabilities(&self) -> &Caps {
        &self.caps
    }

    /// The template-facing input for a conversation: messages shaped to the detected
    /// capabilities, and the tool objects when the template renders them.
    pub fn input(&self, messages: &[ChatMessage], tools: &[Value]) -> Input {
        let tools = (self.caps.tools && !tools.is_empty()).then(|| tools.to_vec());
        self.with_extra(self.caps.messages(messages), tools)
    }

    /// Template-facing messages and tools, with the extra variables the template reads.
    /// Without tools, `tools` is an empty list where that renders as `none` does (the
    /// template may loop over it unconditionally, which Python refuses for `none`).
    fn with_extra(&self, messages: Vec<Value>, tools: Option<Vec<Value>>) -> Input {
        let tools = match tools {
            Some(t) => Some(t),
            None if self.caps.empty_tools_list => Some(Vec::new()),
            None => None,
        };
        let mut extra = serde_json::Map::new();
        if self.reads_functions {
            let text = match &tools {
                Some(t) if !t.is_empty() => env::json_dumps_indented(t),
                _ => "null".to_string(),
            };
            extra.insert("functions".into(), Value::String(text));
        }
        if self.reads_datetime {
            let now = env::strftime_now("%b %d %Y %H:%M:%S GMT".into()).unwrap_or_default();
            extra.insert("datetime".into(), Value::String(now));
        }
        Input {
            messages,
            tools,
            extra,
        }
    }

    /// Render a conversation ending in the assistant's turn. `tools` are OpenAI tool
    /// objects (passed only to templates that render them).
    pub fn render(&self, messages: &[ChatMessage], tools: &[Value]) -> Result<String, String> {
        self.render_input(&self.input(messages, tools))
    }

    /// `render`, with the request's reasoning effort as the variables templates read:
    /// `reasoning_effort` (gpt-oss writes `Reasoning: low|medium|high`; none and minimal
    /// are its `low`) and `enable_thinking` (false for none and minimal: Qwen3 and its
    /// kin then write an empty thinking block).
    pub fn render_effort(
        &self,
        messages: &[ChatMessage],
        tools: &[Value],
        effort: Option<Effort>,
    ) -> Result<String, String> {
        let mut input = self.input(messages, tools);
        if let Some(e) = effort {
            let (level, thinking) = match e {
                Effort::None | Effort::Minimal => ("low", false),
                Effort::Low => ("low", true),
                Effort::Medium => ("medium", true),
                Effort::High => ("high", true),
            };
            input
                .extra
                .insert("reasoning_effort".into(), Value::from(level));
            input
                .extra
                .insert("enable_thinking".into(), Value::from(thinking));
        }
        self.render_input(&input)
    }

    /// Render template-facing input as transformers' `render_jinja_template` does:
    /// reasoning aliased as `thinking` too, `documents` none, the generation prompt on.
    pub fn render_input(&self, input: &Input) -> Result<String, String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| format!("chat template missing: {e}"))?;
        let messages: Vec<Value> = input.messages.iter().map(alias_reasoning).collect();
        let tools = match &input.tools {
            Some(t) => JValue::from_serialize(t),
            None => JValue::from(()),
        };
        let base = minijinja::context! {
            messages => JValue::from_serialize(&messages),
            tools => tools,
            documents => JValue::from(()),
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        };
        let ctx = minijinja::context! { ..JValue::from_serialize(&input.extra), ..base };
        template
            .render(ctx)
            .map_err(|e| format!("chat template failed: {}", describe(&e)))
    }

    /// Render probe input (messages and tools as given, extras added).
    fn probe(&self, messages: &[Value], tools: Option<&[Value]>) -> Result<String, String> {
        self.render_input(&self.with_extra(messages.to_vec(), tools.map(<[Value]>::to_vec)))
    }
}

/// transformers' `_alias_reasoning_fields`: a message with `reasoning_content`,
/// `thinking` or `reasoning` becomes `{"thinking": r, **message, "reasoning_content": r}`
/// (gpt-oss templates read `thinking`, most others `reasoning_content`).
fn alias_reasoning(m: &Value) -> Value {
    let Some(obj) = m.as_object() else {
        return m.clone();
    };
    let Some(r) = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()))
    else {
        return m.clone();
    };
    let mut out = serde_json::Map::new();
    out.insert("thinking".into(), r.clone());
    for (k, v) in obj {
        out.insert(k.clone(), v.clone());
    }
    out.insert("reasoning_content".into(), r.clone());
    Value::Object(out)
}

/// A render error in one line: the template's own message and where it stopped (the
/// message may quote what the template raised; never the conversation).
fn describe(e: &minijinja::Error) -> String {
    match (e.detail(), e.line()) {
        (Some(d), Some(line)) => format!("{d} (template line {line})"),
        (Some(d), None) => d.to_string(),
        (None, Some(line)) => format!("{} (template line {line})", e.kind()),
        (None, None) => e.to_string(),
    }
}

/// Arguments for the generic format: the object when the text is JSON.
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
    const HERMES: &str = "{%- if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>{% endif %}{% for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}:{{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% else %}{{ m.content | trim }}{% endif %}{% endfor %}<|assistant|>";

    fn call() -> ChatMessage {
        let mut m = ChatMessage::text("assistant", String::new());
        m.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        m
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
        let mut tool_result = ChatMessage::text("tool", "22 C".into());
        tool_result.tool_call_id = Some("call_1".into());
        tool_result.name = Some("get_weather".into());
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
            out.contains(r#"<tool_call>get_weather:{"city": "Paris"}</tool_call>"#),
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
        // A template that cannot render any conversation is refused when it is loaded,
        // with its own message and where it stopped.
        let err = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")
            .err()
            .unwrap();
        assert!(
            err.contains("roles must alternate (template line 1)"),
            "{err}"
        );
        // One that refuses some conversations loads and refuses those at request time.
        let t = ChatTemplate::new(
            "{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}x",
            "",
            "",
        )
        .unwrap();
        let two = [
            ChatMessage::text("user", "a".into()),
            ChatMessage::text("user", "b".into()),
        ];
        assert!(t
            .render(&two, &[])
            .unwrap_err()
            .contains("one message only"));
        // An endless loop runs out of fuel instead of holding the engine.
        let spin =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = ChatTemplate::new(spin, "", "").err().unwrap();
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
