//! The Responses API wire: the `response` object (whole body) and its typed stream events
//! (`event: response.…` with a `sequence_number` counting from 0), in OpenAI's order:
//!
//! ```text
//! response.created, response.in_progress,
//!   text:  response.output_item.added (message), response.content_part.added,
//!          response.output_text.delta …, response.output_text.done,
//!          response.content_part.done, response.output_item.done
//!   tools: per call: response.output_item.added (function_call),
//!          response.function_call_arguments.delta, …arguments.done,
//!          response.output_item.done
//! response.completed | response.incomplete (max_output_tokens) | response.failed
//! ```
//!
//! Plain text streams as it is generated; with tools the answer is held back (it is one
//! constrained JSON object) and sent parsed at its end, as for chat completions.

use super::{sse_event, ChoiceBuilder, Totals, Wire};
use crate::api::error::ApiError;
use crate::api::tools::{self, Answer};
use crate::engine::{FinishReason, Usage};
use serde_json::{json, Map, Value};

/// One response in the Responses format.
#[derive(Debug)]
pub struct ResponsesWire {
    random: String,
    created_at: u64,
    model: String,
    /// The request's settings, echoed in every response object.
    echo: Map<String, Value>,
    /// The next event's `sequence_number`.
    seq: u64,
    /// Streaming plain text: what was sent of the message so far.
    text: String,
    /// Streaming: the message item's opening events were sent.
    message_open: bool,
}

impl ResponsesWire {
    pub fn new(random: String, created_at: u64, model: String, echo: Map<String, Value>) -> Self {
        Self {
            random,
            created_at,
            model,
            echo,
            seq: 0,
            text: String::new(),
            message_open: false,
        }
    }

    pub fn id(random: &str) -> String {
        format!("resp_{random}")
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.random)
    }

    /// The response object at one point of its life.
    fn object(&self, status: &str, output: Vec<Value>, end: Option<End<'_>>) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(Self::id(&self.random)));
        m.insert("object".into(), json!("response"));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("status".into(), json!(status));
        m.insert("model".into(), json!(self.model));
        m.insert("output".into(), Value::Array(output));
        let (usage, incomplete, error) = match end {
            Some(End::Done(u, reason)) => (
                usage_json(u),
                match reason {
                    FinishReason::Length => json!({"reason": "max_output_tokens"}),
                    FinishReason::Stop => Value::Null,
                },
                Value::Null,
            ),
            Some(End::Failed(e)) => (
                Value::Null,
                Value::Null,
                json!({"code": e.code.unwrap_or("server_error"), "message": e.message}),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        m.insert("usage".into(), usage);
        m.insert("incomplete_details".into(), incomplete);
        m.insert("error".into(), error);
        for (k, v) in &self.echo {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// One typed event: its name, `type` and `sequence_number` added to `fields`.
    fn emit(&mut self, out: &mut String, name: &str, fields: Value) {
        let mut m = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        m.insert("type".into(), json!(name));
        m.insert("sequence_number".into(), json!(self.seq));
        self.seq += 1;
        sse_event(out, Some(name), &Value::Object(m));
    }

    fn message_item(&self, text: &str, status: &str) -> Value {
        let content: Vec<Value> = match status {
            "in_progress" => Vec::new(),
            _ => vec![text_part(text)],
        };
        json!({
            "type": "message",
            "id": self.message_id(),
            "status": status,
            "role": "assistant",
            "content": content,
        })
    }

    fn call_item_id(&self, i: usize) -> String {
        format!("fc_{}_{i}", self.random)
    }

    /// The response object once its one choice finished (whole body and last event).
    fn finished_object(&self, output: &Output, reason: FinishReason, totals: &Totals) -> Value {
        let items = self.items(output);
        self.object(
            status_of(reason),
            items,
            Some(End::Done(totals.usage(), reason)),
        )
    }

    fn call_item(&self, i: usize, name: &str, arguments: &str, status: &str) -> Value {
        json!({
            "type": "function_call",
            "id": self.call_item_id(i),
            "call_id": tools::call_id(&self.random, 0, i),
            "name": name,
            "arguments": arguments,
            "status": status,
        })
    }

    /// The output of a finished answer: a message, or the function calls it made.
    fn output(&self, choice: &mut ChoiceBuilder, reason: FinishReason) -> Output {
        let text = if choice.shape().stream && !choice.shape().tools {
            self.text.clone()
        } else {
            choice.take_held()
        };
        let status = status_of(reason);
        if choice.shape().tools {
            match tools::parse_answer(&text) {
                Some(Answer::Calls(calls)) => return Output::Calls(calls, status),
                Some(Answer::Content(c)) => return Output::Message(c, status),
                // Cut short before the JSON closed: the raw text, as the message.
                None => {}
            }
        }
        Output::Message(text, status)
    }

    fn items(&self, output: &Output) -> Vec<Value> {
        match output {
            Output::Message(text, status) => vec![self.message_item(text, status)],
            Output::Calls(calls, status) => calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| self.call_item(i, name, args, status))
                .collect(),
        }
    }

    /// Stream: the events of the message item after its text deltas.
    fn close_message(&mut self, text: &str, status: &str, out: &mut String) {
        let id = self.message_id();
        let at = json!({"item_id": id, "output_index": 0, "content_index": 0});
        let mut done = at.clone();
        extend(&mut done, json!({"text": text, "logprobs": []}));
        self.emit(out, "response.output_text.done", done);
        let mut part = at;
        extend(&mut part, json!({"part": text_part(text)}));
        self.emit(out, "response.content_part.done", part);
        let item = self.message_item(text, status);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
    }

    /// Stream: the message item's opening events.
    fn open_message(&mut self, out: &mut String) {
        self.message_open = true;
        let item = self.message_item("", "in_progress");
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        let part = json!({
            "item_id": self.message_id(), "output_index": 0, "content_index": 0,
            "part": text_part(""),
        });
        self.emit(out, "response.content_part.added", part);
    }

    fn delta(&mut self, text: &str, out: &mut String) {
        let delta = json!({
            "item_id": self.message_id(), "output_index": 0, "content_index": 0,
            "delta": text, "logprobs": [],
        });
        self.emit(out, "response.output_text.delta", delta);
    }
}

/// How a response ended, for its object.
enum End<'a> {
    Done(&'a Usage, FinishReason),
    Failed(&'a ApiError),
}

/// A finished answer, with its items' status.
enum Output {
    Message(String, &'static str),
    Calls(Vec<(String, String)>, &'static str),
}

impl Wire for ResponsesWire {
    fn open(&mut self, _choices: usize, out: &mut String) {
        let snapshot = self.object("in_progress", Vec::new(), None);
        self.emit(out, "response.created", json!({"response": snapshot}));
        let snapshot = self.object("in_progress", Vec::new(), None);
        self.emit(out, "response.in_progress", json!({"response": snapshot}));
    }

    fn text(&mut self, _choice: &mut ChoiceBuilder, text: String, out: &mut String) {
        if !self.message_open {
            // The message item opens with its first text.
            self.open_message(out);
        }
        self.delta(&text, out);
        self.text.push_str(&text);
    }

    fn finished(
        &mut self,
        choice: &mut ChoiceBuilder,
        reason: FinishReason,
        totals: &Totals,
        _last: bool,
        out: &mut String,
    ) {
        let output = self.output(choice, reason);
        match &output {
            Output::Message(text, status) => {
                if !self.message_open {
                    // Held back (tools may have been called), or no text came: the
                    // message opens now, with its text in one delta.
                    self.open_message(out);
                    if !text.is_empty() {
                        self.delta(text, out);
                    }
                }
                self.close_message(text, status, out);
            }
            Output::Calls(calls, status) => {
                for (i, (name, args)) in calls.iter().enumerate() {
                    let added = self.call_item(i, name, "", "in_progress");
                    self.emit(
                        out,
                        "response.output_item.added",
                        json!({"output_index": i, "item": added}),
                    );
                    let id = self.call_item_id(i);
                    self.emit(
                        out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": i, "delta": args}),
                    );
                    self.emit(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": i, "name": name, "arguments": args}),
                    );
                    let done = self.call_item(i, name, args, status);
                    self.emit(
                        out,
                        "response.output_item.done",
                        json!({"output_index": i, "item": done}),
                    );
                }
            }
        }
        let event = match reason {
            FinishReason::Stop => "response.completed",
            FinishReason::Length => "response.incomplete",
        };
        let object = self.finished_object(&output, reason, totals);
        self.emit(out, event, json!({"response": object}));
    }

    fn failed(&mut self, error: &ApiError, out: &mut String) {
        let object = self.object("failed", Vec::new(), Some(End::Failed(error)));
        self.emit(out, "response.failed", json!({"response": object}));
    }

    fn whole(&mut self, choices: Vec<(ChoiceBuilder, FinishReason)>, totals: &Totals) -> Value {
        // One choice: the Responses API has no `n`.
        let Some((mut choice, reason)) = choices.into_iter().next() else {
            return self.object("failed", Vec::new(), None);
        };
        let output = self.output(&mut choice, reason);
        self.finished_object(&output, reason, totals)
    }
}

/// A finished response's (and its items') status.
fn status_of(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "completed",
        FinishReason::Length => "incomplete",
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn extend(v: &mut Value, more: Value) {
    if let (Some(m), Value::Object(more)) = (v.as_object_mut(), more) {
        m.extend(more);
    }
}

/// The Responses usage object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens as u64 + u.completion_tokens as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{testing, Shape};
    use super::*;
    use crate::engine::Event;

    fn wire() -> ResponsesWire {
        let echo = match json!({"temperature": 1.0, "tools": []}) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        ResponsesWire::new("r".into(), 7, "m".into(), echo)
    }

    fn answer(words: &[&str], reason: FinishReason) -> Vec<Event> {
        let mut v = vec![Event::Started { prompt_tokens: 5 }];
        v.extend(words.iter().map(|w| Event::Text((*w).to_string())));
        v.push(Event::Finished {
            reason,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: words.len() as u32,
                cached_tokens: 2,
            },
        });
        v
    }

    fn shape(tools: bool, stream: bool) -> Shape {
        Shape {
            logprobs: false,
            tools,
            stream,
        }
    }

    fn names(events: &[(Option<String>, Value)]) -> Vec<&str> {
        events
            .iter()
            .map(|(name, data)| {
                // The `event:` line and the `type` field agree.
                assert_eq!(data["type"].as_str(), name.as_deref());
                name.as_deref().unwrap_or("")
            })
            .collect()
    }

    #[test]
    fn text_whole_and_streamed_agree() {
        let whole = testing::whole(
            &mut wire(),
            shape(false, false),
            answer(&["Hi", " there"], FinishReason::Stop),
        );
        assert_eq!(whole["object"], "response");
        assert_eq!(whole["id"], "resp_r");
        assert_eq!(whole["status"], "completed");
        assert_eq!(whole["output"][0]["type"], "message");
        assert_eq!(whole["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(whole["usage"]["input_tokens"], 5);
        assert_eq!(whole["usage"]["input_tokens_details"]["cached_tokens"], 2);
        assert_eq!(whole["usage"]["total_tokens"], 7);
        assert_eq!(whole["temperature"], 1.0, "settings are echoed");
        let (_, events) = testing::stream(
            &mut wire(),
            shape(false, true),
            answer(&["Hi", " there"], FinishReason::Stop),
        );
        assert_eq!(
            names(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = events
            .iter()
            .map(|(_, d)| d["sequence_number"].as_u64().unwrap_or(u64::MAX))
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        assert_eq!(events[6].1["text"], "Hi there");
        let done = &events[9].1["response"];
        assert_eq!(done["output"], whole["output"]);
        assert_eq!(done["usage"], whole["usage"]);
        assert_eq!(events[2].1["item"]["id"], done["output"][0]["id"]);
    }

    #[test]
    fn tool_calls_whole_and_streamed_agree() {
        let call =
            r#"{"tool_calls":[{"name":"f","arguments":{"a":1}},{"name":"g","arguments":{}}]}"#;
        let whole = testing::whole(
            &mut wire(),
            shape(true, false),
            answer(&[call], FinishReason::Stop),
        );
        assert_eq!(whole["output"][0]["type"], "function_call");
        assert_eq!(whole["output"][0]["call_id"], "call_r_0_0");
        assert_eq!(whole["output"][0]["arguments"], r#"{"a":1}"#);
        assert_eq!(whole["output"][1]["name"], "g");
        let (_, events) = testing::stream(
            &mut wire(),
            shape(true, true),
            answer(&[call], FinishReason::Stop),
        );
        let per_call = [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ];
        let mut want = vec!["response.created", "response.in_progress"];
        want.extend(per_call);
        want.extend(per_call);
        want.push("response.completed");
        assert_eq!(names(&events), want);
        assert_eq!(events[3].1["delta"], r#"{"a":1}"#);
        assert_eq!(events[6].1["output_index"], 1);
        assert_eq!(events[10].1["response"]["output"], whole["output"]);
    }

    #[test]
    fn cut_short_is_incomplete_and_failures_are_response_failed() {
        let whole = testing::whole(
            &mut wire(),
            shape(false, false),
            answer(&["Hi"], FinishReason::Length),
        );
        assert_eq!(whole["status"], "incomplete");
        assert_eq!(whole["incomplete_details"]["reason"], "max_output_tokens");
        let (_, events) = testing::stream(
            &mut wire(),
            shape(false, true),
            answer(&["Hi"], FinishReason::Length),
        );
        assert_eq!(
            events.last().map(|e| e.0.as_deref()),
            Some(Some("response.incomplete"))
        );
        let failing = vec![
            Event::Started { prompt_tokens: 1 },
            Event::Text("a".into()),
            Event::Failed(crate::engine::EngineError::Internal),
        ];
        let (_, events) = testing::stream(&mut wire(), shape(false, true), failing);
        let (name, data) = events.last().expect("events");
        assert_eq!(name.as_deref(), Some("response.failed"));
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "internal_error");
    }
}
