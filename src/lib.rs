//! llama-gguf-inference: one GGUF model, served over the OpenAI HTTP API, directly on the
//! internet, by one hardened process.
//!
//! Reading guide: this file (the map and the start-up story), then `startup.rs` (the
//! order of start-up), `server.rs` (what runs once locked down), `http.rs` (connections)
//! and `api/mod.rs` (the request path).
//!
//! | module        | what it does / defends                                              |
//! |---------------|---------------------------------------------------------------------|
//! | `cli`         | commands and `--help`; secrets only via stdin                        |
//! | `startup`     | prepare → bind → lock down → settings → runtime → `server::run`      |
//! | `server`      | health, engine, app state, seccomp, ready, API, graceful drain       |
//! | `signals`     | SIGTERM/SIGINT stop, SIGHUP keys + certificate reload, seccomp log   |
//! | `config`      | the one TOML file: strict, defaulted, every error names its key      |
//! | `settings`    | the config resolved once into every runtime value                    |
//! | `address`     | per-address keys: IPv4 as is, IPv6 by /64 (and /48 for connections)  |
//! | `keys`        | keys file: argon2id-only hashes; `keys` commands' atomic edits       |
//! | `migrate`     | `config-from-env`: the old gateway's environment as a config.toml    |
//! | `auth`        | Bearer/Basic credentials, dummy-hash timing, HMAC verified cache    |
//! | `ratelimit`   | per-key requests-per-minute token bucket                             |
//! | `tls`         | rustls config, PEM or self-signed; the pair in use, swapped on reload |
//! | `cores`       | physical cores for `model.threads = 0`, read before lock-down        |
//! | `gguf`        | safe-Rust GGUF header walk before llama.cpp parses the file         |
//! | `http`        | accept loop: connection cap, handshake deadline, hyper limits       |
//! | `api`         | routes, body limits, strict JSON, OpenAI-shaped errors, SSE         |
//! | `engine`      | bounded queue to the engine thread; `engine::llama` is llama.cpp    |
//! | `health`      | plain-HTTP /health, /ready, /metrics from atomics only              |
//! | `healthcheck` | the `healthcheck` command: probes /ready, exit 0 or 1 (containers)  |
//! | `metrics`     | the one registry of every counter; Prometheus text for the health port |
//! | `sanitize`    | the one rule for showing untrusted text: bounded, no control/bidi    |
//! | `logging`     | tracing to stderr, text or JSON, no secrets                         |
//! | `sandbox`     | lock-down: identity, capabilities, no_new_privs, Landlock, seccomp  |
//!
//! Start-up (`startup::serve`): config → keys → TLS material → GGUF header → bind both
//! listeners → settings → lock down → tokio runtime; then `server::run`: health port
//! (503 while loading) → engine thread loads the model → seccomp → ready, and only then
//! the API port accepts. `main` stays single-threaded until the lock-down is done
//! (checked), so that every thread — tokio's, the engine's, llama.cpp's — inherits the
//! sandbox.

// SECURITY: unsafe code is confined to the sandbox (raw syscalls) and the llama.cpp
// glue (engine::llama); both opt back in with `allow`, and tests/unsafe_fence.rs checks
// that every use there carries a `// SAFETY:` comment.
#![deny(unsafe_code)]
// SECURITY: code must not panic on client input (AUDIT.md, issue 8): these are denied
// crate-wide, once, here. Modules that never see client input and must use them
// (`sandbox`: raw syscalls at start-up; `engine::llama`: slot indices it owns; `cli`:
// one-shot commands) allow them in their own header, with the reason; tests/unsafe_fence.rs
// keeps this list and those exemptions as they are.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod address;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod cores;
pub mod engine;
pub mod gguf;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod ratelimit;
pub mod sandbox;
pub mod sanitize;
pub mod server;
pub mod settings;
pub mod signals;
pub mod startup;
pub mod tls;
