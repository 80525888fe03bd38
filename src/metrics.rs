//! Request metrics and the per-request log line.
//!
//! Every API request gets one [`Trace`]; when its last holder lets go (the handler for a
//! plain response, the stream body when an SSE stream ends or its client leaves) the
//! request is counted by route, status and key id, its latencies go into the histograms,
//! and one `request done` line is logged with key id, route, status, tokens and
//! durations. The Prometheus text for all of it is served on the health port only.
//!
//! SECURITY: labels are bounded by construction: routes are a fixed set ("other" for
//! every unknown path), statuses are what the server itself sends, and key ids are only
//! recorded after authentication (unauthenticated requests count as key_id=""), so a
//! client cannot grow the label space. Nothing here sees a prompt or a credential.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency histogram buckets: from a cached short answer
/// on a GPU (tens of ms) to a long CPU generation (minutes, limits.max_generation_secs).
const LATENCY_BUCKETS: [f64; 13] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// The throughput gauge averages completion tokens over this many recent seconds.
const RATE_WINDOW_SECS: u64 = 60;

/// A fixed set of label values: an enum, so a typo is a compile error, not a dropped
/// count, and each value indexes its counter directly.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }
    };
}

labels! {
    /// The `route` label.
    Route {
        ChatCompletions => "chat_completions",
        Completions => "completions",
        Embeddings => "embeddings",
        Models => "models",
        Model => "model",
        Other => "other",
    }
}

labels! {
    /// Why a request got 429 (the `limit` label of lgi_rate_limited_total).
    RateLimit {
        Requests => "requests",
        Tokens => "tokens",
        Generations => "generations",
        Address => "address",
        Verifier => "verifier",
    }
}

labels! {
    /// Why authentication failed (the `reason` label of lgi_auth_failures_total).
    AuthFailure {
        Missing => "missing",
        Malformed => "malformed",
        Invalid => "invalid",
        Expired => "expired",
    }
}

/// One counter (or histogram) per value of a label enum.
const ROUTES: usize = 6;
const RATE_LIMITS: usize = 5;
const AUTH_FAILURES: usize = 4;

/// A Prometheus histogram with fixed buckets (cumulative counts computed on export).
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn export(&self, out: &mut String, name: &str, route: &str) {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{route=\"{route}\"}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
    }
}

/// Sandbox state for the gauges, set once lock-down and seccomp are in place.
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxGauges {
    pub landlock_enforced: bool,
    pub seccomp_active: bool,
    pub capabilities_cleared: bool,
    pub running_as_root: bool,
}

/// (route, status, key id) → requests answered.
type RequestCounts = BTreeMap<(&'static str, u16, Arc<str>), u64>;

/// Everything /metrics exports beyond the engine's own counters.
pub struct Metrics {
    requests: Mutex<RequestCounts>,
    ttft: [Histogram; ROUTES],
    total: [Histogram; ROUTES],
    auth_failures: [AtomicU64; AUTH_FAILURES],
    rate_limited: [AtomicU64; RATE_LIMITS],
    /// (unix second, completion tokens finished in it), one slot per second of the window.
    recent_tokens: Mutex<[(u64, u64); RATE_WINDOW_SECS as usize]>,
    sandbox: Mutex<Option<SandboxGauges>>,
    key_reloads: AtomicU64,
    key_reload_failures: AtomicU64,
    epoch: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            ttft: [const { Histogram::new() }; ROUTES],
            total: [const { Histogram::new() }; ROUTES],
            auth_failures: [const { AtomicU64::new(0) }; AUTH_FAILURES],
            rate_limited: [const { AtomicU64::new(0) }; RATE_LIMITS],
            recent_tokens: Mutex::new([(0, 0); RATE_WINDOW_SECS as usize]),
            sandbox: Mutex::new(None),
            key_reloads: AtomicU64::new(0),
            key_reload_failures: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Metrics {
    pub fn set_sandbox(&self, g: SandboxGauges) {
        if let Ok(mut s) = self.sandbox.lock() {
            *s = Some(g);
        }
    }

    pub fn key_reload(&self, ok: bool) {
        let c = if ok {
            &self.key_reloads
        } else {
            &self.key_reload_failures
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        if let Some(c) = self.auth_failures.get(reason as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rate_limited(&self, limit: RateLimit) {
        if let Some(c) = self.rate_limited.get(limit as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Seconds since this registry was made (the throughput window's clock).
    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn add_recent_tokens(&self, n: u64) {
        let now = self.now_secs();
        if let Ok(mut ring) = self.recent_tokens.lock() {
            if let Some(slot) = ring.get_mut((now % RATE_WINDOW_SECS) as usize) {
                if slot.0 != now {
                    *slot = (now, 0);
                }
                slot.1 += n;
            }
        }
    }

    /// Completion tokens per second, averaged over the last RATE_WINDOW_SECS seconds.
    pub fn tokens_per_second(&self) -> f64 {
        let now = self.now_secs();
        let Ok(ring) = self.recent_tokens.lock() else {
            return 0.0;
        };
        let sum: u64 = ring
            .iter()
            .filter(|(sec, _)| now.saturating_sub(*sec) < RATE_WINDOW_SECS)
            .map(|(_, n)| *n)
            .sum();
        // A young process divides by its age, not the whole window.
        let span = (now + 1).min(RATE_WINDOW_SECS);
        sum as f64 / span as f64
    }

    fn finish(&self, t: &TraceState, route: Route, total: Duration) {
        let key: Arc<str> = t.key_id.clone().unwrap_or_else(|| Arc::from(""));
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.label(), t.status, key)).or_insert(0) += 1;
        }
        let i = route as usize;
        if let Some(h) = self.total.get(i) {
            h.observe(total);
        }
        if let (Some(ttft), Some(h)) = (t.first_token, self.ttft.get(i)) {
            h.observe(ttft);
        }
        if t.completion_tokens > 0 {
            self.add_recent_tokens(u64::from(t.completion_tokens));
        }
    }

    /// Prometheus text for this registry (appended after the engine counters).
    pub fn export(&self, out: &mut String) {
        header(
            out,
            "lgi_requests_total",
            "counter",
            "API requests answered, by route, status and key id (\"\" before authentication)",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status, key), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lgi_requests_total{{route=\"{route}\",status=\"{status}\",key_id=\"{key}\"}} {n}"
                );
            }
        }
        header(
            out,
            "lgi_time_to_first_token_seconds",
            "histogram",
            "time from request arrival to the first generated token",
        );
        for (route, h) in Route::ALL.iter().zip(&self.ttft) {
            if matches!(route, Route::ChatCompletions | Route::Completions) {
                h.export(out, "lgi_time_to_first_token_seconds", route.label());
            }
        }
        header(
            out,
            "lgi_request_duration_seconds",
            "histogram",
            "time from request arrival to the last byte of the answer (stream end)",
        );
        for (route, h) in Route::ALL.iter().zip(&self.total) {
            h.export(out, "lgi_request_duration_seconds", route.label());
        }
        let _ = write!(
            out,
            "# HELP lgi_completion_tokens_per_second completion tokens per second over the last {RATE_WINDOW_SECS} s\n# TYPE lgi_completion_tokens_per_second gauge\nlgi_completion_tokens_per_second {:.3}\n",
            self.tokens_per_second()
        );
        header(
            out,
            "lgi_auth_failures_total",
            "counter",
            "requests refused with 401, by reason",
        );
        for (reason, c) in AuthFailure::ALL.iter().zip(&self.auth_failures) {
            let _ = writeln!(
                out,
                "lgi_auth_failures_total{{reason=\"{}\"}} {}",
                reason.label(),
                c.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "lgi_rate_limited_total",
            "counter",
            "requests refused with 429, by the limit that refused them",
        );
        for (limit, c) in RateLimit::ALL.iter().zip(&self.rate_limited) {
            let _ = writeln!(
                out,
                "lgi_rate_limited_total{{limit=\"{}\"}} {}",
                limit.label(),
                c.load(Ordering::Relaxed)
            );
        }
        for (name, help, c) in [
            (
                "lgi_key_reloads_total",
                "keys file reloads applied (SIGHUP)",
                &self.key_reloads,
            ),
            (
                "lgi_key_reload_failures_total",
                "keys file reloads refused (the previous keys stay)",
                &self.key_reload_failures,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        let sandbox = self.sandbox.lock().ok().and_then(|s| *s);
        if let Some(s) = sandbox {
            for (name, help, v) in [
                (
                    "lgi_sandbox_landlock_enforced",
                    "1 when every Landlock rule is enforced",
                    s.landlock_enforced,
                ),
                (
                    "lgi_sandbox_seccomp_active",
                    "1 when the seccomp deny list is installed",
                    s.seccomp_active,
                ),
                (
                    "lgi_sandbox_capabilities_cleared",
                    "1 when every capability set is empty",
                    s.capabilities_cleared,
                ),
                (
                    "lgi_sandbox_running_as_root",
                    "1 when the process runs as uid 0 (sandbox.allow_root)",
                    s.running_as_root,
                ),
            ] {
                header(out, name, "gauge", help);
                let _ = writeln!(out, "{name} {}", u8::from(v));
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// What one request has done so far.
#[derive(Debug, Default)]
struct TraceState {
    key_id: Option<Arc<str>>,
    status: u16,
    first_token: Option<Duration>,
    prompt_tokens: u32,
    completion_tokens: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_counts_once_with_its_labels_and_latencies() {
        let m = Arc::new(Metrics::default());
        let t = Trace::new(m.clone(), Route::ChatCompletions, tracing::Span::none());
        t.set_key(Arc::from("alice"));
        t.set_status(200);
        t.first_token();
        t.add_tokens(10, 7);
        let held_by_stream = t.clone();
        drop(t);
        let mut out = String::new();
        m.export(&mut out);
        assert!(
            !out.contains("key_id=\"alice\""),
            "counted before the stream ended"
        );
        drop(held_by_stream);
        let mut out = String::new();
        m.export(&mut out);
        assert!(
            out.contains(
                "lgi_requests_total{route=\"chat_completions\",status=\"200\",key_id=\"alice\"} 1"
            ),
            "{out}"
        );
        assert!(out.contains("lgi_time_to_first_token_seconds_count{route=\"chat_completions\"} 1"));
        assert!(out.contains(
            "lgi_request_duration_seconds_bucket{route=\"chat_completions\",le=\"+Inf\"} 1"
        ));
        assert!(
            !out.contains("lgi_completion_tokens_per_second 0.000"),
            "{out}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(2));
        h.observe(Duration::from_secs(1000));
        let mut out = String::new();
        h.export(&mut out, "x", "r");
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.025\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.05\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"2.5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"300\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{route=\"r\"} 3\n"), "{out}");
    }

    #[test]
    fn every_label_value_has_its_own_counter() {
        // The arrays are sized by hand; the enums must fit them exactly.
        assert_eq!(Route::ALL.len(), ROUTES);
        assert_eq!(RateLimit::ALL.len(), RATE_LIMITS);
        assert_eq!(AuthFailure::ALL.len(), AUTH_FAILURES);
        let m = Metrics::default();
        m.auth_failure(AuthFailure::Expired);
        m.rate_limited(RateLimit::Verifier);
        m.rate_limited(RateLimit::Verifier);
        let mut out = String::new();
        m.export(&mut out);
        assert!(
            out.contains("lgi_auth_failures_total{reason=\"expired\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lgi_auth_failures_total{reason=\"missing\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("lgi_rate_limited_total{limit=\"verifier\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("lgi_rate_limited_total{limit=\"tokens\"} 0\n"),
            "{out}"
        );
    }
}
