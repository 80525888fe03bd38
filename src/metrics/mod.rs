//! The one metrics registry: it owns every counter the server keeps — the engine's
//! (shared with the engine thread), authentication's (shared with the key store), the
//! requests' (fed by [`Trace`]), rate limits, key reloads, sandbox gauges — and renders
//! all of them as the Prometheus text of the health port's `/metrics`. The one exception
//! is the seccomp denial count: a SIGSYS handler may touch only statics, so it lives in
//! `sandbox::seccomp` and is read from there here.
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

mod histogram;
mod trace;

pub use trace::Trace;

use crate::engine::EngineStats;
use histogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trace::TraceState;

/// What a SIGHUP reloads, counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Keys,
    Tls,
}

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
        Responses => "responses",
        InputTokens => "responses_input_tokens",
        StoredResponse => "responses_stored",
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
const ROUTES: usize = 9;
const RATE_LIMITS: usize = 5;
const AUTH_FAILURES: usize = 4;

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

/// Authentication's counters, shared with the key store that counts them.
#[derive(Debug, Default)]
pub struct AuthCounters {
    argon2_runs: AtomicU64,
    address_throttled: AtomicU64,
}

impl AuthCounters {
    /// One argon2 verification ran (first use of a key, a failure, an unknown id).
    pub fn argon2_ran(&self) {
        self.argon2_runs.fetch_add(1, Ordering::Relaxed);
    }

    /// One request was refused for too many failed authentications from its address.
    pub fn address_throttled(&self) {
        self.address_throttled.fetch_add(1, Ordering::Relaxed);
    }
}

/// The registry: every counter /metrics exports.
pub struct Metrics {
    /// The engine's counters and readiness, updated by the engine thread.
    engine: Arc<EngineStats>,
    auth: Arc<AuthCounters>,
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
    tls_reloads: AtomicU64,
    tls_reload_failures: AtomicU64,
    /// The served certificate's notAfter, unix seconds; 0 until start-up sets it.
    tls_not_after: AtomicI64,
    epoch: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Arc::default(), Arc::default())
    }
}

impl Metrics {
    pub fn new(engine: Arc<EngineStats>, auth: Arc<AuthCounters>) -> Self {
        Self {
            engine,
            auth,
            requests: Mutex::new(BTreeMap::new()),
            ttft: [const { Histogram::new() }; ROUTES],
            total: [const { Histogram::new() }; ROUTES],
            auth_failures: [const { AtomicU64::new(0) }; AUTH_FAILURES],
            rate_limited: [const { AtomicU64::new(0) }; RATE_LIMITS],
            recent_tokens: Mutex::new([(0, 0); RATE_WINDOW_SECS as usize]),
            sandbox: Mutex::new(None),
            key_reloads: AtomicU64::new(0),
            key_reload_failures: AtomicU64::new(0),
            tls_reloads: AtomicU64::new(0),
            tls_reload_failures: AtomicU64::new(0),
            tls_not_after: AtomicI64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The engine's counters, for the engine to update and the health port to read.
    pub fn engine(&self) -> &Arc<EngineStats> {
        &self.engine
    }

    pub fn set_sandbox(&self, g: SandboxGauges) {
        if let Ok(mut s) = self.sandbox.lock() {
            *s = Some(g);
        }
    }

    /// One SIGHUP reload of `what`: applied (`ok`) or refused.
    pub fn reloaded(&self, what: Reloaded, ok: bool) {
        let c = match (what, ok) {
            (Reloaded::Keys, true) => &self.key_reloads,
            (Reloaded::Keys, false) => &self.key_reload_failures,
            (Reloaded::Tls, true) => &self.tls_reloads,
            (Reloaded::Tls, false) => &self.tls_reload_failures,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The certificate now served expires at `unix` seconds (for an expiry alert).
    pub fn set_tls_not_after(&self, unix: i64) {
        self.tls_not_after.store(unix, Ordering::Relaxed);
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

    /// The Prometheus text of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.export_engine(&mut out);
        self.export_requests(&mut out);
        out
    }

    /// The engine's and the authentication's counters, and the seccomp denials.
    fn export_engine(&self, out: &mut String) {
        let (e, a) = (&self.engine, &self.auth);
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        #[rustfmt::skip]
        let rows: [(&str, &str, &str, u64); 12] = [
            ("lgi_ready", "gauge", "1 once the model is loaded", u64::from(e.is_ready())),
            ("lgi_queue_depth", "gauge", "requests waiting for the engine", g(&e.queued)),
            ("lgi_active_requests", "gauge", "requests generating now", g(&e.active)),
            ("lgi_requests_completed_total", "counter", "generations finished", g(&e.completed)),
            ("lgi_requests_cancelled_total", "counter", "generations stopped because the client left", g(&e.cancelled)),
            ("lgi_requests_failed_total", "counter", "generations that failed", g(&e.failed)),
            ("lgi_prompt_tokens_total", "counter", "prompt tokens processed", g(&e.prompt_tokens)),
            ("lgi_prompt_tokens_cached_total", "counter", "prompt tokens reused from the prefix cache instead of computed", g(&e.cached_tokens)),
            ("lgi_completion_tokens_total", "counter", "tokens generated", g(&e.completion_tokens)),
            ("lgi_argon2_verifications_total", "counter", "argon2 verifications run (first use of a key, failures, unknown ids)", g(&a.argon2_runs)),
            ("lgi_auth_address_throttled_total", "counter", "requests refused with 429 for too many failed authentications from one address", g(&a.address_throttled)),
            ("lgi_seccomp_denied_total", "counter", "syscalls denied by the seccomp filter (nonzero means a bug or an attack)", crate::sandbox::seccomp::denied_total()),
        ];
        for (name, kind, help, value) in rows {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    /// Requests, latencies, throughput, refusals, reloads and the sandbox gauges.
    fn export_requests(&self, out: &mut String) {
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
            if matches!(
                route,
                Route::ChatCompletions | Route::Completions | Route::Responses
            ) {
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
            (
                "lgi_tls_reloads_total",
                "TLS certificate reloads applied (SIGHUP)",
                &self.tls_reloads,
            ),
            (
                "lgi_tls_reload_failures_total",
                "TLS certificate reloads refused (the previous certificate stays)",
                &self.tls_reload_failures,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        header(
            out,
            "lgi_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "notAfter of the certificate new handshakes get (unix seconds): alert well before it",
        );
        let _ = writeln!(
            out,
            "lgi_tls_certificate_expiry_timestamp_seconds {}",
            self.tls_not_after.load(Ordering::Relaxed)
        );
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
        let out = m.render();
        assert!(
            !out.contains("key_id=\"alice\""),
            "counted before the stream ended"
        );
        drop(held_by_stream);
        let out = m.render();
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
    fn every_label_value_has_its_own_counter() {
        // The arrays are sized by hand; the enums must fit them exactly.
        assert_eq!(Route::ALL.len(), ROUTES);
        assert_eq!(RateLimit::ALL.len(), RATE_LIMITS);
        assert_eq!(AuthFailure::ALL.len(), AUTH_FAILURES);
        let m = Metrics::default();
        m.auth_failure(AuthFailure::Expired);
        m.rate_limited(RateLimit::Verifier);
        m.rate_limited(RateLimit::Verifier);
        let out = m.render();
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
