//! Server-sent events for `stream: true`, in the chunk format the OpenAI SDKs parse.
//!
//! The body owns the engine's event receiver directly: when the client goes away, hyper
//! drops the body, the receiver is dropped with it, and the engine sees a closed channel
//! before its next token. No task sits in between that could keep generating.

use super::error::ApiError;
use crate::engine::{Event, FinishReason, Usage};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// Which endpoint's chunk shape to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// Identity shared by every chunk of one response.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
    pub include_usage: bool,
}

impl ChunkMeta {
    fn chunk(&self, delta_or_text: Value, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(|f| f.as_str());
        let (object, choice) = match self.kind {
            Kind::Chat => (
                "chat.completion.chunk",
                json!({"index": 0, "delta": delta_or_text, "logprobs": null, "finish_reason": finish}),
            ),
            Kind::Completion => (
                "text_completion",
                json!({"index": 0, "text": delta_or_text, "logprobs": null, "finish_reason": finish}),
            ),
        };
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn text_chunk(&self, text: String) -> Value {
        match self.kind {
            Kind::Chat => self.chunk(json!({"content": text}), None),
            Kind::Completion => self.chunk(Value::String(text), None),
        }
    }

    /// The first chunk of a chat stream announces the role.
    pub fn opening(&self) -> Option<Bytes> {
        match self.kind {
            Kind::Chat => Some(sse(
                &self.chunk(json!({"role": "assistant", "content": ""}), None)
            )),
            Kind::Completion => None,
        }
    }

    fn closing(&self, reason: FinishReason, u: &Usage) -> Bytes {
        let empty = match self.kind {
            Kind::Chat => json!({}),
            Kind::Completion => Value::String(String::new()),
        };
        let mut out = sse_string(&self.chunk(empty, Some(reason)));
        if self.include_usage {
            let usage = json!({
                "id": self.id,
                "object": match self.kind { Kind::Chat => "chat.completion.chunk", Kind::Completion => "text_completion" },
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(u),
            });
            out.push_str(&sse_string(&usage));
        }
        out.push_str("data: [DONE]\n\n");
        Bytes::from(out)
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

fn sse_string(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(sse_string(v))
}

/// The streaming response body.
pub struct SseBody {
    meta: ChunkMeta,
    events: UnboundedReceiver<Event>,
    first: Option<Bytes>,
    done: bool,
    /// The key's generation slot, held until the stream is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl SseBody {
    pub fn new(
        meta: ChunkMeta,
        events: UnboundedReceiver<Event>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        let first = meta.opening();
        Self {
            meta,
            events,
            first,
            done: false,
            _slot: slot,
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let bytes = match self.events.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Event::Started { .. })) => continue,
                Poll::Ready(Some(Event::Text(t))) => sse(&self.meta.text_chunk(t)),
                Poll::Ready(Some(Event::Finished { reason, usage })) => {
                    self.done = true;
                    self.meta.closing(reason, &usage)
                }
                Poll::Ready(Some(Event::Failed(e))) => {
                    self.done = true;
                    error_event(&ApiError::from_engine(&e))
                }
                Poll::Ready(None) => {
                    self.done = true;
                    error_event(&ApiError::internal())
                }
            };
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A failure after the 200 was sent: an error object as a data event, then [DONE].
fn error_event(e: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body()))
}
