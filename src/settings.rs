//! Resolved settings: the one step that turns the validated config into every runtime
//! value (cores, worker threads, engine parameters, connection limits, request limits).
//!
//! Nothing after start-up re-derives a value from `Config`, and nothing is adjusted
//! silently: every value that is not simply the configured one (an automatic thread
//! count, a limit capped by another) is listed in `Settings::derived` with its reason,
//! which start-up logs and `check-config` prints.
//!
//! SECURITY: the core count comes from /proc and /sys, which Landlock hides, so it is
//! read (by the caller) before lock-down and passed in; this module does no I/O.

use crate::auth::AuthLimits;
use crate::config::{Config, GpuLayers, LimitsConfig};
use crate::engine::reasoning::{Budgets, ReasoningFormat, ReasoningSetting};
use crate::engine::tool_syntax::{ToolFormatSetting, ToolSyntax};
use crate::engine::EngineParams;
use std::time::Duration;

/// Most async worker threads chosen automatically (`server.async_workers = 0`).
/// SECURITY / performance: llama.cpp's threads must have the cores to themselves
/// (oversubscribing them collapses generation speed), and the HTTP side needs little
/// (TLS, JSON, SSE; argon2 has its own threads).
const MAX_ASYNC_WORKERS: usize = 4;
/// Blocking-pool threads beyond the constraint compiles: one re-reads the keys file on
/// SIGHUP, one spare so a reload never waits behind a full set of compiles.
const EXTRA_BLOCKING_THREADS: usize = 2;

/// The API listener's connection limits (`http::serve_api`, `http::serve_connection`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: u32,
    pub max_connections_per_address: u32,
    pub max_requests_per_connection: u32,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub http2: bool,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub max_connections_per_ipv6_48: u32,
}

/// A runtime value that is not simply the configured one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The config key the value belongs to.
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

/// What the HTTP API needs from the config (see `api::AppState`).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub model_id: String,
    /// `model.aliases`: more names requests may use.
    pub model_aliases: Vec<String>,
    pub body_read_timeout: Duration,
    /// Exact origins allowed to call the API from a browser (empty: no CORS).
    pub cors_allowed_origins: Vec<String>,
    /// POST /v1/embeddings is served (`model.embeddings`).
    pub embeddings: bool,
    /// `logging.log_prompts`.
    pub log_prompts: bool,
    /// `[metrics] enabled`: /metrics on the health port.
    pub metrics_enabled: bool,
    /// The model's thinking format (`model.reasoning_format`, resolved against the chat
    /// template by `Settings::apply_template`); None: no split, `reasoning_effort` refused.
    pub reasoning: Option<ReasoningFormat>,
    /// Thinking budgets by `reasoning_effort`.
    pub reasoning_budgets: Budgets,
    /// The model family's tool-call syntax (`model.tool_format`, resolved with the
    /// template); None: the generic JSON envelope.
    pub tool_syntax: Option<ToolSyntax>,
}

/// A setting left on "auto" that the chat template decided: what it `found` (else the
/// `fallback`), and why (`because`: the template shows it / does not).
fn decided_by_template(
    key: &'static str,
    found: Option<&'static str>,
    fallback: &'static str,
    because: (&str, &str),
) -> Derived {
    let why = if found.is_some() {
        because.0
    } else {
        because.1
    };
    Derived {
        key,
        value: found.unwrap_or(fallback).into(),
        why: format!("auto: the chat template {why}"),
    }
}

impl ApiSettings {
    /// A request's `model` names this model: its id or one of its aliases.
    pub fn serves(&self, model: &str) -> bool {
        model == self.model_id || self.model_aliases.iter().any(|a| a == model)
    }
}

/// Every runtime value, resolved once from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Physical cores available to the process (read before lock-down).
    pub cores: usize,
    /// tokio worker threads.
    pub async_workers: usize,
    /// tokio blocking-pool threads (constraint compiles, keys reload).
    pub blocking_threads: usize,
    pub engine: EngineParams,
    pub auth: AuthLimits,
    /// Request limits; `max_n` is the effective one (see `derived`).
    pub limits: LimitsConfig,
    pub connections: ConnLimits,
    pub api: ApiSettings,
    /// Values not taken verbatim from the config, with their reasons.
    pub derived: Vec<Derived>,
}

impl Settings {
    /// Resolve `cfg` (already validated) for a machine with `cores` physical cores.
    pub fn resolve(cfg: &Config, cores: usize) -> Settings {
        let cores = cores.max(1);
        let mut derived = Vec::new();
        let m = &cfg.model;

        let threads = if m.threads == 0 {
            derived.push(Derived {
                key: "model.threads",
                value: cores.to_string(),
                why: "0 means one per physical core available to the process".into(),
            });
            cores as u32
        } else {
            m.threads
        };
        let threads_batch = if m.threads_batch == 0 {
            threads
        } else {
            m.threads_batch
        };
        let async_workers = if cfg.server.async_workers > 0 {
            cfg.server.async_workers as usize
        } else {
            let n = cores
                .saturating_sub(threads as usize)
                .clamp(1, MAX_ASYNC_WORKERS);
            derived.push(Derived {
                key: "server.async_workers",
                value: n.to_string(),
                why: format!(
                    "0 means the cores model.threads leaves free, at least 1 and at most {MAX_ASYNC_WORKERS}"
                ),
            });
            n
        };

        // Every choice of `n` takes one of the key's generation slots: more could never
        // start, so the effective cap is the lower of the two.
        let mut limits = cfg.limits.clone();
        let per_key = cfg.auth.max_concurrent_generations_per_key;
        if limits.max_n > per_key {
            limits.max_n = per_key;
            derived.push(Derived {
                key: "limits.max_n",
                value: per_key.to_string(),
                why: format!(
                    "capped by auth.max_concurrent_generations_per_key ({per_key}): each choice takes one generation slot"
                ),
            });
        }

        let s = &cfg.server;
        let secs = Duration::from_secs;
        Settings {
            cores,
            async_workers,
            blocking_threads: cfg.constraints.max_concurrent_compiles as usize
                + EXTRA_BLOCKING_THREADS,
            engine: EngineParams {
                path: m.path.clone(),
                context: m.context,
                batch: m.batch,
                threads,
                threads_batch,
                gpu_layers: match m.gpu_layers {
                    GpuLayers::All => u32::MAX,
                    GpuLayers::Count(n) => n,
                },
                main_gpu: m.main_gpu,
                split_mode: m.split_mode,
                flash_attention: m.flash_attention,
                kv_cache_type: m.kv_cache_type,
                parallel: m.parallel,
                prefix_cache: m.prefix_cache,
                embeddings: m.embeddings,
                queue_depth: cfg.limits.queue_depth as usize,
                constraints: cfg.constraints.settings(),
                // Filled by start-up from the file it read (`startup::prepare`).
                chat_template: None,
                #[cfg(feature = "fake-engine")]
                fake_gate: Default::default(),
            },
            auth: (&cfg.auth).into(),
            limits,
            connections: ConnLimits {
                max_connections: s.max_connections,
                max_connections_per_address: s.max_connections_per_address,
                max_connections_per_ipv6_48: s.max_connections_per_ipv6_48,
                max_requests_per_connection: s.max_requests_per_connection,
                max_header_bytes: s.max_header_bytes as usize,
                max_headers: s.max_headers as usize,
                http2: s.http2,
                tls_handshake_timeout: secs(s.tls_handshake_timeout_secs),
                header_read_timeout: secs(s.header_read_timeout_secs),
                idle_timeout: secs(s.idle_timeout_secs),
                max_lifetime: secs(s.max_connection_lifetime_secs),
            },
            api: ApiSettings {
                model_id: cfg.model_id(),
                model_aliases: m.aliases.clone(),
                body_read_timeout: secs(s.body_read_timeout_secs),
                cors_allowed_origins: s.cors_allowed_origins.clone(),
                embeddings: m.embeddings,
                log_prompts: cfg.logging.log_prompts,
                metrics_enabled: cfg.metrics.enabled,
                // "auto" needs the template: `apply_template` decides it.
                reasoning: m.reasoning_format.resolve(None),
                reasoning_budgets: Budgets {
                    low: m.reasoning_budget_low,
                    medium: m.reasoning_budget_medium,
                },
                tool_syntax: m.tool_format.resolve(None),
            },
            derived,
        }
    }

    /// The chat template start-up settled on: `configured` (the text of
    /// `model.chat_template_file` or of the `model.chat_template` family, for the engine)
    /// else the model file's `gguf` template. It decides `model.reasoning_format = "auto"`.
    pub fn apply_template(&mut self, cfg: &Config, configured: Option<String>, gguf: Option<&str>) {
        let template = configured.as_deref().or(gguf);
        let m = &cfg.model;
        self.api.reasoning = m.reasoning_format.resolve(template);
        self.api.tool_syntax = m.tool_format.resolve(template);
        if m.reasoning_format == ReasoningSetting::Auto {
            self.derived.push(decided_by_template(
                "model.reasoning_format",
                self.api.reasoning.map(ReasoningFormat::name),
                "none",
                (
                    "mentions this format's thinking opener",
                    "mentions no thinking opener",
                ),
            ));
        }
        if m.tool_format == ToolFormatSetting::Auto {
            self.derived.push(decided_by_template(
                "model.tool_format",
                self.api.tool_syntax.map(ToolSyntax::name),
                "generic",
                (
                    "writes tool calls in this syntax",
                    "shows no tool-call syntax",
                ),
            ));
        }
        self.engine.chat_template = configured;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(extra: &str) -> Config {
        let text = format!("[auth]\nkeys_file = \"keys\"\n[model]\npath = \"m.gguf\"\n{extra}");
        Config::parse(&text, Path::new("/srv")).unwrap()
    }

    fn derived<'a>(s: &'a Settings, key: &str) -> Option<&'a Derived> {
        s.derived.iter().find(|d| d.key == key)
    }

    #[test]
    fn automatic_threads_take_the_cores_and_leave_one_worker() {
        let s = Settings::resolve(&cfg(""), 8);
        assert_eq!((s.engine.threads, s.engine.threads_batch), (8, 8));
        // Every core goes to the engine; the HTTP side still gets one worker.
        assert_eq!(s.async_workers, 1);
        assert_eq!(derived(&s, "model.threads").unwrap().value, "8");
        assert_eq!(derived(&s, "server.async_workers").unwrap().value, "1");
    }

    #[test]
    fn configured_threads_leave_the_rest_to_http_up_to_four() {
        let s = Settings::resolve(&cfg("threads = 2\nthreads_batch = 3\n"), 16);
        assert_eq!((s.engine.threads, s.engine.threads_batch), (2, 3));
        assert_eq!(s.async_workers, 4);
        assert!(derived(&s, "model.threads").is_none());
        let s = Settings::resolve(&cfg("threads = 2\n"), 4);
        assert_eq!(s.async_workers, 2);
    }

    #[test]
    fn configured_workers_are_used_as_given() {
        let text =
            "[server]\nasync_workers = 7\n[auth]\nkeys_file = \"k\"\n[model]\npath = \"m.gguf\"\n";
        let s = Settings::resolve(&Config::parse(text, Path::new("/")).unwrap(), 2);
        assert_eq!(s.async_workers, 7);
        assert!(derived(&s, "server.async_workers").is_none());
    }

    #[test]
    fn max_n_is_capped_by_generations_per_key_and_says_so() {
        let text = "[auth]\nkeys_file = \"k\"\nmax_concurrent_generations_per_key = 2\n[model]\npath = \"m.gguf\"\n[limits]\nmax_n = 5\n";
        let s = Settings::resolve(&Config::parse(text, Path::new("/")).unwrap(), 2);
        assert_eq!(s.limits.max_n, 2);
        let d = derived(&s, "limits.max_n").unwrap();
        assert_eq!(d.value, "2");
        assert!(
            d.why.contains("max_concurrent_generations_per_key"),
            "{d:?}"
        );
        // Not capped: not listed.
        let s = Settings::resolve(&cfg("[limits]\nmax_n = 3\n"), 2);
        assert_eq!(s.limits.max_n, 3);
        assert!(derived(&s, "limits.max_n").is_none());
    }

    #[test]
    fn gpu_layers_all_is_every_layer() {
        assert_eq!(Settings::resolve(&cfg(""), 1).engine.gpu_layers, u32::MAX);
        let s = Settings::resolve(&cfg("gpu_layers = 12\n"), 1);
        assert_eq!(s.engine.gpu_layers, 12);
    }

    #[test]
    fn connection_limits_come_from_the_server_section() {
        let text = "[server]\nmax_connections = 50\nidle_timeout_secs = 7\n[auth]\nkeys_file = \"k\"\n[model]\npath = \"m.gguf\"\n";
        let s = Settings::resolve(&Config::parse(text, Path::new("/")).unwrap(), 1);
        assert_eq!(s.connections.max_connections, 50);
        assert_eq!(s.connections.idle_timeout, Duration::from_secs(7));
    }
}
