//! A whole HTTP/1.1 connection through the real service (`http::serve_connection`: hyper
//! with our limits, routing, authentication, body limits, JSON validation, responses,
//! SSE), with the library's deterministic fake engine (`engine::fake`). Input: one byte that
//! sets the write size, then the bytes a client sends. Every input must end in a closed
//! connection whose every response is HTTP/1.1 with a status, never a hang or panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::api::AppState;
use llama_gguf_inference::auth::KeyStore;
use llama_gguf_inference::config::Config;
use llama_gguf_inference::engine;
use llama_gguf_inference::http::serve_connection;
use llama_gguf_inference::metrics::Metrics;
use llama_gguf_inference::settings::{ConnLimits, Settings};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The credential the seeds use: `Authorization: Bearer fuzz:fuzz-secret`.
const SECRET: &str = "fuzz-secret";

/// The server's settings, from a config as an operator writes one: small caps and
/// one-second timeouts keep executions fast; one failed attempt per minute per address
/// means wrong guesses are answered 429 without hashing after the first.
const CONFIG: &str = r#"
[server]
max_connections = 16
max_connections_per_address = 16
max_connections_per_ipv6_48 = 16
max_requests_per_connection = 8
max_header_bytes = 8192
max_headers = 32
http2 = false
tls_handshake_timeout_secs = 1
header_read_timeout_secs = 1
idle_timeout_secs = 1
max_connection_lifetime_secs = 10
body_read_timeout_secs = 1
cors_allowed_origins = ["https://app.example"]
[auth]
keys_file = "keys"
default_requests_per_minute = 0
max_concurrent_generations_per_key = 4
max_concurrent_verifications = 1
max_queued_verifications = 4
failed_auth_per_minute_per_address = 1
failed_auth_tracked_addresses = 1024
[model]
path = "m.gguf"
id = "m"
context = 2048
embeddings = true
[limits]
max_body_bytes = 16384
max_prompt_bytes = 8192
queue_depth = 4
"#;

struct World {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    limits: ConnLimits,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let cfg = Config::parse(CONFIG, std::path::Path::new("/")).unwrap();
        let settings = Settings::resolve(&cfg, 1);
        // Cheapest argon2 the keys file accepts, so the fuzzer gets past authentication
        // (like rustls fuzzing with a mock crypto provider).
        let params = argon2::Params::new(7 * 1024, 1, 1, None).unwrap();
        let hash = llama_gguf_inference::keys::hash_secret(SECRET.as_bytes(), params).unwrap();
        let entries = llama_gguf_inference::keys::parse_keys(&format!("fuzz:{hash}\n")).unwrap();
        let keys = KeyStore::new(entries, settings.auth).unwrap();
        // The library's deterministic fake engine (feature fake-engine): real constraint
        // compiles over a byte vocabulary, a fixed answer, no model.
        let metrics = Arc::new(Metrics::new(Arc::default(), keys.counters()));
        let (engine, _loaded) = engine::spawn(&settings.engine, metrics.engine().clone()).unwrap();
        metrics.engine().ready.store(true, Ordering::Release);
        let state = Arc::new(AppState::new(
            &settings,
            keys,
            engine,
            metrics,
            llama_gguf_inference::logging::user_tag_key(None).unwrap(),
            "fp_fuzz".into(),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World {
            rt,
            state,
            limits: settings.connections,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let w = world();
    let limits = w.limits;
    let state = w.state.clone();
    let output = w.rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let peer = "192.0.2.1:4000".parse().unwrap();
        let conn = tokio::spawn(serve_connection(
            server,
            false,
            peer,
            state,
            limits,
            shutdown_rx,
        ));
        let step = usize::from(split).max(1);
        for chunk in input.chunks(step) {
            if client.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out)).await;
        assert!(
            read.is_ok(),
            "connection did not close after the client finished"
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        out
    });
    // Every response starts with a status line.
    if !output.is_empty() {
        assert!(
            output.starts_with(b"HTTP/1.1 ") || output.starts_with(b"HTTP/1.0 "),
            "{:?}",
            String::from_utf8_lossy(&output[..output.len().min(64)])
        );
    }
});
