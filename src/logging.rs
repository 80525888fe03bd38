//! Logging: `tracing` to journald (native protocol), or to stderr as JSON or text lines
//! (`[logging] target`).
//!
//! SECURITY: no code path logs a secret, a hash or a prompt (prompts only with
//! `logging.log_prompts = true`); the request span carries the key id only. llama.cpp's
//! own logs are routed into `tracing` (see `engine::llama`) and filtered like everything
//! else, never written raw to stderr.
//!
//! journald under the sandbox: the layer's datagram socket is made here, before
//! lock-down; each event is one `sendto` to /run/systemd/journal/socket (a pathname
//! AF_UNIX socket: Landlock up to ABI 7 does not restrict sending to one, and the seccomp
//! deny list keeps AF_UNIX). Large events go through a sealed memfd, also allowed. When
//! journald cannot be reached at start-up, logging falls back to stderr text and says so
//! on the first line, rather than losing the log.

use crate::config::{LogTarget, LoggingConfig};
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The identifier journald files the events under (`journalctl -t`).
const SYSLOG_IDENTIFIER: &str = "llama-gguf-inference";

/// Install the global subscriber. Called once, before anything logs.
pub fn init(cfg: &LoggingConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&cfg.level).map_err(|e| format!("logging.level: {e}"))?;
    let mut fallback = None;
    if cfg.target == LogTarget::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_syslog_identifier(SYSLOG_IDENTIFIER.into());
                return tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init()
                    .map_err(|e| format!("cannot install the logger: {e}"));
            }
            Err(e) => fallback = Some(e),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    let result = match cfg.target {
        LogTarget::StderrJson => builder.json().flatten_event(true).try_init(),
        LogTarget::StderrText | LogTarget::Journald => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))?;
    if let Some(e) = fallback {
        tracing::error!(
            error = %e,
            "logging.target = \"journald\" but /run/systemd/journal/socket cannot be reached; logging to stderr instead"
        );
    }
    Ok(())
}

/// Shortest `logging.user_tag_key_file` accepted: an HMAC-SHA256 key of full strength.
const MIN_USER_TAG_KEY_BYTES: usize = 32;

/// The key of the `user_tag` HMAC: the content of `logging.user_tag_key_file` (so tags
/// stay the same across restarts), or random per process.
/// SECURITY: a keyed tag, not a plain hash: without the key, a tag cannot be reversed by
/// hashing guesses (short ids such as e-mail addresses are easy to guess).
pub fn user_tag_key(file: Option<&std::path::Path>) -> Result<ring::hmac::Key, String> {
    match file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("logging.user_tag_key_file ({}): {e}", path.display()))?;
            if bytes.len() < MIN_USER_TAG_KEY_BYTES {
                return Err(format!(
                    "logging.user_tag_key_file ({}): needs at least {MIN_USER_TAG_KEY_BYTES} random bytes (e.g. `head -c 32 /dev/urandom > FILE`)",
                    path.display()
                ));
            }
            Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
        }
        None => {
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| "the system random source failed".to_string())
        }
    }
}
