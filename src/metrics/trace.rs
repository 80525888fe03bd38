//! One API request's record: counted in the registry and logged as one `request done`
//! line when its last holder (the handler, or the stream body) lets go.

use super::{Metrics, Route};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one request has done so far.
#[derive(Debug, Default)]
pub(super) struct TraceState {
    pub(super) key_id: Option<Arc<str>>,
    pub(super) status: u16,
    pub(super) first_token: Option<Duration>,
    pub(super) prompt_tokens: u32,
    pub(super) completion_tokens: u32,
}

/// One API request, shared by the handler and (for a stream) the response body; counted
/// and logged once, when the last holder drops it.
pub struct Trace {
    metrics: Arc<Metrics>,
    route: Route,
    started: Instant,
    span: tracing::Span,
    state: Mutex<TraceState>,
}

impl Trace {
    pub fn new(metrics: Arc<Metrics>, route: Route, span: tracing::Span) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            route,
            started: Instant::now(),
            span,
            state: Mutex::new(TraceState::default()),
        })
    }

    fn with(&self, f: impl FnOnce(&mut TraceState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    pub fn set_key(&self, key_id: Arc<str>) {
        self.with(|s| s.key_id = Some(key_id));
    }

    pub fn set_status(&self, status: u16) {
        self.with(|s| s.status = status);
    }

    /// The first token of any choice arrived (later calls change nothing).
    pub fn first_token(&self) {
        let now = self.started.elapsed();
        self.with(|s| {
            s.first_token.get_or_insert(now);
        });
    }

    pub fn add_tokens(&self, prompt: u32, completion: u32) {
        self.with(|s| {
            s.prompt_tokens = s.prompt_tokens.saturating_add(prompt);
            s.completion_tokens = s.completion_tokens.saturating_add(completion);
        });
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let total = self.started.elapsed();
        let s = match self.state.get_mut() {
            Ok(s) => std::mem::take(s),
            Err(p) => std::mem::take(p.into_inner()),
        };
        self.metrics.finish(&s, self.route, total);
        let _enter = self.span.enter();
        tracing::info!(
            route = self.route.label(),
            status = s.status,
            prompt_tokens = s.prompt_tokens,
            completion_tokens = s.completion_tokens,
            ttft_ms = s.first_token.map(|d| d.as_millis() as u64),
            ms = total.as_millis() as u64,
            "request done"
        );
    }
}
