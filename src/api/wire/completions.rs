//! The chat completions and completions wire: whole bodies (`chat.completion`,
//! `text_completion`) and stream chunks (`chat.completion.chunk`), with log-probabilities
//! and parsed tool calls, in the shapes the OpenAI SDKs parse.

use super::{sse_event, usage_json, CallDelta, ChoiceBuilder, Shape, Totals, Wire};
use crate::api::error::ApiError;
use crate::api::tools::{self, Answer};
use crate::engine::family::progress::progress;
use crate::engine::family::Declared;
use crate::engine::{FinishReason, TokenLogprob};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};
/// Which endpoint's shape to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// Identity shared by the body or every chunk of one response.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
    /// `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
    pub system_fingerprint: String,
    /// The id's random part (24 hex digits), also the base of tool-call ids.
    pub random: String,
}

impl Meta {
    pub fn object(&self, stream: bool) -> &'static str {
        match (self.kind, stream) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// The envelope every body and chunk shares, with its choices.
    fn envelope(&self, stream: bool, choices: Vec<Value>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(self.object(stream)));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert("system_fingerprint".into(), json!(self.system_fingerprint));
        m.insert("choices".into(), Value::Array(choices));
        m
    }

    /// Write a stream chunk with one choice: `body` is the chat delta or the completion
    /// text. Serialized straight from borrowed fields, with no `Value` tree: this runs
    /// once per token per stream (issue 30's serving-path profile).
    fn chunk(
        &self,
        out: &mut String,
        index: usize,
        body: &impl Serialize,
        logprobs: &Value,
        finish: Option<&str>,
    ) {
        let chunk = ChunkJson {
            meta: self,
            choice: ChoiceJson {
                index,
                field: match self.kind {
                    Kind::Chat => "delta",
                    Kind::Completion => "text",
                },
                body,
                logprobs,
                finish,
            },
        };
        sse_event(out, None, &chunk);
    }

    fn empty_body(&self) -> Value {
        match self.kind {
            Kind::Chat => Value::Object(Map::new()),
            Kind::Completion => Value::String(String::new()),
        }
    }

    fn logprobs(&self, choice: &mut ChoiceBuilder) -> Value {
        match choice.take_logprobs() {
            Some((lps, offset)) => logprobs_json(self.kind, &lps, offset),
            None => Value::Null,
        }
    }
}

/// A chat text delta, `{"content": …}`.
#[derive(serde::Serialize)]
struct Content<'a> {
    content: &'a str,
}

/// A chat reasoning delta, `{"reasoning_content": …}`.
#[derive(serde::Serialize)]
struct Reasoning<'a> {
    reasoning_content: &'a str,
}

/// One stream chunk: the envelope's fields in OpenAI's order, one choice, and
/// `usage: null` when the stream will end with the usage.
struct ChunkJson<'a, B> {
    meta: &'a Meta,
    choice: ChoiceJson<'a, B>,
}

/// The chunk's one choice; `field` is `delta` (chat) or `text` (completions).
struct ChoiceJson<'a, B> {
    index: usize,
    field: &'static str,
    body: &'a B,
    logprobs: &'a Value,
    finish: Option<&'a str>,
}

impl<B: Serialize> Serialize for ChunkJson<'_, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.meta;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &m.id)?;
        map.serialize_entry("object", m.object(true))?;
        map.serialize_entry("created", &m.created)?;
        map.serialize_entry("model", &m.model)?;
        map.serialize_entry("system_fingerprint", &m.system_fingerprint)?;
        map.serialize_entry("choices", std::slice::from_ref(&self.choice))?;
        if m.include_usage {
            // OpenAI sends `usage: null` on every chunk but the last when usage is asked.
            map.serialize_entry("usage", &())?;
        }
        map.end()
    }
}

impl<B: Serialize> Serialize for ChoiceJson<'_, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("index", &self.index)?;
        map.serialize_entry(self.field, self.body)?;
        map.serialize_entry("logprobs", self.logprobs)?;
        map.serialize_entry("finish_reason", &self.finish)?;
        map.end()
    }
}

impl Wire for Meta {
    fn open(&mut self, choices: usize, out: &mut String) {
        if self.kind == Kind::Chat {
            // The first chunk of each chat choice announces the role.
            for i in 0..choices {
                let body = json!({"role": "assistant", "content": ""});
                self.chunk(out, i, &body, &Value::Null, None);
            }
        }
    }

    fn text(&mut self, choice: &mut ChoiceBuilder, text: String, out: &mut String) {
        let logprobs = self.logprobs(choice);
        match self.kind {
            Kind::Chat => {
                let body = Content { content: &text };
                self.chunk(out, choice.index(), &body, &logprobs, None);
            }
            Kind::Completion => self.chunk(out, choice.index(), &text, &logprobs, None),
        }
    }

    /// Chat: `delta.reasoning_content`, the field llama-server, vLLM and DeepSeek's API
    /// use. Completions never carry a reasoning plan (raw prompts are not split).
    fn reasoning(&mut self, choice: &mut ChoiceBuilder, text: String, out: &mut String) {
        if self.kind == Kind::Chat {
            let logprobs = self.logprobs(choice);
            let body = Reasoning {
                reasoning_content: &text,
            };
            self.chunk(out, choice.index(), &body, &logprobs, None);
        }
    }

    /// Chat with tools: each call's id and name as soon as the name is whole, then its
    /// arguments as they are written (`delta.tool_calls`, as OpenAI streams them).
    fn calls(&mut self, choice: &mut ChoiceBuilder, deltas: Vec<CallDelta>, out: &mut String) {
        if self.kind != Kind::Chat {
            return;
        }
        let index = choice.index();
        let list: Vec<Value> = deltas
            .into_iter()
            .map(|d| match d.name {
                Some(name) => json!({"index": d.index,
                    "id": tools::call_id(&self.random, index, d.index), "type": "function",
                    "function": {"name": name, "arguments": d.arguments}}),
                None => json!({"index": d.index, "function": {"arguments": d.arguments}}),
            })
            .collect();
        let logprobs = self.logprobs(choice);
        let body = json!({"tool_calls": list});
        self.chunk(out, index, &body, &logprobs, None);
    }

    /// With tools, the parsed answer first (what the stream has not sent of it yet);
    /// then the finish reason (with any log-probabilities not yet sent); after the last
    /// choice, the usage and [DONE].
    fn finished(
        &mut self,
        choice: &mut ChoiceBuilder,
        reason: FinishReason,
        totals: &Totals,
        last: bool,
        out: &mut String,
    ) {
        let index = choice.index();
        let mut called = false;
        if choice.shape().tools {
            let text = choice.take_held();
            let (delta, calls) = match choice.sent_calls().is_empty() {
                true => tool_message(&text, choice.shape(), true, &self.random, index),
                false => self.rest_of_calls(&text, choice, index),
            };
            called = calls;
            // Nothing left when the stream already sent every call whole.
            if !delta.is_empty() || choice.has_pending() {
                let logprobs = self.logprobs(choice);
                self.chunk(out, index, &delta, &logprobs, None);
            }
        }
        let logprobs = if choice.has_pending() {
            self.logprobs(choice)
        } else {
            Value::Null
        };
        let finish = finish_str(reason, called);
        let empty = self.empty_body();
        self.chunk(out, index, &empty, &logprobs, Some(finish));
        if last {
            if self.include_usage {
                let mut m = self.envelope(true, Vec::new());
                m.insert("usage".into(), usage_json(totals.usage()));
                sse_event(out, None, &Value::Object(m));
            }
            out.push_str("data: [DONE]\n\n");
        }
    }

    fn failed(&mut self, error: &ApiError, out: &mut String) {
        sse_event(out, None, &error.body());
        out.push_str("data: [DONE]\n\n");
    }

    fn whole(&mut self, choices: Vec<(ChoiceBuilder, FinishReason)>, totals: &Totals) -> Value {
        let choices = choices
            .into_iter()
            .map(|(mut c, reason)| self.whole_choice(&mut c, reason))
            .collect();
        let mut m = self.envelope(false, choices);
        m.insert("usage".into(), usage_json(totals.usage()));
        Value::Object(m)
    }
}

impl Meta {
    /// The end of a stream whose calls were sent as they were written: what is left of
    /// each (the arguments' last pieces), any call the stream did not see (one written
    /// without the family's opener, `slips`), and the text before the calls. A call cut
    /// by the end of the output was sent as far as it went; the finish reason is then
    /// "length".
    fn rest_of_calls(
        &self,
        text: &str,
        choice: &ChoiceBuilder,
        index: usize,
    ) -> (Map<String, Value>, bool) {
        let shape = choice.shape();
        let streamed = progress(shape.syntax, text, &Declared(&shape.functions));
        let (calls, before) = match tools::parse_answer(text, shape.syntax, &shape.functions) {
            Some(Answer::Calls(calls, before)) => (calls, before),
            Some(Answer::Content(c)) => (Vec::new(), c),
            None => (Vec::new(), text.to_string()),
        };
        let mut list = Vec::new();
        for (i, (name, args)) in calls.iter().enumerate() {
            match choice.sent_calls().get(i) {
                Some(&sent) => {
                    let rest = streamed
                        .get(i)
                        .and_then(|c| c.args.get(sent..))
                        .unwrap_or("");
                    if !rest.is_empty() {
                        list.push(json!({"index": i, "function": {"arguments": rest}}));
                    }
                }
                None => list.push(json!({"index": i,
                    "id": tools::call_id(&self.random, index, i), "type": "function",
                    "function": {"name": name, "arguments": args}})),
            }
        }
        let mut m = Map::new();
        if !before.is_empty() {
            m.insert("content".into(), Value::String(before));
        }
        if !list.is_empty() {
            m.insert("tool_calls".into(), Value::Array(list));
        }
        (m, !calls.is_empty())
    }

    /// One finished choice of a whole body.
    fn whole_choice(&self, choice: &mut ChoiceBuilder, reason: FinishReason) -> Value {
        let logprobs = self.logprobs(choice);
        let text = choice.take_held();
        let reasoning = choice.take_reasoning();
        let index = choice.index();
        let (field, mut body, called) = match self.kind {
            Kind::Chat if choice.shape().tools => {
                let (mut m, called) =
                    tool_message(&text, choice.shape(), false, &self.random, index);
                m.insert("role".into(), json!("assistant"));
                m.insert("refusal".into(), Value::Null);
                ("message", Value::Object(m), called)
            }
            Kind::Chat => (
                "message",
                json!({"role": "assistant", "content": text, "refusal": null}),
                false,
            ),
            Kind::Completion => ("text", Value::String(text), false),
        };
        if let (false, Some(m)) = (reasoning.is_empty(), body.as_object_mut()) {
            m.insert("reasoning_content".into(), Value::String(reasoning));
        }
        let mut c = Map::new();
        c.insert("index".into(), json!(index));
        c.insert(field.into(), body);
        c.insert("logprobs".into(), logprobs);
        c.insert("finish_reason".into(), json!(finish_str(reason, called)));
        Value::Object(c)
    }
}

/// The end of a choice as the API reports it. A generation cut by `max_tokens` says so
/// even when calls completed before the cut (issue 29: the client must know the answer
/// is incomplete); otherwise calls end it as `tool_calls`.
fn finish_str(reason: FinishReason, called_tools: bool) -> &'static str {
    match reason {
        FinishReason::Length => reason.as_str(),
        _ if called_tools => "tool_calls",
        _ => reason.as_str(),
    }
}

/// Log-probabilities in the endpoint's format.
/// `offset`: bytes of completion text before the first of these tokens (legacy format).
fn logprobs_json(kind: Kind, lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match kind {
        Kind::Chat => {
            let content: Vec<Value> = lps
                .iter()
                .map(|t| {
                    let top: Vec<Value> = t
                        .top
                        .iter()
                        .map(|(b, lp)| json!({"token": text(b), "logprob": lp, "bytes": b}))
                        .collect();
                    json!({"token": text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top})
                })
                .collect();
            json!({"content": content, "refusal": null})
        }
        Kind::Completion => {
            let mut offsets = Vec::with_capacity(lps.len());
            for t in lps {
                offsets.push(*offset);
                *offset += t.bytes.len();
            }
            let top: Vec<Value> = lps
                .iter()
                .map(|t| {
                    let m: Map<String, Value> =
                        t.top.iter().map(|(b, lp)| (text(b), json!(lp))).collect();
                    Value::Object(m)
                })
                .collect();
            json!({
                "tokens": lps.iter().map(|t| text(&t.bytes)).collect::<Vec<_>>(),
                "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": offsets,
            })
        }
    }
}

/// The assistant message (or its delta) for an answer to a request with tools.
/// Returns the message fields and whether tools were called. Call ids are
/// `call_{random}_{choice}_{i}`: the response's random part keeps them unique.
fn tool_message(
    text: &str,
    shape: &Shape,
    stream: bool,
    random: &str,
    choice: usize,
) -> (Map<String, Value>, bool) {
    let mut m = Map::new();
    match tools::parse_answer(text, shape.syntax, &shape.functions) {
        Some(Answer::Calls(calls, before)) => {
            let list: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    let mut call = json!({
                        "id": tools::call_id(random, choice, i),
                        "type": "function",
                        "function": {"name": name, "arguments": args},
                    });
                    if let (true, Some(o)) = (stream, call.as_object_mut()) {
                        o.insert("index".into(), json!(i));
                    }
                    call
                })
                .collect();
            // Text the model wrote before its calls (a native syntax) is the content.
            let content = match before.is_empty() {
                true => Value::Null,
                false => Value::String(before),
            };
            m.insert("content".into(), content);
            m.insert("tool_calls".into(), Value::Array(list));
            (m, true)
        }
        Some(Answer::Content(c)) => {
            m.insert("content".into(), Value::String(c));
            (m, false)
        }
        // Not the generic format at all (no constraint held the answer): the text.
        None => {
            m.insert("content".into(), Value::String(text.to_string()));
            (m, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{testing, Shape};
    use super::*;
    use crate::engine::{Event, Usage};

    fn lp(b: &str, l: f32) -> TokenLogprob {
        TokenLogprob {
            bytes: b.as_bytes().to_vec(),
            logprob: l,
            top: vec![(b.as_bytes().to_vec(), l), (b"x".to_vec(), -3.0)],
        }
    }

    fn meta(kind: Kind) -> Meta {
        Meta {
            id: "chatcmpl-r".into(),
            created: 7,
            model: "m".into(),
            kind,
            include_usage: true,
            system_fingerprint: "fp".into(),
            random: "r".into(),
        }
    }

    fn usage(prompt: u32, completion: u32) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// The same events, fed to a whole body and to a stream, as the SDKs reassemble them.
    fn run(kind: Kind, tools: bool, events: impl Fn() -> Vec<Event>) -> (Value, Vec<Value>) {
        let shape = |stream| Shape {
            logprobs: true,
            tools,
            syntax: None,
            functions: Default::default(),
            stream,
        };
        let whole = testing::whole(&mut meta(kind), shape(false), events());
        let (text, chunks) = testing::stream(&mut meta(kind), shape(true), events());
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(chunks.iter().all(|(name, _)| name.is_none()), "{text}");
        (whole, chunks.into_iter().map(|(_, v)| v).collect())
    }

    fn answer(words: &[&str], reason: FinishReason) -> Vec<Event> {
        let mut v = vec![Event::Started { prompt_tokens: 5 }];
        for w in words {
            v.push(Event::Token(lp(w, -0.5)));
            v.push(Event::Text((*w).to_string()));
        }
        v.push(Event::Finished {
            reason,
            usage: usage(5, words.len() as u32),
        });
        v
    }

    #[test]
    fn whole_and_streamed_chat_agree() {
        let (whole, chunks) = run(Kind::Chat, false, || {
            answer(&["Hi", " there"], FinishReason::Stop)
        });
        let c = &whole["choices"][0];
        assert_eq!(c["message"]["content"], "Hi there");
        assert_eq!(c["message"]["role"], "assistant");
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["logprobs"]["content"][1]["token"], " there");
        assert_eq!(whole["usage"]["total_tokens"], 7);
        assert_eq!(whole["object"], "chat.completion");
        // role, two text chunks, the finish, the usage chunk.
        assert_eq!(chunks.len(), 5, "{chunks:?}");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hi there");
        let tokens: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
            .flatten()
            .map(|t| &t["token"])
            .collect();
        assert_eq!(tokens, [&json!("Hi"), &json!(" there")]);
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[2]["usage"], Value::Null);
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"], whole["usage"]);
        assert_eq!(chunks[4]["object"], "chat.completion.chunk");
    }

    /// Streamed calls after long free text (searched from the last opener's reach, not
    /// from the start at every token), and a JSON call that counts only at the very
    /// start of a Llama 3 answer is not announced in the middle of one.
    #[test]
    fn streamed_calls_are_found_after_free_text_and_only_where_they_count() {
        use crate::engine::tool_syntax::ToolSyntax;
        let shape = |syntax| Shape {
            logprobs: false,
            tools: true,
            syntax: Some(syntax),
            functions: Default::default(),
            stream: true,
        };
        let mut text: Vec<String> = (0..200).map(|i| format!("word{i} ")).collect();
        let call = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 12345}}\n</tool_call>";
        let chars: Vec<char> = call.chars().collect();
        text.extend(chars.chunks(2).map(|c| c.iter().collect::<String>()));
        let words: Vec<&str> = text.iter().map(String::as_str).collect();
        let (_, chunks) = testing::stream(
            &mut meta(Kind::Chat),
            shape(ToolSyntax::HERMES),
            answer(&words, FinishReason::Stop),
        );
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|(_, c)| c["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .collect();
        assert_eq!(deltas[0]["function"]["name"], "f");
        let joined: String = deltas
            .iter()
            .filter_map(|d| d["function"]["arguments"].as_str())
            .collect();
        assert_eq!(joined, r#"{"a":12345}"#);
        assert!(deltas.len() >= 3, "{deltas:?}");

        let mid = ["Sure: ", r#"{"name": "f", "#, r#""parameters": {}}"#];
        let (_, chunks) = testing::stream(
            &mut meta(Kind::Chat),
            shape(ToolSyntax::LLAMA3),
            answer(&mid, FinishReason::Stop),
        );
        assert!(
            chunks
                .iter()
                .all(|(_, c)| c["choices"][0]["delta"].get("tool_calls").is_none()),
            "{chunks:?}"
        );
        let content: String = chunks
            .iter()
            .filter_map(|(_, c)| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, r#"Sure: {"name": "f", "parameters": {}}"#);
    }

    #[test]
    fn whole_and_streamed_tool_calls_agree() {
        let call = r#"{"tool_calls":[{"name":"f","arguments":{"a":1}}]}"#;
        let (whole, chunks) = run(Kind::Chat, true, || answer(&[call], FinishReason::Stop));
        let c = &whole["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], Value::Null);
        assert_eq!(c["message"]["tool_calls"][0]["id"], "call_r_0_0");
        assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "f");
        // role, the parsed answer, the finish, the usage chunk: no raw JSON streamed.
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        let delta = &chunks[1]["choices"][0]["delta"];
        assert_eq!(delta["tool_calls"][0]["index"], 0);
        assert_eq!(
            delta["tool_calls"][0]["function"],
            c["message"]["tool_calls"][0]["function"]
        );
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn whole_and_streamed_completion_agree() {
        let (whole, chunks) = run(Kind::Completion, false, || {
            answer(&["a", "bc"], FinishReason::Length)
        });
        let c = &whole["choices"][0];
        assert_eq!(c["text"], "abc");
        assert_eq!(c["finish_reason"], "length");
        assert_eq!(c["logprobs"]["text_offset"], json!([0, 1]));
        assert_eq!(c["logprobs"]["top_logprobs"][1]["x"], json!(-3.0));
        assert_eq!(whole["object"], "text_completion");
        // No role chunk for completions: two texts, the finish, the usage chunk.
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert_eq!(chunks[1]["choices"][0]["text"], "bc");
        // The offset runs on across chunks.
        assert_eq!(
            chunks[1]["choices"][0]["logprobs"]["text_offset"],
            json!([1])
        );
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn failures_and_totals() {
        let trace = testing::trace();
        let shape = Shape {
            logprobs: false,
            tools: false,
            syntax: None,
            functions: Default::default(),
            stream: true,
        };
        let mut b = ChoiceBuilder::new(0, shape.clone());
        assert!(
            b.feed(None, &trace).is_err(),
            "a dropped channel is an error"
        );
        let mut t = Totals::default();
        t.add(&usage(10, 3), &trace);
        t.add(&usage(10, 4), &trace);
        assert_eq!(t.finished(), 2);
        // The prompt once, the completions summed.
        assert_eq!(usage_json(t.usage())["total_tokens"], 17);
        // A failure mid-stream: an error event, then [DONE].
        let events = vec![
            Event::Started { prompt_tokens: 1 },
            Event::Text("a".into()),
            Event::Failed(crate::engine::EngineError::Internal),
        ];
        let (text, chunks) = testing::stream(&mut meta(Kind::Chat), shape, events);
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(
            chunks.last().map(|c| &c.1["error"]["type"]),
            Some(&json!("server_error")),
            "{text}"
        );
    }

    #[test]
    fn thinking_is_reasoning_content_whole_and_streamed() {
        let shape = |stream| Shape {
            logprobs: false,
            tools: false,
            syntax: None,
            functions: Default::default(),
            stream,
        };
        let events = || testing::thought(FinishReason::Stop, &["Fo", "ur"]);
        let whole = testing::whole(&mut meta(Kind::Chat), shape(false), events());
        let m = &whole["choices"][0]["message"];
        assert_eq!(m["reasoning_content"], "Two and two.", "{whole}");
        assert_eq!(m["content"], "Four", "{whole}");
        let details = &whole["usage"]["completion_tokens_details"];
        assert_eq!(details["reasoning_tokens"], 4, "{whole}");
        let (_, chunks) = testing::stream(&mut meta(Kind::Chat), shape(true), events());
        let deltas: Vec<&Value> = chunks
            .iter()
            .map(|(_, c)| &c["choices"][0]["delta"])
            .collect();
        // The role chunk, two reasoning deltas, two content deltas, the finish.
        assert_eq!(deltas[1], &json!({"reasoning_content": "Two and "}));
        assert_eq!(deltas[2], &json!({"reasoning_content": "two."}));
        assert_eq!(deltas[3], &json!({"content": "Fo"}));
        let last = &chunks[chunks.len() - 1].1;
        assert_eq!(
            last["usage"]["completion_tokens_details"]["reasoning_tokens"],
            4
        );

        // Cut inside the thinking: reasoning present, content empty, finish "length".
        let cut = testing::whole(
            &mut meta(Kind::Chat),
            shape(false),
            testing::thought(FinishReason::Length, &[]),
        );
        let c = &cut["choices"][0];
        assert_eq!(c["finish_reason"], "length", "{cut}");
        assert_eq!(c["message"]["content"], "", "{cut}");
        assert_eq!(c["message"]["reasoning_content"], "Two and two.", "{cut}");

        // With tools the answer is held back and parsed; the thinking is not.
        let tools = Shape {
            logprobs: false,
            tools: true,
            syntax: None,
            functions: Default::default(),
            stream: true,
        };
        let call = [r#"{"tool_calls":[{"name":"f","arguments":{}}]}"#];
        let (_, chunks) = testing::stream(
            &mut meta(Kind::Chat),
            tools,
            testing::thought(FinishReason::Stop, &call),
        );
        let delta = &chunks[1].1["choices"][0]["delta"];
        assert_eq!(delta["reasoning_content"], "Two and ", "{delta}");
        let calls = chunks
            .iter()
            .find(|(_, c)| !c["choices"][0]["delta"]["tool_calls"].is_null());
        assert!(calls.is_some(), "{chunks:?}");
    }
}
