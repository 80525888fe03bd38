//! From engine events to the wire. This is the one place that reads a generation's event
//! sequence (Started, then Token/Reasoning/Text, then Finished or Failed): a [`ChoiceBuilder`] per
//! choice turns events into [`Step`]s and keeps what is not sent yet, [`Totals`] sums the
//! usage, and a [`Wire`] writes them in one endpoint's format — chat completions and
//! completions (`completions.rs`), the Responses API (`responses.rs`). The whole JSON body
//! (`collect`) and the SSE stream (`stream.rs`) both drive the same `Wire`, so the two
//! cannot disagree on text, tool calls, finish reason or usage.

pub mod completions;
pub mod responses;

use super::error::ApiError;
use crate::engine::family::progress::{first_opener, progress};
use crate::engine::family::Declared;
use crate::engine::tool_syntax::ToolSyntax;
use crate::engine::{Event, FinishReason, TokenLogprob, Usage};
use crate::metrics::Trace;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// What the request asked of its output.
#[derive(Debug, Clone)]
pub struct Shape {
    pub logprobs: bool,
    /// Tools may be called: the answer is held back and written parsed at its end.
    pub tools: bool,
    /// The model family's tool-call syntax the answer is parsed in (None: generic).
    pub syntax: Option<ToolSyntax>,
    /// The callable functions' parameter schemas: how a native syntax's argument values
    /// written as text are read (a string parameter's text is the string).
    pub functions: std::sync::Arc<Vec<(String, Value)>>,
    pub stream: bool,
}

/// What one event meant for its choice.
#[derive(Debug)]
pub enum Step {
    /// Nothing to send yet (start, a log-probability, held text).
    Nothing,
    /// Text to stream now.
    Text(String),
    /// Thinking to stream now (reasoning models; it is never held back: only the
    /// answer is parsed for tool calls).
    Reasoning(String),
    /// Tool calls begun or grown in a streamed answer (`family::progress`).
    Calls(Vec<CallDelta>),
    /// The choice is complete.
    Finished(FinishReason, Usage),
}

/// What a stream learnt of one call: its name the first time (with its id), then the
/// next piece of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDelta {
    pub index: usize,
    pub name: Option<String>,
    pub arguments: String,
}

/// One choice's progress: text and log-probabilities not yet sent.
#[derive(Debug)]
pub struct ChoiceBuilder {
    index: usize,
    shape: Shape,
    /// The text held back: all of it for a whole body, the answer when tools may be
    /// called (it is parsed at the end), nothing while plain text streams.
    held: String,
    /// A whole body's thinking (streams send it as it comes).
    reasoning: String,
    /// Log-probabilities not yet sent.
    pending: Vec<TokenLogprob>,
    /// Bytes of text before the first pending token (the legacy `text_offset`).
    offset: usize,
    /// A stream with tools: for each call announced, the bytes of its arguments sent.
    sent_calls: Vec<usize>,
    /// A stream with tools: where in `held` the first call can still begin (free text
    /// before it is not searched again at every token).
    scan_from: usize,
}

impl ChoiceBuilder {
    pub fn new(index: usize, shape: Shape) -> Self {
        Self {
            index,
            shape,
            held: String::new(),
            reasoning: String::new(),
            pending: Vec::new(),
            offset: 0,
            sent_calls: Vec::new(),
            scan_from: 0,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    fn holds_text(&self) -> bool {
        !self.shape.stream || self.shape.tools
    }

    /// Read one event of this choice (None: the engine dropped the channel). A failure
    /// is the error to report: as the status of a whole body, as an event in a stream.
    pub fn feed(&mut self, event: Option<Event>, trace: &Trace) -> Result<Step, ApiError> {
        match event {
            Some(Event::Started { .. }) => Ok(Step::Nothing),
            Some(Event::Token(t)) => {
                trace.first_token();
                self.pending.push(t);
                Ok(Step::Nothing)
            }
            Some(Event::Text(t)) => {
                trace.first_token();
                if self.holds_text() {
                    self.held.push_str(&t);
                    match self.shape.stream && self.shape.tools {
                        true => Ok(self.call_deltas()),
                        false => Ok(Step::Nothing),
                    }
                } else {
                    Ok(Step::Text(t))
                }
            }
            Some(Event::Reasoning(t)) => {
                trace.first_token();
                if self.shape.stream {
                    Ok(Step::Reasoning(t))
                } else {
                    self.reasoning.push_str(&t);
                    Ok(Step::Nothing)
                }
            }
            Some(Event::Finished { reason, usage }) => Ok(Step::Finished(reason, usage)),
            Some(Event::Failed(e)) => Err(ApiError::from_engine(&e)),
            None => Err(ApiError::internal()),
        }
    }

    /// A stream with tools: the calls the held answer has begun since the last look, as
    /// deltas (each call's name once, then its arguments piece by piece).
    fn call_deltas(&mut self) -> Step {
        let from = self.scan_from.min(self.held.len());
        let calls = progress(
            self.shape.syntax,
            self.held.get(from..).unwrap_or(""),
            &Declared(&self.shape.functions),
        );
        if calls.is_empty() {
            self.scan_from = self.call_can_begin_from();
        }
        let mut deltas = Vec::new();
        for (index, call) in calls.into_iter().enumerate() {
            let name = match self.sent_calls.get(index) {
                Some(_) => None,
                None => {
                    self.sent_calls.push(0);
                    Some(call.name)
                }
            };
            let sent = self.sent_calls.get(index).copied().unwrap_or(0);
            let arguments = call.args.get(sent..).unwrap_or("").to_string();
            if name.is_some() || !arguments.is_empty() {
                if let Some(s) = self.sent_calls.get_mut(index) {
                    *s = call.args.len();
                }
                deltas.push(CallDelta {
                    index,
                    name,
                    arguments,
                });
            }
        }
        match deltas.is_empty() {
            true => Step::Nothing,
            false => Step::Calls(deltas),
        }
    }

    /// Where the first call can still begin, no call having begun in `held`: at an
    /// opener already written, else within the longest opener's length of its end; the
    /// start where a call is JSON at the answer's very start (the generic envelope,
    /// Llama 3), which is read from there.
    fn call_can_begin_from(&self) -> usize {
        let Some(syntax) = self.shape.syntax else {
            // The envelope is the whole answer: from its start, or never.
            return match self.held.trim_start().starts_with('{') {
                true => 0,
                false => self.held.len(),
            };
        };
        if syntax.family().json_at_start {
            // A JSON call counts only at the very start: the text is read from there.
            return 0;
        }
        // An opener already written (its call's name not whole yet) is where to look.
        let from = self.scan_from.min(self.held.len());
        if let Some(at) = first_opener(syntax, self.held.get(from..).unwrap_or("")) {
            return from + at;
        }
        let longest = syntax.family().call_open.iter().map(|o| o.len()).max();
        let mut at = self.held.len().saturating_sub(longest.unwrap_or(0));
        while !self.held.is_char_boundary(at) {
            at -= 1;
        }
        at.max(from)
    }

    /// A stream: for each call announced, the bytes of its arguments sent so far.
    pub fn sent_calls(&self) -> &[usize] {
        &self.sent_calls
    }

    /// The text held back so far (see `held`), taken.
    pub fn take_held(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// A whole body's thinking, taken.
    pub fn take_reasoning(&mut self) -> String {
        std::mem::take(&mut self.reasoning)
    }

    /// Log-probabilities are waiting to be sent.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The log-probabilities not yet sent and the text offset before them; None when
    /// none were asked for.
    pub fn take_logprobs(&mut self) -> Option<(Vec<TokenLogprob>, &mut usize)> {
        if !self.shape.logprobs {
            return None;
        }
        Some((std::mem::take(&mut self.pending), &mut self.offset))
    }
}

/// The response's usage over its choices.
#[derive(Debug, Default)]
pub struct Totals {
    usage: Usage,
    finished: usize,
}

impl Totals {
    /// Count one finished choice, here and in the request's trace: the prompt is counted
    /// once (every choice has the same), completions are summed.
    pub fn add(&mut self, u: &Usage, trace: &Trace) {
        let first = self.finished == 0;
        if first {
            self.usage.prompt_tokens = u.prompt_tokens;
            self.usage.cached_tokens = u.cached_tokens;
        }
        self.usage.completion_tokens = self
            .usage
            .completion_tokens
            .saturating_add(u.completion_tokens);
        self.usage.reasoning_tokens = self
            .usage
            .reasoning_tokens
            .saturating_add(u.reasoning_tokens);
        trace.add_tokens(if first { u.prompt_tokens } else { 0 }, u.completion_tokens);
        self.finished += 1;
    }

    pub fn finished(&self) -> usize {
        self.finished
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }
}

/// One endpoint's format, whole or streamed. Streamed text goes to `out` as complete
/// SSE events.
pub trait Wire: Send + Sync + Unpin + 'static {
    /// Stream: what is sent before any text (for `choices` choices).
    fn open(&mut self, choices: usize, out: &mut String);
    /// Stream: a piece of text of one choice.
    fn text(&mut self, choice: &mut ChoiceBuilder, text: String, out: &mut String);
    /// Stream: a piece of one choice's thinking (always before its text).
    fn reasoning(&mut self, choice: &mut ChoiceBuilder, text: String, out: &mut String);
    /// Stream: tool calls begun or grown (the finish then sends only what is left).
    fn calls(&mut self, choice: &mut ChoiceBuilder, deltas: Vec<CallDelta>, out: &mut String);
    /// Stream: one choice finished; `totals` already counts it. When it was the last,
    /// the stream's end follows.
    fn finished(
        &mut self,
        choice: &mut ChoiceBuilder,
        reason: FinishReason,
        totals: &Totals,
        last: bool,
        out: &mut String,
    );
    /// Stream: a failure after the 200 was sent; the stream ends after it.
    fn failed(&mut self, error: &ApiError, out: &mut String);
    /// Whole body: every choice, finished, in order.
    fn whole(&mut self, choices: Vec<(ChoiceBuilder, FinishReason)>, totals: &Totals) -> Value;
}

/// Wait for every choice of a whole (non-streamed) response and write its body. The
/// choices run in parallel on the engine; they are read in order.
pub async fn collect<W: Wire>(
    wire: &mut W,
    shape: Shape,
    receivers: Vec<UnboundedReceiver<Event>>,
    trace: &Trace,
) -> Result<Value, ApiError> {
    let mut choices = Vec::with_capacity(receivers.len());
    let mut totals = Totals::default();
    for (i, mut rx) in receivers.into_iter().enumerate() {
        let mut builder = ChoiceBuilder::new(i, shape.clone());
        loop {
            // A whole body holds all text in the builder: `Step::Text` is for streams.
            if let Step::Finished(reason, usage) = builder.feed(rx.recv().await, trace)? {
                totals.add(&usage, trace);
                choices.push((builder, reason));
                break;
            }
        }
    }
    Ok(wire.whole(choices, &totals))
}

/// Where a stream stands after one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The choice goes on.
    Open,
    /// The choice finished; others have not.
    ChoiceDone,
    /// The stream is over (every choice finished, or a failure).
    Ended,
}

/// Stream: one event of one choice, written by `wire` into `out`. `choices` is how many
/// the response has; `totals` counts the finished ones.
pub fn stream_event<W: Wire>(
    wire: &mut W,
    choice: &mut ChoiceBuilder,
    event: Option<Event>,
    totals: &mut Totals,
    choices: usize,
    trace: &Trace,
    out: &mut String,
) -> Progress {
    match choice.feed(event, trace) {
        Ok(Step::Nothing) => Progress::Open,
        Ok(Step::Text(t)) => {
            wire.text(choice, t, out);
            Progress::Open
        }
        Ok(Step::Reasoning(t)) => {
            wire.reasoning(choice, t, out);
            Progress::Open
        }
        Ok(Step::Calls(deltas)) => {
            wire.calls(choice, deltas, out);
            Progress::Open
        }
        Ok(Step::Finished(reason, usage)) => {
            totals.add(&usage, trace);
            let last = totals.finished() == choices;
            wire.finished(choice, reason, totals, last, out);
            if last {
                Progress::Ended
            } else {
                Progress::ChoiceDone
            }
        }
        Err(e) => {
            wire.failed(&e, out);
            Progress::Ended
        }
    }
}

/// One SSE event: `data: {json}`, with an `event:` line when the format names its events.
pub fn sse_event(out: &mut String, event: Option<&str>, data: &impl serde::Serialize) {
    if let Some(name) = event {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str("data: ");
    // Our wire types have string keys only, so serializing cannot fail; were it to, the
    // event carries an empty object rather than ending the stream with a panic.
    match serde_json::to_string(data) {
        Ok(json) => out.push_str(&json),
        Err(_) => out.push_str("{}"),
    }
    out.push_str("\n\n");
}

/// OpenAI's chat/completions usage object; `cached_tokens` counts prompt tokens taken
/// from the prefix cache.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens as u64 + u.completion_tokens as u64,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// Test support: the same events through `collect` (whole) and `stream_event` (stream),
/// for every wire's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::metrics::{Metrics, Route};
    use std::sync::Arc;

    pub fn trace() -> Arc<Trace> {
        Trace::new(
            Arc::new(Metrics::default()),
            Route::ChatCompletions,
            tracing::Span::none(),
        )
    }

    /// A reasoning model's answer: two pieces of thinking ("Two and two.", 4 tokens), then
    /// `answer`; 6 completion tokens in all.
    pub fn thought(reason: FinishReason, answer: &[&str]) -> Vec<Event> {
        let mut v = vec![
            Event::Started { prompt_tokens: 5 },
            Event::Reasoning("Two and ".into()),
            Event::Reasoning("two.".into()),
        ];
        v.extend(answer.iter().map(|w| Event::Text((*w).to_string())));
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 6,
            cached_tokens: 0,
            reasoning_tokens: 4,
        };
        v.push(Event::Finished { reason, usage });
        v
    }

    /// A whole body from one choice's events.
    pub fn whole<W: Wire>(wire: &mut W, shape: Shape, events: Vec<Event>) -> Value {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for e in events {
            tx.send(e).expect("open channel");
        }
        drop(tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(collect(wire, shape, vec![rx], &trace()))
            .expect("a whole body")
    }

    /// The SSE text of one choice's events, and every event parsed as (name, data).
    pub fn stream<W: Wire>(
        wire: &mut W,
        shape: Shape,
        events: Vec<Event>,
    ) -> (String, Vec<(Option<String>, Value)>) {
        let (trace, mut totals, mut out) = (trace(), Totals::default(), String::new());
        wire.open(1, &mut out);
        let mut b = ChoiceBuilder::new(0, shape);
        for e in events {
            if stream_event(wire, &mut b, Some(e), &mut totals, 1, &trace, &mut out)
                == Progress::Ended
            {
                break;
            }
        }
        let parsed = out
            .split("\n\n")
            .filter(|e| !e.is_empty() && *e != "data: [DONE]")
            .map(|e| {
                let (name, data) = match e.strip_prefix("event: ") {
                    Some(rest) => {
                        let (n, d) = rest.split_once('\n').expect("event then data");
                        (Some(n.to_string()), d)
                    }
                    None => (None, e),
                };
                let data = data.strip_prefix("data: ").expect("a data line");
                (name, serde_json::from_str(data).expect("JSON data"))
            })
            .collect();
        (out, parsed)
    }
}
