//! Logging: `tracing` to stderr, as text or JSON lines (`[logging] format`).
//!
//! SECURITY: no code path logs a secret, a hash or a prompt; the request span carries the
//! key id only. llama.cpp's own logs are routed into `tracing` (see `engine::llama`) and
//! filtered like everything else, never written raw to stderr.

use crate::config::{LogFormat, LoggingConfig};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Called once, before anything logs.
pub fn init(cfg: &LoggingConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&cfg.level).map_err(|e| format!("logging.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
