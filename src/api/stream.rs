//! Server-sent events for `stream: true`: the events a `wire::Wire` writes, sent as
//! they come, fairly across the choices of `n`.
//!
//! The body owns the engine's event receivers (one per choice) directly: when the client
//! goes away, hyper drops the body, the receivers are dropped with it, and the engine
//! sees closed channels before its next token. No task sits in between that could keep
//! generating.

use super::wire::{stream_event, ChoiceBuilder, Progress, Shape, Totals, Wire};
use crate::engine::Event;
use crate::metrics::Trace;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// One choice's place in the stream.
struct ChoiceStream {
    events: UnboundedReceiver<Event>,
    builder: ChoiceBuilder,
    done: bool,
}

/// The streaming response body, in the format of `W`.
pub struct SseBody<W: Wire> {
    wire: W,
    choices: Vec<ChoiceStream>,
    /// Bytes ready to send (opening events, several events from one poll).
    out: String,
    next: usize,
    totals: Totals,
    done: bool,
    /// The key's generation slots, held until the stream is dropped.
    _slots: tokio::sync::OwnedSemaphorePermit,
    /// The request's record: logged and counted when the stream is dropped.
    trace: Arc<Trace>,
}

impl<W: Wire> SseBody<W> {
    pub fn new(
        mut wire: W,
        shape: Shape,
        receivers: Vec<UnboundedReceiver<Event>>,
        slots: tokio::sync::OwnedSemaphorePermit,
        trace: Arc<Trace>,
    ) -> Self {
        let mut out = String::new();
        wire.open(receivers.len(), &mut out);
        let choices = receivers
            .into_iter()
            .enumerate()
            .map(|(i, events)| ChoiceStream {
                events,
                builder: ChoiceBuilder::new(i, shape.clone()),
                done: false,
            })
            .collect();
        Self {
            wire,
            choices,
            out,
            next: 0,
            totals: Totals::default(),
            done: false,
            _slots: slots,
            trace,
        }
    }

    /// Turn one event of choice `i` into output.
    fn on_event(&mut self, i: usize, event: Option<Event>) {
        let count = self.choices.len();
        let Some(c) = self.choices.get_mut(i) else {
            return;
        };
        let progress = stream_event(
            &mut self.wire,
            &mut c.builder,
            event,
            &mut self.totals,
            count,
            &self.trace,
            &mut self.out,
        );
        match progress {
            Progress::Open => {}
            Progress::ChoiceDone => c.done = true,
            Progress::Ended => {
                c.done = true;
                self.done = true;
            }
        }
    }
}

impl<W: Wire> Body for SseBody<W> {
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
                    Some(
                        Event::Started { .. }
                            | Event::Token(_)
                            | Event::Reasoning(_)
                            | Event::Text(_)
                    )
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
