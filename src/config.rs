//! The one TOML file: typed, strict (`deny_unknown_fields`), defaulted, validated once.
//!
//! SECURITY: a typo in a security-relevant key must never silently fall back to a default,
//! so unknown keys are errors. Validation runs as a single pass that reports *every*
//! problem, each naming its key (`section.key`) and what is allowed, so an operator fixes
//! the file in one round trip.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest config file we will read. A real one is a few KiB.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was loaded from (None when parsed from text); the sandbox counts it
    /// among the appliance's own files.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub constraints: ConstraintsConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTPS listener for the OpenAI API.
    pub listen: String,
    /// Plain-HTTP listener for /health and /ready; never touches the engine.
    pub health_listen: String,
    /// Cap on simultaneously open API connections (TLS or not yet).
    pub max_connections: u32,
    /// Cap on open API connections from one client address (IPv6: one /64).
    pub max_connections_per_address: u32,
    /// Cap on open API connections from one IPv6 /48 (a site's usual allocation), so a
    /// network owning many /64s cannot take the whole `max_connections`.
    pub max_connections_per_ipv6_48: u32,
    /// Seconds a connection may sit with no request in progress (HTTP/1 between
    /// requests, HTTP/2 with no open stream, PINGs or not) before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a connection may stay open at all; then it is closed gracefully (HTTP/2
    /// GOAWAY, HTTP/1 after the current response), requests in flight finish.
    pub max_connection_lifetime_secs: u64,
    /// Requests served on one connection before it is closed (HTTP/1: `Connection:
    /// close` on the last response; HTTP/2: GOAWAY).
    pub max_requests_per_connection: u32,
    /// Largest request head (request line + headers) in bytes.
    pub max_header_bytes: u32,
    /// Most header fields in one HTTP/1 request.
    pub max_headers: u32,
    /// Offer HTTP/2 through ALPN. Off: HTTP/1.1 only.
    pub http2: bool,
    /// Exact origins (scheme://host[:port]) allowed to call the API from browsers.
    pub cors_allowed_origins: Vec<String>,
    /// Async (HTTP/TLS) worker threads; 0 = the cores the engine leaves free, 1..=4.
    pub async_workers: u32,
    /// Seconds a client has to finish the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a client has to send a complete request head.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send the whole request body.
    pub body_read_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            health_listen: "127.0.0.1:8081".into(),
            max_connections: 1024,
            max_connections_per_address: 32,
            max_connections_per_ipv6_48: 128,
            idle_timeout_secs: 60,
            max_connection_lifetime_secs: 3600,
            max_requests_per_connection: 1000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            http2: true,
            cors_allowed_origins: Vec::new(),
            async_workers: 0,
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. With `key`, disables the self-signed certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Subject alternative names of the self-signed certificate.
    pub self_signed_names: Vec<String>,
    /// Directory where a generated certificate is stored and re-used across restarts.
    pub self_signed_dir: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            self_signed_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            self_signed_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `key_id:<argon2id PHC>[:requests_per_minute][:expiry]` per line.
    pub keys_file: PathBuf,
    /// Requests per minute for keys whose line names no limit; 0 means unlimited.
    #[serde(default = "default_rpm")]
    pub default_requests_per_minute: u32,
    /// Tokens (prompt + max_tokens) per minute for every key; 0 means unlimited.
    #[serde(default)]
    pub default_tokens_per_minute: u32,
    /// Generations one key may have queued or running at once, so one key cannot
    /// occupy the whole engine queue.
    #[serde(default = "default_generations_per_key")]
    pub max_concurrent_generations_per_key: u32,
    /// Argon2 verifications allowed to run at once (each costs ~19 MiB and ~20 ms).
    #[serde(default = "default_verifications")]
    pub max_concurrent_verifications: u32,
    /// Failed authentications one client address (IPv6: /64) may make per minute before
    /// its unverified attempts get 429 without any hashing.
    #[serde(default = "default_failed_auth")]
    pub failed_auth_per_minute_per_address: u32,
    /// Verifications that may wait for a free argon2 thread; beyond it a request that
    /// needs one gets 429 at once, with no work done.
    #[serde(default = "default_queued_verifications")]
    pub max_queued_verifications: u32,
    /// Client addresses whose failed-authentication budget is tracked at once. When full,
    /// refilled entries and then the one closest to full make room: an address that never
    /// failed is never refused for lack of room.
    #[serde(default = "default_tracked_addresses")]
    pub failed_auth_tracked_addresses: u32,
}

fn default_queued_verifications() -> u32 {
    16
}

fn default_tracked_addresses() -> u32 {
    65_536
}

fn default_generations_per_key() -> u32 {
    4
}

fn default_failed_auth() -> u32 {
    10
}

fn default_rpm() -> u32 {
    60
}
fn default_verifications() -> u32 {
    2
}

/// How many model layers go to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuLayers {
    All,
    Count(u32),
}

impl<'de> Deserialize<'de> for GpuLayers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(GpuLayers::Count(n)),
            Raw::Text(s) if s == "all" => Ok(GpuLayers::All),
            Raw::Text(s) => Err(serde::de::Error::custom(format!(
                "expected \"all\" or a number of layers, got {s:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The GGUF file. The only setting without a default.
    pub path: PathBuf,
    /// What /v1/models lists and what `model` in a request must name.
    #[serde(default)]
    pub id: Option<String>,
    /// Context window in tokens (prompt + completion) for each sequence.
    #[serde(default = "default_context")]
    pub context: u32,
    /// Sequences generated together by continuous batching; each has its own `context`
    /// cells of KV cache (memory = parallel × context × bytes per token).
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Reuse of cached prompt prefixes: "per-key" (only for the key that filled the
    /// cache), "shared" (across keys; one tenant only) or "off".
    #[serde(default)]
    pub prefix_cache: crate::engine::prefix::PrefixCache,
    /// Serve POST /v1/embeddings (a second, single-sequence context of `context` tokens
    /// using the model's pooling, or mean pooling when the model declares none).
    #[serde(default)]
    pub embeddings: bool,
    /// Generation threads; 0 means one per physical core available to the process.
    #[serde(default)]
    pub threads: u32,
    /// Prompt-processing threads; 0 means the same as `threads`.
    #[serde(default)]
    pub threads_batch: u32,
    /// Prompt tokens decoded per llama.cpp batch.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Layers offloaded to the GPU on a CUDA build: "all" or a number. Ignored on CPU builds.
    #[serde(default = "default_gpu_layers")]
    pub gpu_layers: GpuLayers,
    /// The GPU that holds the model (and, when it is split, the small tensors): index as
    /// the start-up log lists the devices.
    #[serde(default)]
    pub main_gpu: u32,
    /// Flash attention: "auto" (llama.cpp decides per device), "on" or "off".
    #[serde(default)]
    pub flash_attention: FlashAttention,
    /// Type of the K and V cache cells: "f16" (default), "bf16", "q8_0" or "q4_0".
    /// Quantized caches halve (q8_0) or quarter (q4_0) KV memory; they need flash
    /// attention for V, so "off" with a quantized type is refused.
    #[serde(default)]
    pub kv_cache_type: KvCacheType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl KvCacheType {
    /// Bytes per cached value (q8_0: 34 bytes per 32 values, q4_0: 18 per 32).
    pub fn bytes_per_value(self) -> f64 {
        match self {
            KvCacheType::F16 | KvCacheType::Bf16 => 2.0,
            KvCacheType::Q8_0 => 34.0 / 32.0,
            KvCacheType::Q4_0 => 18.0 / 32.0,
        }
    }
}

fn default_context() -> u32 {
    4096
}
fn default_parallel() -> u32 {
    4
}
fn default_batch() -> u32 {
    512
}
fn default_gpu_layers() -> GpuLayers {
    GpuLayers::All
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// Largest `max_tokens` / `max_completion_tokens` a request may ask for; also the
    /// completion budget when a request names none.
    pub max_tokens: u32,
    /// Most messages in one chat request.
    pub max_messages: u32,
    /// Most bytes of prompt text (all messages together) in one request.
    pub max_prompt_bytes: u32,
    /// Most stop sequences per request (OpenAI allows 4).
    pub max_stop: u32,
    /// Longest stop sequence in bytes.
    pub max_stop_bytes: u32,
    /// Requests waiting for the engine; beyond this a request gets 503 + Retry-After.
    pub queue_depth: u32,
    /// Seconds the engine may spend generating one completion (then finish_reason
    /// "length"), so no single request holds the engine indefinitely.
    pub max_generation_secs: u64,
    /// Largest `n` (choices per request); each choice is a sequence of its own and
    /// counts against the key's concurrent generations.
    pub max_n: u32,
    /// Most inputs in one embeddings request (each is computed in turn on the engine).
    pub max_embedding_inputs: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_tokens: 1024,
            max_messages: 256,
            max_prompt_bytes: 256 * 1024,
            max_stop: 4,
            max_stop_bytes: 256,
            queue_depth: 32,
            max_generation_secs: 300,
            max_n: 4,
            max_embedding_inputs: 32,
        }
    }
}

/// Constrained decoding (response_format json_schema/json_object, tool calls) on
/// llguidance: how much one schema may cost to compile and each token mask to compute.
/// Every limit bounds what one client can make the shared engine do (issue 15).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConstraintsConfig {
    /// Longest one schema may take to compile (400 beyond).
    pub compile_timeout_ms: u64,
    /// Schemas compiling at the same time, server-wide (each uses one blocking thread).
    pub max_concurrent_compiles: u32,
    /// Longest one token mask may take; the request ends beyond it (the others go on).
    pub mask_budget_ms: u64,
    /// Earley items in one row: the grammar's branching at one point of the output.
    pub max_items_in_row: u32,
    /// Lexer work allowed while compiling (about 50 000 per ms).
    pub initial_lexer_fuel: u64,
    /// Lexer work allowed for one token mask (about 14 000 per ms).
    pub step_lexer_fuel: u64,
    /// Earley items created for one token mask (about 20 000 per ms).
    pub step_max_items: u32,
    /// Lexer states one constraint may build (1-2 kB of memory each).
    pub max_lexer_states: u32,
    /// Grammar symbols one schema may expand into.
    pub max_grammar_size: u32,
}

impl Default for ConstraintsConfig {
    fn default() -> Self {
        // llguidance's own defaults for the parser limits (tuned on real-world schemas
        // such as FHIR's), except the grammar size, which is lower: a request's schema
        // is capped at 32 KiB of JSON, far below what needs 500 000 symbols.
        Self {
            compile_timeout_ms: 2_000,
            max_concurrent_compiles: 2,
            mask_budget_ms: 200,
            max_items_in_row: 2_000,
            initial_lexer_fuel: 1_000_000,
            step_lexer_fuel: 200_000,
            step_max_items: 50_000,
            max_lexer_states: 250_000,
            max_grammar_size: 200_000,
        }
    }
}

impl ConstraintsConfig {
    /// The runtime settings (one place turns these keys into them).
    pub fn settings(&self) -> crate::engine::constraint::ConstraintSettings {
        crate::engine::constraint::ConstraintSettings {
            compile_timeout: std::time::Duration::from_millis(self.compile_timeout_ms),
            max_concurrent_compiles: self.max_concurrent_compiles as usize,
            mask_budget: std::time::Duration::from_millis(self.mask_budget_ms),
            parser: crate::engine::constraint::parser_limits(
                self.max_items_in_row as usize,
                self.initial_lexer_fuel,
                self.step_lexer_fuel,
                self.step_max_items as usize,
                self.max_lexer_states as usize,
                self.max_grammar_size as usize,
            ),
        }
    }
}

/// Where log events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogTarget {
    /// systemd-journald's native protocol (structured fields), on its socket.
    Journald,
    /// One JSON object per line on stderr.
    StderrJson,
    /// Human-readable lines on stderr.
    StderrText,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// "journald", "stderr-json" or "stderr-text".
    pub target: LogTarget,
    /// A tracing filter directive, e.g. "info" or "info,llama_cpp=debug".
    pub level: String,
    /// Log each request's prompt. Off by default: prompts are the users' data.
    pub log_prompts: bool,
    /// A file of at least 32 random bytes keying the `user_tag` HMAC, so tags stay the
    /// same across restarts. None: a random key per process.
    pub user_tag_key_file: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            target: LogTarget::StderrText,
            level: "info,llama-cpp-2=warn".into(),
            log_prompts: false,
            user_tag_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus text at /metrics on the health port (never on the API port).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// What happens when the kernel cannot enforce the whole Landlock ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    /// Refuse to start unless every requested restriction is enforced.
    Required,
    /// Start anyway, with a loud warning that names what is not enforced.
    BestEffort,
}

/// What a syscall on the seccomp deny list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The call fails with EPERM; it is counted and logged.
    Eperm,
    /// The whole process is killed (the kernel logs it).
    Kill,
    /// No seccomp filter (for a host whose runtime already applies one).
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// User (name or numeric id) to switch to when started as root.
    pub user: Option<String>,
    /// Group (name or numeric id); default: the user's primary group.
    pub group: Option<String>,
    /// Keep running as uid 0 (without any capability) when started as root.
    pub allow_root: bool,
    pub landlock: LandlockMode,
    pub seccomp: SeccompMode,
    /// More read-only paths for Landlock (e.g. CUDA libraries in a non-standard place).
    pub extra_read_paths: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            user: None,
            group: None,
            allow_root: false,
            landlock: LandlockMode::Required,
            seccomp: SeccompMode::Eperm,
            extra_read_paths: Vec::new(),
        }
    }
}

/// One problem with the config: which key, and what is wrong / allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be used. Lists every issue found.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid config file {}:", self.file.display())?;
        for issue in &self.issues {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Addresses after validation.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddrs {
    pub api: SocketAddr,
    pub health: SocketAddr,
}

impl Config {
    /// Read, parse and validate a config file. Relative paths inside it are resolved
    /// against the file's directory, so a config moves together with its keys file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            issues: vec![ConfigIssue {
                key: key.into(),
                message,
            }],
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| fail("(file)", format!("cannot read the config file: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(fail(
                "(file)",
                format!("larger than {MAX_CONFIG_BYTES} bytes; is this the right file?"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(
                "(file)",
                format!("cannot read the config file as UTF-8: {e}"),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, base).map_err(|issues| ConfigError {
            file: path.to_path_buf(),
            issues,
        })?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parse and validate TOML text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| vec![toml_issue(&e, text)])?;
        cfg.resolve_paths(base);
        let issues = cfg.validate();
        if issues.is_empty() {
            Ok(cfg)
        } else {
            Err(issues)
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.auth.keys_file);
        fix(&mut self.model.path);
        if let Some(p) = self.tls.cert.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.key.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.self_signed_dir.as_mut() {
            fix(p);
        }
        for p in self.sandbox.extra_read_paths.iter_mut() {
            fix(p);
        }
        if let Some(p) = self.logging.user_tag_key_file.as_mut() {
            fix(p);
        }
    }

    /// The model id: configured, or the file name without `.gguf`.
    pub fn model_id(&self) -> String {
        if let Some(id) = &self.model.id {
            return id.clone();
        }
        self.model
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }

    pub fn listen_addrs(&self) -> ListenAddrs {
        // validate() guarantees both parse.
        ListenAddrs {
            api: self
                .server
                .listen
                .parse()
                .unwrap_or(([127, 0, 0, 1], 8443).into()),
            health: self
                .server
                .health_listen
                .parse()
                .unwrap_or(([127, 0, 0, 1], 8081).into()),
        }
    }

    /// Every cross-field and range rule, each issue naming its key.
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
        range(
            &mut bad,
            "server.max_connections",
            s.max_connections as u64,
            1,
            1_000_000,
        );
        range(
            &mut bad,
            "server.max_connections_per_address",
            s.max_connections_per_address as u64,
            1,
            s.max_connections.max(1) as u64,
        );
        range(
            &mut bad,
            "server.max_connections_per_ipv6_48",
            s.max_connections_per_ipv6_48 as u64,
            1,
            1_000_000,
        );
        range(
            &mut bad,
            "server.idle_timeout_secs",
            s.idle_timeout_secs,
            1,
            3600,
        );
        range(
            &mut bad,
            "server.max_connection_lifetime_secs",
            s.max_connection_lifetime_secs,
            s.idle_timeout_secs,
            7 * 24 * 3600,
        );
        range(
            &mut bad,
            "server.max_requests_per_connection",
            s.max_requests_per_connection as u64,
            1,
            10_000_000,
        );
        // hyper needs at least 8 KiB of read buffer.
        range(
            &mut bad,
            "server.max_header_bytes",
            s.max_header_bytes as u64,
            8 * 1024,
            1024 * 1024,
        );
        range(
            &mut bad,
            "server.max_headers",
            s.max_headers as u64,
            8,
            1000,
        );
        range(
            &mut bad,
            "server.tls_handshake_timeout_secs",
            s.tls_handshake_timeout_secs,
            1,
            300,
        );
        range(
            &mut bad,
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
            1,
            300,
        );
        range(
            &mut bad,
            "server.body_read_timeout_secs",
            s.body_read_timeout_secs,
            1,
            3600,
        );

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

        let a = &self.auth;
        range(
            &mut bad,
            "auth.default_requests_per_minute",
            a.default_requests_per_minute as u64,
            0,
            1_000_000,
        );
        range(
            &mut bad,
            "auth.default_tokens_per_minute",
            a.default_tokens_per_minute as u64,
            0,
            1_000_000_000,
        );
        range(
            &mut bad,
            "auth.max_concurrent_generations_per_key",
            a.max_concurrent_generations_per_key as u64,
            1,
            10_000,
        );
        range(
            &mut bad,
            "auth.failed_auth_per_minute_per_address",
            a.failed_auth_per_minute_per_address as u64,
            1,
            100_000,
        );
        range(
            &mut bad,
            "auth.max_concurrent_verifications",
            a.max_concurrent_verifications as u64,
            1,
            64,
        );
        range(
            &mut bad,
            "auth.max_queued_verifications",
            a.max_queued_verifications as u64,
            0,
            1024,
        );
        range(
            &mut bad,
            "auth.failed_auth_tracked_addresses",
            a.failed_auth_tracked_addresses as u64,
            1,
            10_000_000,
        );

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
        range(
            &mut bad,
            "server.async_workers",
            self.server.async_workers as u64,
            0,
            64,
        );
        range(&mut bad, "model.context", m.context as u64, 64, 1 << 20);
        range(&mut bad, "model.parallel", m.parallel as u64, 1, 256);
        range(&mut bad, "model.threads", m.threads as u64, 0, 1024);
        range(
            &mut bad,
            "model.threads_batch",
            m.threads_batch as u64,
            0,
            1024,
        );
        range(&mut bad, "model.batch", m.batch as u64, 1, 1 << 16);
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
        range(
            &mut bad,
            "limits.max_body_bytes",
            l.max_body_bytes,
            1024,
            64 * 1024 * 1024,
        );
        range(
            &mut bad,
            "limits.max_tokens",
            l.max_tokens as u64,
            1,
            1 << 20,
        );
        if l.max_tokens > m.context {
            bad(
                "limits.max_tokens",
                format!(
                    "must not exceed model.context ({}); lower limits.max_tokens or raise model.context",
                    m.context
                ),
            );
        }
        range(
            &mut bad,
            "limits.max_messages",
            l.max_messages as u64,
            1,
            100_000,
        );
        range(
            &mut bad,
            "limits.max_prompt_bytes",
            l.max_prompt_bytes as u64,
            1,
            64 * 1024 * 1024,
        );
        if l.max_prompt_bytes as u64 > l.max_body_bytes {
            bad(
                "limits.max_prompt_bytes",
                format!(
                    "larger than limits.max_body_bytes ({}), which caps it anyway",
                    l.max_body_bytes
                ),
            );
        }
        range(&mut bad, "limits.max_stop", l.max_stop as u64, 0, 16);
        range(
            &mut bad,
            "limits.max_stop_bytes",
            l.max_stop_bytes as u64,
            1,
            4096,
        );
        range(
            &mut bad,
            "limits.max_generation_secs",
            l.max_generation_secs,
            1,
            86_400,
        );
        range(
            &mut bad,
            "limits.queue_depth",
            l.queue_depth as u64,
            1,
            100_000,
        );
        range(&mut bad, "limits.max_n", l.max_n as u64, 1, 64);
        range(
            &mut bad,
            "limits.max_embedding_inputs",
            l.max_embedding_inputs as u64,
            1,
            2048,
        );

        let c = &self.constraints;
        for (key, value, min, max) in [
            (
                "constraints.compile_timeout_ms",
                c.compile_timeout_ms,
                10,
                60_000,
            ),
            (
                "constraints.max_concurrent_compiles",
                c.max_concurrent_compiles as u64,
                1,
                64,
            ),
            ("constraints.mask_budget_ms", c.mask_budget_ms, 1, 10_000),
            (
                "constraints.max_items_in_row",
                c.max_items_in_row as u64,
                10,
                100_000,
            ),
            (
                "constraints.initial_lexer_fuel",
                c.initial_lexer_fuel,
                1_000,
                100_000_000,
            ),
            (
                "constraints.step_lexer_fuel",
                c.step_lexer_fuel,
                1_000,
                10_000_000,
            ),
            (
                "constraints.step_max_items",
                c.step_max_items as u64,
                100,
                1_000_000,
            ),
            (
                "constraints.max_lexer_states",
                c.max_lexer_states as u64,
                100,
                10_000_000,
            ),
            (
                "constraints.max_grammar_size",
                c.max_grammar_size as u64,
                100,
                10_000_000,
            ),
        ] {
            range(&mut bad, key, value, min, max);
        }

        let sb = &self.sandbox;
        for (key, value) in [("sandbox.user", &sb.user), ("sandbox.group", &sb.group)] {
            if let Some(v) = value {
                if !is_account_name(v) {
                    bad(
                        key,
                        format!(
                            "{:?} is not a user/group name or numeric id (1-32 of A-Z a-z 0-9 _ . -, not starting with -)",
                            bounded(v)
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

/// `section.key` of the `key = value` line holding byte `at`, for value errors (a wrong
/// enum variant, a string where a number belongs) that serde reports without a key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    if name.is_empty() {
        return None;
    }
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|s| !s.is_empty());
    Some(match section {
        Some(sec) => format!("{sec}.{name}"),
        None => name.to_string(),
    })
}

/// A POSIX-portable user or group name, or a numeric id.
fn is_account_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// At most 64 characters of an operator-supplied value, for messages.
fn bounded(v: &str) -> String {
    v.chars().take(64).collect()
}

fn range(bad: &mut impl FnMut(&str, String), key: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        bad(
            key,
            format!("{value} is out of range; allowed {min}..={max}"),
        );
    }
}

/// Turn a TOML/serde error into an issue that names the key where possible.
fn toml_issue(e: &toml::de::Error, text: &str) -> ConfigIssue {
    let message = e.message().to_string();
    let key = if let Some(rest) = message.strip_prefix("unknown field `") {
        rest.split('`').next().unwrap_or("(unknown)").to_string()
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        rest.split('`').next().unwrap_or("(unknown)").to_string()
    } else {
        e.span()
            .and_then(|s| key_at(text, s.start))
            .unwrap_or_else(|| "(syntax)".to_string())
    };
    // A key spelled `""` is still a key: name it visibly.
    let key = if key.is_empty() {
        "\"\"".to_string()
    } else {
        key
    };
    let at = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    let hint = if message.starts_with("unknown field") {
        "; remove it or fix its spelling (see config/reference.toml)"
    } else if message.starts_with("missing field") {
        "; this key is required (see config/reference.toml)"
    } else {
        ""
    };
    ConfigIssue {
        key,
        message: format!("{message}{at}{hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[auth]\nkeys_file = \"keys\"\n[model]\npath = \"m.gguf\"\n";

    fn parse(text: &str) -> Result<Config, Vec<ConfigIssue>> {
        Config::parse(text, Path::new("/etc/lgi"))
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.model.path, Path::new("/etc/lgi/m.gguf"));
        assert_eq!(c.auth.keys_file, Path::new("/etc/lgi/keys"));
        assert_eq!(c.model.context, 4096);
        assert_eq!(c.model_id(), "m");
        assert_eq!(c.server.listen, "127.0.0.1:8443");
        assert_eq!(
            c.tls.self_signed_names,
            vec!["localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(c.model.gpu_layers, GpuLayers::All);
    }

    #[test]
    fn unknown_key_is_named() {
        let issues = parse(&format!("{MINIMAL}contxt = 5\n")).unwrap_err();
        assert_eq!(issues[0].key, "contxt");
        assert!(
            issues[0].message.contains("unknown field"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn missing_model_path_is_named() {
        let issues = parse("[auth]\nkeys_file = \"k\"\n[model]\nid = \"x\"\n").unwrap_err();
        assert_eq!(issues[0].key, "path");
        assert!(issues[0].message.contains("required"));
    }

    #[test]
    fn every_range_error_is_reported_at_once() {
        let text = "[server]\nlisten = \"nope\"\nhealth_listen = \"127.0.0.1:8443\"\n\
                    [auth]\nkeys_file = \"k\"\n[model]\npath = \"m.bin\"\ncontext = 1\nparallel = 0\n\
                    [limits]\nmax_tokens = 0\n[tls]\ncert = \"c.pem\"\n";
        let issues = parse(text).unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        for k in [
            "server.listen",
            "model.path",
            "model.context",
            "model.parallel",
            "limits.max_tokens",
            "tls.key",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn same_port_for_both_listeners_is_refused() {
        let text = format!(
            "{MINIMAL}[server]\nlisten = \"0.0.0.0:9000\"\nhealth_listen = \"127.0.0.1:9000\"\n"
        );
        let issues = parse(&text).unwrap_err();
        assert_eq!(issues[0].key, "server.health_listen");
    }

    #[test]
    fn gpu_layers_accepts_all_or_number_only() {
        let c = parse(&format!("{MINIMAL}gpu_layers = 12\n")).unwrap();
        assert_eq!(c.model.gpu_layers, GpuLayers::Count(12));
        let issues = parse(&format!("{MINIMAL}gpu_layers = \"most\"\n")).unwrap_err();
        assert!(
            issues[0].message.contains("\"all\""),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn reference_config_parses_and_states_the_defaults() {
        let text = include_str!("../config/reference.toml");
        let c = Config::parse(text, Path::new("/etc/lgi")).unwrap();
        let d = LimitsConfig::default();
        assert_eq!(c.limits.max_body_bytes, d.max_body_bytes);
        assert_eq!(c.limits.max_tokens, d.max_tokens);
        assert_eq!(c.limits.queue_depth, d.queue_depth);
        assert_eq!(c.limits.max_generation_secs, d.max_generation_secs);
        assert_eq!(c.limits.max_prompt_bytes, d.max_prompt_bytes);
        let s = ServerConfig::default();
        assert_eq!(c.server.listen, s.listen);
        assert_eq!(c.server.max_connections, s.max_connections);
        assert_eq!(
            c.server.max_connections_per_address,
            s.max_connections_per_address
        );
        assert_eq!(
            c.server.max_requests_per_connection,
            s.max_requests_per_connection
        );
        assert_eq!(c.server.max_header_bytes, s.max_header_bytes);
        assert_eq!(c.server.max_headers, s.max_headers);
        assert_eq!(c.server.http2, s.http2);
        assert_eq!(
            c.server.max_connections_per_ipv6_48,
            s.max_connections_per_ipv6_48
        );
        assert_eq!(c.server.idle_timeout_secs, s.idle_timeout_secs);
        assert_eq!(
            c.server.max_connection_lifetime_secs,
            s.max_connection_lifetime_secs
        );
        assert_eq!(
            c.auth.max_queued_verifications,
            default_queued_verifications()
        );
        assert_eq!(
            c.auth.failed_auth_tracked_addresses,
            default_tracked_addresses()
        );
        assert_eq!(
            c.server.header_read_timeout_secs,
            s.header_read_timeout_secs
        );
        assert_eq!(c.logging.level, LoggingConfig::default().level);
        assert_eq!(
            c.tls.self_signed_names,
            TlsConfig::default().self_signed_names
        );
        assert_eq!(c.model.context, default_context());
        assert_eq!(c.auth.default_requests_per_minute, default_rpm());
        assert_eq!(
            c.auth.failed_auth_per_minute_per_address,
            default_failed_auth()
        );
        assert_eq!(
            c.auth.max_concurrent_generations_per_key,
            default_generations_per_key()
        );
        let sb = SandboxConfig::default();
        assert_eq!(c.sandbox.landlock, sb.landlock);
        assert_eq!(c.sandbox.seccomp, sb.seccomp);
        assert_eq!(c.sandbox.allow_root, sb.allow_root);
        assert_eq!(c.sandbox.user, None);
    }

    #[test]
    fn value_errors_name_their_key_and_never_an_empty_one() {
        let issues = parse(&format!("{MINIMAL}[limits]\nmax_tokens = \"many\"\n")).unwrap_err();
        assert_eq!(issues[0].key, "limits.max_tokens");
        // Found by fuzzing (fuzz/fuzz_targets/config_toml.rs): a line with no key name.
        for text in [" = \"x\"\n", "[]\n = 1\n", "a = \n", "[\"\"]"] {
            for issue in parse(text).unwrap_err() {
                assert!(!issue.key.is_empty(), "{text:?}: {issue:?}");
            }
        }
    }

    #[test]
    fn sandbox_settings_are_checked_by_name() {
        let c = parse(&format!(
            "{MINIMAL}[sandbox]\nuser = \"65534\"\nlandlock = \"best-effort\"\nseccomp = \"kill\"\nextra_read_paths = [\"cuda\"]\n"
        ))
        .unwrap();
        assert_eq!(c.sandbox.user.as_deref(), Some("65534"));
        assert_eq!(c.sandbox.landlock, LandlockMode::BestEffort);
        assert_eq!(c.sandbox.seccomp, SeccompMode::Kill);
        assert_eq!(
            c.sandbox.extra_read_paths,
            vec![PathBuf::from("/etc/lgi/cuda")]
        );

        let issues = parse(&format!("{MINIMAL}[sandbox]\nuser = \"-rf /\"\n")).unwrap_err();
        assert_eq!(issues[0].key, "sandbox.user");
        let issues = parse(&format!("{MINIMAL}[sandbox]\ngroup = \"llama\"\n")).unwrap_err();
        assert_eq!(issues[0].key, "sandbox.group");
        let issues = parse(&format!("{MINIMAL}[sandbox]\nlandlock = \"maybe\"\n")).unwrap_err();
        assert!(issues[0].key.contains("landlock"), "{:?}", issues[0]);
        assert!(issues[0].message.contains("best-effort"), "{:?}", issues[0]);
    }

    #[test]
    fn engine_keys_are_checked_and_named() {
        use crate::engine::prefix::PrefixCache;
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            (c.model.parallel, c.model.prefix_cache),
            (4, PrefixCache::PerKey)
        );
        assert_eq!(c.server.async_workers, 0);
        let c = parse(&format!(
            "{MINIMAL}prefix_cache = \"shared\"\nparallel = 8\n"
        ))
        .unwrap();
        assert_eq!(
            (c.model.parallel, c.model.prefix_cache),
            (8, PrefixCache::Shared)
        );
        let issues = parse(&format!("{MINIMAL}prefix_cache = \"everyone\"\n")).unwrap_err();
        assert!(issues[0].key.contains("prefix_cache"), "{:?}", issues[0]);
        assert!(issues[0].message.contains("per-key"), "{:?}", issues[0]);
        let issues = parse(&format!("{MINIMAL}parallel = 16\nbatch = 8\n")).unwrap_err();
        assert_eq!(issues[0].key, "model.batch");
        assert!(issues[0].message.contains("model.parallel"));
    }

    #[test]
    fn bad_log_level_is_named() {
        let issues = parse(&format!("{MINIMAL}[logging]\nlevel = \"info,,=[\"\n")).unwrap_err();
        assert_eq!(issues[0].key, "logging.level");
    }
}
