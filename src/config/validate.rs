//! Validation: every numeric key against its allowed range (one table, `bounded_keys`),
//! then the rules that relate keys to each other. Every issue names its key; all of them
//! are reported at once.

use super::{Config, ConfigIssue, FlashAttention, KvCacheType};
use std::net::SocketAddr;

/// Most `model.aliases` (each is one more name every request is checked against).
const MAX_ALIASES: usize = 16;

impl Config {
    /// Every range and cross-field rule, each issue naming its key.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(ConfigIssue {
                key: key.into(),
                message,
            })
        };
        let s = &self.server;
        let api: Option<SocketAddr> = s.listen.parse().ok();
        let health: Option<SocketAddr> = s.health_listen.parse().ok();
        if api.is_none() {
            bad(
                "server.listen",
                format!(
                    "{:?} is not an IP:port address, e.g. \"0.0.0.0:8443\"",
                    s.listen
                ),
            );
        }
        if health.is_none() {
            bad(
                "server.health_listen",
                format!(
                    "{:?} is not an IP:port address, e.g. \"0.0.0.0:8081\"",
                    s.health_listen
                ),
            );
        }
        if let (Some(a), Some(h)) = (api, health) {
            if a.port() != 0
                && a.port() == h.port()
                && (a.ip() == h.ip() || a.ip().is_unspecified() || h.ip().is_unspecified())
            {
                bad(
                    "server.health_listen",
                    "must use a different port from server.listen".into(),
                );
            }
        }
        for (key, value, min, max) in bounded_keys(self) {
            range(&mut bad, key, value, min, max);
        }

        let t = &self.tls;
        match (&t.cert, &t.key) {
            (Some(_), None) => bad(
                "tls.key",
                "tls.cert is set, so tls.key must be set too".into(),
            ),
            (None, Some(_)) => bad(
                "tls.cert",
                "tls.key is set, so tls.cert must be set too".into(),
            ),
            (Some(_), Some(_)) if t.self_signed_dir.is_some() => bad(
                "tls.self_signed_dir",
                "not used when tls.cert and tls.key are set; remove it".into(),
            ),
            _ => {}
        }
        if t.cert.is_none() && t.self_signed_names.is_empty() {
            bad(
                "tls.self_signed_names",
                "must name at least one host or IP for the self-signed certificate".into(),
            );
        }
        for name in &t.self_signed_names {
            if name.is_empty()
                || name.len() > 253
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                bad(
                    "tls.self_signed_names",
                    format!("{name:?} is not a DNS name or IP address"),
                );
            }
        }

        let m = &self.model;
        if m.path.as_os_str().is_empty() {
            bad("model.path", "must name the GGUF model file".into());
        } else if m.path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            bad(
                "model.path",
                format!("{} does not end in .gguf", m.path.display()),
            );
        }
        if let Some(id) = &m.id {
            if id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
            {
                bad(
                    "model.id",
                    "must be 1-128 characters of A-Z a-z 0-9 - _ . : /".into(),
                );
            }
        }
        if m.batch < m.parallel {
            bad(
                "model.batch",
                format!(
                    "must be at least model.parallel ({}), so every generating sequence fits one step; raise model.batch or lower model.parallel",
                    m.parallel
                ),
            );
        }

        let l = &self.limits;
        if l.max_tokens > m.context {
            bad(
                "limits.max_tokens",
                format!(
                    "must not exceed model.context ({}); lower limits.max_tokens or raise model.context",
                    m.context
                ),
            );
        }
        if l.max_prompt_bytes as u64 > l.max_body_bytes {
            bad(
                "limits.max_prompt_bytes",
                format!(
                    "larger than limits.max_body_bytes ({}), which caps it anyway",
                    l.max_body_bytes
                ),
            );
        }

        let sb = &self.sandbox;
        for (key, value) in [("sandbox.user", &sb.user), ("sandbox.group", &sb.group)] {
            if let Some(v) = value {
                if !is_account_name(v) {
                    bad(
                        key,
                        format!(
                            "{:?} is not a user/group name or numeric id (1-32 of A-Z a-z 0-9 _ . -, not starting with -)",
                            crate::sanitize::shown(v, 64)
                        ),
                    );
                }
            }
        }
        if sb.group.is_some() && sb.user.is_none() {
            bad(
                "sandbox.group",
                "only used together with sandbox.user; set sandbox.user too".into(),
            );
        }
        if sb.extra_read_paths.len() > 64 {
            bad(
                "sandbox.extra_read_paths",
                "more than 64 paths; a read-only allow list should be short".into(),
            );
        }

        if self.model.flash_attention == FlashAttention::Off
            && matches!(
                self.model.kv_cache_type,
                KvCacheType::Q8_0 | KvCacheType::Q4_0
            )
        {
            bad(
                "model.kv_cache_type",
                "a quantized KV cache needs flash attention: set model.flash_attention = \"auto\" or \"on\", or kv_cache_type = \"f16\"".into(),
            );
        }
        let id = self.model_id();
        if self.model.aliases.len() > MAX_ALIASES {
            bad(
                "model.aliases",
                format!("at most {MAX_ALIASES} names; each one is accepted as this model"),
            );
        }
        for (i, a) in self.model.aliases.iter().enumerate() {
            let seen = self.model.aliases.iter().take(i).any(|b| b == a);
            if a.is_empty()
                || a.len() > 128
                || a.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                bad(
                    "model.aliases",
                    format!("{a:?} must be 1-128 characters without spaces or control characters"),
                );
            } else if *a == id || seen {
                bad(
                    "model.aliases",
                    format!("{a:?} is listed twice (the model id counts as one)"),
                );
            }
        }
        if self.model.chat_template.is_some() && self.model.chat_template_file.is_some() {
            bad(
                "model.chat_template",
                "set model.chat_template (a built-in family) or model.chat_template_file, not both"
                    .into(),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            bad(
                "logging.level",
                format!(
                    "{:?} is not a filter such as \"info\" or \"warn,llama_gguf_inference=debug\"",
                    self.logging.level
                ),
            );
        }
        out
    }
}

/// Every numeric key with its allowed range: (key, value, min, max). One table, so a new
/// key cannot be forgotten by one copy of a check, and every range reads the same.
#[rustfmt::skip]
fn bounded_keys(c: &Config) -> Vec<(&'static str, u64, u64, u64)> {
    let (s, a, m, l, c) = (&c.server, &c.auth, &c.model, &c.limits, &c.constraints);
    vec![
        // [server]
        ("server.max_connections", u64::from(s.max_connections), 1, 1_000_000),
        ("server.max_connections_per_address", u64::from(s.max_connections_per_address), 1, u64::from(s.max_connections.max(1))),
        ("server.max_connections_per_ipv6_48", u64::from(s.max_connections_per_ipv6_48), 1, 1_000_000),
        ("server.idle_timeout_secs", s.idle_timeout_secs, 1, 3600),
        ("server.max_connection_lifetime_secs", s.max_connection_lifetime_secs, s.idle_timeout_secs, 7 * 24 * 3600),
        ("server.max_requests_per_connection", u64::from(s.max_requests_per_connection), 1, 10_000_000),
        // hyper needs at least 8 KiB of read buffer.
        ("server.max_header_bytes", u64::from(s.max_header_bytes), 8 * 1024, 1024 * 1024),
        ("server.max_headers", u64::from(s.max_headers), 8, 1000),
        ("server.tls_handshake_timeout_secs", s.tls_handshake_timeout_secs, 1, 300),
        ("server.header_read_timeout_secs", s.header_read_timeout_secs, 1, 300),
        ("server.body_read_timeout_secs", s.body_read_timeout_secs, 1, 3600),
        ("server.async_workers", u64::from(s.async_workers), 0, 64),
        // [auth]
        ("auth.default_requests_per_minute", u64::from(a.default_requests_per_minute), 0, 1_000_000),
        ("auth.default_tokens_per_minute", u64::from(a.default_tokens_per_minute), 0, 1_000_000_000),
        ("auth.max_concurrent_generations_per_key", u64::from(a.max_concurrent_generations_per_key), 1, 10_000),
        ("auth.failed_auth_per_minute_per_address", u64::from(a.failed_auth_per_minute_per_address), 1, 100_000),
        ("auth.max_concurrent_verifications", u64::from(a.max_concurrent_verifications), 1, 64),
        ("auth.max_queued_verifications", u64::from(a.max_queued_verifications), 0, 1024),
        ("auth.failed_auth_tracked_addresses", u64::from(a.failed_auth_tracked_addresses), 1, 10_000_000),
        // [model]
        ("model.context", u64::from(m.context), 64, 1 << 20),
        ("model.parallel", u64::from(m.parallel), 1, 256),
        ("model.threads", u64::from(m.threads), 0, 1024),
        ("model.threads_batch", u64::from(m.threads_batch), 0, 1024),
        ("model.batch", u64::from(m.batch), 1, 1 << 16),
        ("model.reasoning_budget_low", u64::from(m.reasoning_budget_low), 1, u64::from(m.reasoning_budget_medium)),
        ("model.reasoning_budget_medium", u64::from(m.reasoning_budget_medium), 1, 1 << 20),
        // [limits]
        ("limits.max_body_bytes", l.max_body_bytes, 1024, 64 * 1024 * 1024),
        ("limits.max_tokens", u64::from(l.max_tokens), 1, 1 << 20),
        ("limits.max_messages", u64::from(l.max_messages), 1, 100_000),
        ("limits.max_prompt_bytes", u64::from(l.max_prompt_bytes), 1, 64 * 1024 * 1024),
        ("limits.max_stop", u64::from(l.max_stop), 0, 16),
        ("limits.max_stop_bytes", u64::from(l.max_stop_bytes), 1, 4096),
        ("limits.max_generation_secs", l.max_generation_secs, 1, 86_400),
        ("limits.queue_depth", u64::from(l.queue_depth), 1, 100_000),
        ("limits.max_n", u64::from(l.max_n), 1, 64),
        ("limits.max_embedding_inputs", u64::from(l.max_embedding_inputs), 1, 2048),
        // [constraints]
        ("constraints.compile_timeout_ms", c.compile_timeout_ms, 10, 60_000),
        ("constraints.max_concurrent_compiles", u64::from(c.max_concurrent_compiles), 1, 64),
        ("constraints.mask_budget_ms", c.mask_budget_ms, 1, 10_000),
        ("constraints.max_items_in_row", u64::from(c.max_items_in_row), 10, 100_000),
        ("constraints.initial_lexer_fuel", c.initial_lexer_fuel, 1_000, 100_000_000),
        ("constraints.step_lexer_fuel", c.step_lexer_fuel, 1_000, 10_000_000),
        ("constraints.step_max_items", u64::from(c.step_max_items), 100, 1_000_000),
        ("constraints.max_lexer_states", u64::from(c.max_lexer_states), 100, 10_000_000),
        ("constraints.max_grammar_size", u64::from(c.max_grammar_size), 100, 10_000_000),
    ]
}

/// A POSIX-portable user or group name, or a numeric id.
fn is_account_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn range(bad: &mut impl FnMut(&str, String), key: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        bad(
            key,
            format!("{value} is out of range; allowed {min}..={max}"),
        );
    }
}
