//! A whole HTTP/1.1 connection through the real service (`http::serve_connection`: hyper
//! with our limits, routing, authentication, body limits, JSON validation, responses,
//! SSE), with the engine replaced by a deterministic fake thread. Input: one byte that
//! sets the write size, then the bytes a client sends. Every input must end in a closed
//! connection whose every response is HTTP/1.1 with a status, never a hang or panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::api::AppState;
use llama_gguf_inference::auth::{AuthLimits, KeyStore};
use llama_gguf_inference::config::LimitsConfig;
use llama_gguf_inference::engine::{
    EngineHandle, EngineStats, Event, FinishReason, Intake, Job, Usage,
};
use llama_gguf_inference::http::{serve_connection, ConnLimits};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The credential the seeds use: `Authorization: Bearer fuzz:fuzz-secret`.
const SECRET: &str = "fuzz-secret";

struct World {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // Cheapest argon2 the keys file accepts, so the fuzzer gets past authentication
        // (like rustls fuzzing with a mock crypto provider).
        let params = argon2::Params::new(7 * 1024, 1, 1, None).unwrap();
        let hash = llama_gguf_inference::keys::hash_secret(SECRET.as_bytes(), params).unwrap();
        let entries = llama_gguf_inference::keys::parse_keys(&format!("fuzz:{hash}\n")).unwrap();
        // One failed attempt per minute per address: wrong guesses are answered 429
        // without hashing after the first, keeping executions fast.
        let keys = KeyStore::new(
            entries,
            AuthLimits {
                default_rpm: 0,
                default_tpm: 0,
                generations_per_key: 4,
                verifications: 1,
                queued_verifications: 4,
                failed_per_minute_per_address: 1,
                tracked_addresses: 1024,
            },
        )
        .unwrap();
        let stats = Arc::new(EngineStats::default());
        stats.ready.store(true, Ordering::Release);
        let intake = Intake::new(4, stats);
        let engine_side = intake.clone();
        std::thread::spawn(move || {
            // The fake engine: every job gets the same short, well-formed answer.
            while let Some(job) = engine_side.next(true) {
                let job = match job {
                    Job::Generate(g) => g,
                    Job::Embed(e) => {
                        let _ = e.reply.send(Ok(llama_gguf_inference::engine::Embeddings {
                            vectors: vec![vec![0.6, 0.8]],
                            prompt_tokens: 1,
                        }));
                        continue;
                    }
                };
                let _ = job.events.send(Event::Started { prompt_tokens: 3 });
                let _ = job.events.send(Event::Text("Hello, é!".into()));
                let _ = job.events.send(Event::Finished {
                    reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 3,
                        completion_tokens: 2,
                        cached_tokens: 0,
                    },
                });
            }
        });
        let limits = LimitsConfig {
            max_body_bytes: 16 * 1024,
            max_prompt_bytes: 8 * 1024,
            ..LimitsConfig::default()
        };
        // Constrained decoding compiles for real, against an approximate byte-level
        // vocabulary (no model here).
        let engine = EngineHandle::new(intake, 2048);
        let env = llama_gguf_inference::engine::constraint::ApproximateTokEnv::single_byte_env();
        engine.set_constraints(
            llama_gguf_inference::engine::constraint::ConstraintCompiler::new(
                &env,
                llama_gguf_inference::config::ConstraintsConfig::default().settings(),
            )
            .unwrap(),
        );
        let state = Arc::new(AppState {
            keys,
            engine,
            limits,
            model_id: "m".into(),
            created: 0,
            body_read_timeout: Duration::from_secs(1),
            cors_allowed_origins: vec!["https://app.example".into()],
            generations_per_key: 4,
            system_fingerprint: "fp_fuzz".into(),
            embeddings: true,
            metrics: Arc::new(llama_gguf_inference::metrics::Metrics::default()),
            log_prompts: false,
            auth_audit: llama_gguf_inference::auth::audit::AuthAudit::new(),
            user_tag_key: llama_gguf_inference::logging::user_tag_key(None).unwrap(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World { rt, state }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let w = world();
    let limits = ConnLimits {
        max_connections: 16,
        max_connections_per_address: 16,
        max_requests_per_connection: 8,
        max_header_bytes: 8 * 1024,
        max_headers: 32,
        http2: false,
        tls_handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_lifetime: Duration::from_secs(10),
        max_connections_per_ipv6_48: 16,
    };
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
