//! The one TOML file: typed, strict (`deny_unknown_fields`), defaulted, validated once.
//!
//! SECURITY: a typo in a security-relevant key must never silently fall back to a default,
//! so unknown keys are errors. Validation runs as a single pass that reports *every*
//! problem, each naming its key (`section.key`) and what is allowed, so an operator fixes
//! the file in one round trip.
//!
//! Here: the types and their defaults. `parse`: reading the file, TOML errors named by
//! key, relative paths. `validate`: every range (one table) and cross-field rule. The
//! runtime values derived from all this are `crate::settings`, not here.

mod parse;
#[cfg(test)]
mod tests;
mod validate;

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// More names requests may use for this model (clients that hard-code one, e.g. the
    /// old gateway's); each is listed by /v1/models, answers are labelled with `id`.
    #[serde(default)]
    pub aliases: Vec<String>,
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
    /// How a model is spread over several GPUs: "layer" (whole layers per GPU, in
    /// proportion to each one's free memory; llama.cpp's default), "row" (each layer's
    /// rows split, `main_gpu` holding the small tensors) or "none" (only `main_gpu`).
    #[serde(default)]
    pub split_mode: SplitMode,
    /// Flash attention: "auto" (llama.cpp decides per device), "on" or "off".
    #[serde(default)]
    pub flash_attention: FlashAttention,
    /// Type of the K and V cache cells: "f16" (default), "bf16", "q8_0" or "q4_0".
    /// Quantized caches halve (q8_0) or quarter (q4_0) KV memory; they need flash
    /// attention for V, so "off" with a quantized type is refused.
    #[serde(default)]
    pub kv_cache_type: KvCacheType,
    /// A Jinja chat template to use instead of the model file's (which may have none):
    /// read once before lock-down, compiled and tried on a sample conversation.
    #[serde(default)]
    pub chat_template_file: Option<PathBuf>,
    /// A built-in chat template by family ("chatml", "llama3", "mistral", "gemma") to
    /// use instead of the model file's; not together with `chat_template_file`.
    #[serde(default)]
    pub chat_template: Option<crate::engine::template_families::Family>,
    /// How the model marks its thinking: "auto" (the format whose opener the chat
    /// template mentions), a format's name (`engine::reasoning::FORMATS`: "think",
    /// "harmony", …) or "none" (no split).
    #[serde(default)]
    pub reasoning_format: crate::engine::reasoning::ReasoningSetting,
    /// How the model calls tools: "auto" (the family whose syntax the chat template
    /// writes, `engine::family`), a family's name ("hermes", "qwen3-coder", "harmony",
    /// …), or "generic" (the JSON envelope, any template).
    #[serde(default)]
    pub tool_format: crate::engine::tool_syntax::ToolFormatSetting,
    /// Thinking tokens a request with `reasoning_effort: "low"` may spend.
    #[serde(default = "default_budget_low")]
    pub reasoning_budget_low: u32,
    /// Thinking tokens for `reasoning_effort: "medium"` ("high": up to `max_tokens`).
    #[serde(default = "default_budget_medium")]
    pub reasoning_budget_medium: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    None,
    #[default]
    Layer,
    Row,
}

impl SplitMode {
    pub fn name(self) -> &'static str {
        match self {
            SplitMode::None => "none",
            SplitMode::Layer => "layer",
            SplitMode::Row => "row",
        }
    }
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

fn default_budget_low() -> u32 {
    1024
}
fn default_budget_medium() -> u32 {
    4096
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
}
