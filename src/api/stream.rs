//! Server-sent events for `stream: true`, in the chunk format the OpenAI SDKs parse.
//!
//! The body owns the engine's event receivers (one per choice) directly: when the client
//! goes away, hyper drops the body, the receivers are dropped with it, and the engine
//! sees closed channels before its next token. No task sits in between that could keep
//! generating.

use super::choice::{self, Kind};
use super::error::ApiError;
use crate::engine::{Event, TokenLogprob, Usage};
use crate::metrics::Trace;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// Identity shared by every chunk of one response.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
    pub include_usage: bool,
    pub system_fingerprint: String,
    /// The id's random part (24 hex digits), also the base of tool-call ids.
    pub random: String,
}

impl ChunkMeta {
    pub fn object(&self, stream: bool) -> &'static str {
        match (self.kind, stream) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// A chunk with one choice: `body` is the chat delta or the completion text.
    fn chunk(&self, index: u32, body: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": index, "delta": body, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": index, "text": body, "logprobs": logprobs, "finish_reason": finish})
            }
        };
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": [choice],
        });
        if let (true, Some(o)) = (self.include_usage, v.as_object_mut()) {
            o.insert("usage".into(), Value::Null);
        }
        v
    }

    fn text_body(&self, text: String) -> Value {
        match self.kind {
            Kind::Chat => json!({"content": text}),
            Kind::Completion => Value::String(text),
        }
    }

    fn usage_chunk(&self, u: &Usage) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": [],
            "usage": usage(u),
        })
    }
}

/// OpenAI's usage object; `cached_tokens` counts prompt tokens taken from the prefix cache.
pub fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens as u64 + u.completion_tokens as u64,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// Add one choice's usage to the response's: the prompt is counted once (every choice
/// has the same), completions are summed.
pub fn add_usage(total: &mut Usage, u: &Usage, first: bool) {
    if first {
        total.prompt_tokens = u.prompt_tokens;
        total.cached_tokens = u.cached_tokens;
    }
    total.completion_tokens = total.completion_tokens.saturating_add(u.completion_tokens);
}

fn sse_string(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// What a stream needs to know about the request's output.
pub struct StreamShape {
    pub logprobs: bool,
    /// Tools may be called: the answer is buffered and sent parsed at its end.
    pub tools: bool,
}

/// One choice's progress in the stream.
struct ChoiceStream {
    events: UnboundedReceiver<Event>,
    pending: Vec<TokenLogprob>,
    buffered: String,
    offset: usize,
    done: bool,
}

impl ChoiceStream {
    /// The log-probabilities not yet sent, in the endpoint's shape (null when not asked).
    fn take_logprobs(&mut self, wanted: bool, kind: Kind) -> Value {
        if !wanted {
            return Value::Null;
        }
        let lps = std::mem::take(&mut self.pending);
        choice::logprobs_json(kind, &lps, &mut self.offset)
    }
}

/// The streaming response body.
pub struct SseBody {
    meta: ChunkMeta,
    shape: StreamShape,
    choices: Vec<ChoiceStream>,
    /// Bytes ready to send (opening chunks, several chunks from one poll).
    out: String,
    next: usize,
    usage: Usage,
    finished: usize,
    done: bool,
    /// The key's generation slots, held until the stream is dropped.
    _slots: tokio::sync::OwnedSemaphorePermit,
    /// The request's record: logged and counted when the stream is dropped.
    trace: Arc<Trace>,
}

impl SseBody {
    pub fn new(
        meta: ChunkMeta,
        shape: StreamShape,
        receivers: Vec<UnboundedReceiver<Event>>,
        slots: tokio::sync::OwnedSemaphorePermit,
        trace: Arc<Trace>,
    ) -> Self {
        let mut out = String::new();
        if meta.kind == Kind::Chat {
            // The first chunk of each chat choice announces the role.
            for i in 0..receivers.len() as u32 {
                let body = json!({"role": "assistant", "content": ""});
                out.push_str(&sse_string(&meta.chunk(i, body, Value::Null, None)));
            }
        }
        let choices = receivers
            .into_iter()
            .map(|events| ChoiceStream {
                events,
                pending: Vec::new(),
                buffered: String::new(),
                offset: 0,
                done: false,
            })
            .collect();
        Self {
            meta,
            shape,
            choices,
            out,
            next: 0,
            usage: Usage::default(),
            finished: 0,
            done: false,
            _slots: slots,
            trace,
        }
    }

    /// Turn one event of choice `i` into output.
    fn on_event(&mut self, i: usize, event: Option<Event>) {
        let index = i as u32;
        let Some(c) = self.choices.get_mut(i) else {
            return;
        };
        let (meta, logprobs, out) = (&self.meta, self.shape.logprobs, &mut self.out);
        match event {
            Some(Event::Started { .. }) => {}
            Some(Event::Token(t)) => {
                self.trace.first_token();
                c.pending.push(t)
            }
            Some(Event::Text(t)) if self.shape.tools => {
                self.trace.first_token();
                c.buffered.push_str(&t)
            }
            Some(Event::Text(t)) => {
                self.trace.first_token();
                let lp = c.take_logprobs(logprobs, meta.kind);
                out.push_str(&sse_string(&meta.chunk(index, meta.text_body(t), lp, None)));
            }
            Some(Event::Finished { reason, usage: u }) => {
                let mut called = false;
                if self.shape.tools {
                    let text = std::mem::take(&mut c.buffered);
                    let (delta, calls) =
                        choice::tool_message(&text, true, &meta.random, index as usize);
                    called = calls;
                    let lp = c.take_logprobs(logprobs, meta.kind);
                    out.push_str(&sse_string(&meta.chunk(
                        index,
                        Value::Object(delta),
                        lp,
                        None,
                    )));
                }
                let lp = if c.pending.is_empty() {
                    Value::Null
                } else {
                    c.take_logprobs(logprobs, meta.kind)
                };
                let empty = match meta.kind {
                    Kind::Chat => Value::Object(Map::new()),
                    Kind::Completion => Value::String(String::new()),
                };
                let finish = choice::finish_str(reason, called);
                out.push_str(&sse_string(&meta.chunk(index, empty, lp, Some(finish))));
                c.done = true;
                add_usage(&mut self.usage, &u, self.finished == 0);
                self.trace.add_tokens(
                    if self.finished == 0 {
                        u.prompt_tokens
                    } else {
                        0
                    },
                    u.completion_tokens,
                );
                self.finished += 1;
                if self.finished == self.choices.len() {
                    if meta.include_usage {
                        out.push_str(&sse_string(&meta.usage_chunk(&self.usage)));
                    }
                    out.push_str("data: [DONE]\n\n");
                    self.done = true;
                }
            }
            Some(Event::Failed(e)) => self.fail(&ApiError::from_engine(&e)),
            None => self.fail(&ApiError::internal()),
        }
    }

    /// A failure after the 200 was sent: an error object as a data event, then [DONE].
    fn fail(&mut self, e: &ApiError) {
        self.out
            .push_str(&format!("data: {}\n\ndata: [DONE]\n\n", e.body()));
        self.done = true;
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        // Visit every unfinished choice once per poll, starting after the last one
        // served, so no choice starves the others.
        let count = this.choices.len();
        for k in 0..count {
            if this.done {
                break;
            }
            let i = (this.next + k) % count;
            while let Some(c) = this.choices.get_mut(i).filter(|c| !c.done) {
                let Poll::Ready(event) = c.events.poll_recv(cx) else {
                    break;
                };
                let last = !matches!(
                    event,
                    Some(Event::Started { .. } | Event::Token(_) | Event::Text(_))
                );
                this.on_event(i, event);
                if last || this.done {
                    break;
                }
            }
        }
        this.next = (this.next + 1) % count.max(1);
        if !this.out.is_empty() {
            let bytes = Bytes::from(std::mem::take(&mut this.out));
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
