//! The Responses API wire: the `response` object (whole body) and its typed stream events
//! (`event: response.…` with a `sequence_number` counting from 0), in OpenAI's order:
//!
//! ```text
//! response.created, response.in_progress,
//!   thinking (reasoning models; output_index 0, the answer's items follow it):
//!          response.output_item.added (reasoning), response.content_part.added,
//!          response.reasoning_text.delta …, response.reasoning_text.done,
//!          response.content_part.done, response.output_item.done
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

use super::{sse_event, CallDelta, ChoiceBuilder, Totals, Wire};
use crate::api::error::ApiError;
use crate::api::tools::{self, Answer};
use crate::engine::family::progress::progress;
use crate::engine::family::Declared;
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
    /// The thinking: streamed so far, or a whole body's. When there is any, it is the
    /// reasoning item at output_index 0.
    reasoning: String,
    /// Streaming: the reasoning item is open (its deltas go on).
    reasoning_open: bool,
    /// Streaming with tools: each call item opened as it was written (name, arguments
    /// sent); they come right after the reasoning item, before any message.
    streamed: Vec<(String, String)>,
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
            reasoning: String::new(),
            reasoning_open: false,
            streamed: Vec::new(),
        }
    }

    pub fn id(random: &str) -> String {
        format!("resp_{random}")
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.random)
    }

    fn reasoning_id(&self) -> String {
        format!("rs_{}", self.random)
    }

    /// The output_index of the answer's first item (after the reasoning item, if any).
    fn base(&self) -> usize {
        usize::from(!self.reasoning.is_empty())
    }

    /// The message item's output_index: after the reasoning item, and after the call
    /// items a stream opened before it.
    fn message_index(&self) -> usize {
        self.base() + self.streamed.len()
    }

    /// The reasoning item: the thinking as its `reasoning_text` content (no summary is
    /// made; `summary` is empty).
    fn reasoning_item(&self, status: &str) -> Value {
        let content: Vec<Value> = match status {
            "in_progress" => Vec::new(),
            _ => vec![reasoning_part(&self.reasoning)],
        };
        json!({
            "type": "reasoning",
            "id": self.reasoning_id(),
            "summary": [],
            "content": content,
            "status": status,
        })
    }

    /// Stream: the reasoning item's closing events (before the answer's first item).
    fn close_reasoning(&mut self, status: &str, out: &mut String) {
        if !self.reasoning_open {
            return;
        }
        self.reasoning_open = false;
        let at = json!({"item_id": self.reasoning_id(), "output_index": 0, "content_index": 0});
        let mut done = at.clone();
        extend(&mut done, json!({"text": self.reasoning}));
        self.emit(out, "response.reasoning_text.done", done);
        let mut part = at;
        extend(&mut part, json!({"part": reasoning_part(&self.reasoning)}));
        self.emit(out, "response.content_part.done", part);
        let item = self.reasoning_item(status);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
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
            let shape = choice.shape();
            match tools::parse_answer(&text, shape.syntax, &shape.functions) {
                Some(Answer::Calls(mut calls, before)) => {
                    // Calls a stream sent as they were written keep the arguments' text it
                    // sent (the pieces joined).
                    let written = progress(shape.syntax, &text, &Declared(&shape.functions));
                    for (call, seen) in calls.iter_mut().zip(&written).take(self.streamed.len()) {
                        if seen.done && seen.name == call.0 {
                            call.1 = seen.args.clone();
                        }
                    }
                    return Output::Calls(calls, before, status);
                }
                Some(Answer::Content(c)) => return Output::Message(c, status),
                // Not the generic format at all (no constraint held the answer): the text.
                None => {}
            }
        }
        Output::Message(text, status)
    }

    fn items(&self, output: &Output) -> Vec<Value> {
        let mut items = Vec::new();
        let status = match output {
            Output::Message(_, status) | Output::Calls(_, _, status) => *status,
        };
        if !self.reasoning.is_empty() {
            items.push(self.reasoning_item(status));
        }
        match output {
            // A cut inside the thinking has no answer: only the reasoning item.
            Output::Message(text, _) if text.is_empty() && !self.reasoning.is_empty() => {}
            Output::Message(text, status) => items.push(self.message_item(text, status)),
            Output::Calls(calls, before, status) => {
                // A stream opened its call items first; else the text comes first.
                let calls_first = !self.streamed.is_empty();
                if !before.is_empty() && !calls_first {
                    items.push(self.message_item(before, status));
                }
                items.extend(
                    calls
                        .iter()
                        .enumerate()
                        .map(|(i, (name, args))| self.call_item(i, name, args, status)),
                );
                if !before.is_empty() && calls_first {
                    items.push(self.message_item(before, status));
                }
            }
        }
        items
    }

    /// Stream: the end of call items opened as they were written — each one's last
    /// argument pieces and closing events (a call the cut went through closes
    /// incomplete, as far as it was written, and is not in the response's output), any
    /// call the stream did not see, then the text before the calls as a message.
    fn finish_streamed_calls(
        &mut self,
        calls: &[(String, String)],
        before: &str,
        status: &'static str,
        out: &mut String,
    ) {
        let base = self.base();
        let opened = self.streamed.len();
        for i in 0..calls.len().max(opened) {
            let (at, id) = (base + i, self.call_item_id(i));
            let (name, args, item_status) = match calls.get(i) {
                Some((name, args)) => (name.clone(), args.clone(), status),
                None => {
                    let (name, sent) = self.streamed.get(i).cloned().unwrap_or_default();
                    (name, sent, "incomplete")
                }
            };
            let sent = match self.streamed.get(i) {
                Some((_, sent)) => sent.clone(),
                None => {
                    let added = self.call_item(i, &name, "", "in_progress");
                    self.emit(
                        out,
                        "response.output_item.added",
                        json!({"output_index": at, "item": added}),
                    );
                    String::new()
                }
            };
            let rest = args.strip_prefix(sent.as_str()).unwrap_or("");
            if !rest.is_empty() {
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": at, "delta": rest}),
                );
            }
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": at, "name": name, "arguments": args}),
            );
            let done = self.call_item(i, &name, &args, item_status);
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": at, "item": done}),
            );
        }
        // The message goes after every call item the stream opened.
        self.streamed.truncate(calls.len().max(opened));
        if !before.is_empty() {
            self.open_message(out);
            self.delta(before, out);
            self.close_message(before, status, out);
        }
    }

    /// Stream: the events of the message item after its text deltas.
    fn close_message(&mut self, text: &str, status: &str, out: &mut String) {
        let (id, index) = (self.message_id(), self.message_index());
        let at = json!({"item_id": id, "output_index": index, "content_index": 0});
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
            json!({"output_index": index, "item": item}),
        );
    }

    /// Stream: the message item's opening events.
    fn open_message(&mut self, out: &mut String) {
        self.close_reasoning("completed", out);
        self.message_open = true;
        let (item, index) = (self.message_item("", "in_progress"), self.message_index());
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        let part = json!({
            "item_id": self.message_id(), "output_index": index, "content_index": 0,
            "part": text_part(""),
        });
        self.emit(out, "response.content_part.added", part);
    }

    fn delta(&mut self, text: &str, out: &mut String) {
        let delta = json!({
            "item_id": self.message_id(), "output_index": self.message_index(), "content_index": 0,
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
    /// The calls, and the text the model wrote before them (a native syntax; a message
    /// item before the calls when not empty).
    Calls(Vec<(String, String)>, String, &'static str),
}

impl Wire for ResponsesWire {
    fn open(&mut self, _choices: usize, out: &mut String) {
        let snapshot = self.object("in_progress", Vec::new(), None);
        self.emit(out, "response.created", json!({"response": snapshot}));
        let snapshot = self.object("in_progress", Vec::new(), None);
        self.emit(out, "response.in_progress", json!({"response": snapshot}));
    }

    fn reasoning(&mut self, _choice: &mut ChoiceBuilder, text: String, out: &mut String) {
        if !self.reasoning_open && self.reasoning.is_empty() {
            // The reasoning item opens with the first thinking.
            self.reasoning_open = true;
            let item = self.reasoning_item("in_progress");
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": 0, "item": item}),
            );
            let part = json!({
                "item_id": self.reasoning_id(), "output_index": 0, "content_index": 0,
                "part": reasoning_part(""),
            });
            self.emit(out, "response.content_part.added", part);
        }
        let delta = json!({
            "item_id": self.reasoning_id(), "output_index": 0, "content_index": 0,
            "delta": text,
        });
        self.emit(out, "response.reasoning_text.delta", delta);
        self.reasoning.push_str(&text);
    }

    /// Each call's item opens as soon as its name is whole (after the reasoning item),
    /// and its arguments follow as `function_call_arguments.delta` events.
    fn calls(&mut self, _: &mut ChoiceBuilder, deltas: Vec<CallDelta>, out: &mut String) {
        for d in deltas {
            let at = self.base() + d.index;
            if let Some(name) = d.name {
                if self.streamed.is_empty() {
                    self.close_reasoning("completed", out);
                }
                let item = self.call_item(d.index, &name, "", "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": at, "item": item}),
                );
                self.streamed.push((name, String::new()));
            }
            if d.arguments.is_empty() {
                continue;
            }
            if let Some((_, sent)) = self.streamed.get_mut(d.index) {
                sent.push_str(&d.arguments);
            }
            let id = self.call_item_id(d.index);
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": at, "delta": d.arguments}),
            );
        }
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
        // Thinking that ran to the end (a cut inside it) closes with the response's status.
        self.close_reasoning(status_of(reason), out);
        let base = self.base();
        match &output {
            Output::Message(text, _)
                if text.is_empty() && !self.reasoning.is_empty() && !self.message_open => {}
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
            Output::Calls(calls, before, status) if !self.streamed.is_empty() => {
                self.finish_streamed_calls(calls, before, status, out);
            }
            Output::Calls(calls, before, status) => {
                let mut base = base;
                if !before.is_empty() {
                    self.open_message(out);
                    self.delta(before, out);
                    self.close_message(before, status, out);
                    base += 1;
                }
                for (i, (name, args)) in calls.iter().enumerate() {
                    let (added, at) = (self.call_item(i, name, "", "in_progress"), base + i);
                    self.emit(
                        out,
                        "response.output_item.added",
                        json!({"output_index": at, "item": added}),
                    );
                    let id = self.call_item_id(i);
                    self.emit(
                        out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": at, "delta": args}),
                    );
                    self.emit(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": at, "name": name, "arguments": args}),
                    );
                    let done = self.call_item(i, name, args, status);
                    self.emit(
                        out,
                        "response.output_item.done",
                        json!({"output_index": at, "item": done}),
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
        self.reasoning = choice.take_reasoning();
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

fn reasoning_part(text: &str) -> Value {
    json!({"type": "reasoning_text", "text": text})
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
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens as u64 + u.completion_tokens as u64,
    })
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
