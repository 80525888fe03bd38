//! llama-gguf-inference: one GGUF model, served over the OpenAI HTTP API, directly on the
//! internet, by one hardened process.
//!
//! Read this file top to bottom to follow start-up; then `http.rs` → `api/mod.rs` for the
//! request path.
//!
//! | module        | what it does / defends                                              |
//! |---------------|---------------------------------------------------------------------|
//! | `cli`         | commands and `--help`; secrets only via stdin                        |
//! | `config`      | the one TOML file: strict, defaulted, every error names its key      |
//! | `keys`        | keys file: argon2id-only hashes with bounded parameters              |
//! | `auth`        | Bearer/Basic credentials, dummy-hash timing, HMAC verified cache    |
//! | `ratelimit`   | per-key requests-per-minute token bucket                             |
//! | `tls`         | rustls config, PEM files or a (persisted) self-signed certificate   |
//! | `gguf`        | safe-Rust GGUF header walk before llama.cpp parses the file         |
//! | `http`        | accept loop: connection cap, handshake deadline, hyper limits       |
//! | `api`         | routes, body limits, strict JSON, OpenAI-shaped errors, SSE         |
//! | `engine`      | bounded queue to the engine thread; `engine::llama` is llama.cpp    |
//! | `health`      | plain-HTTP /health, /ready, /metrics from atomics only              |
//! | `healthcheck` | the `healthcheck` command: probes /ready, exit 0 or 1 (containers)  |
//! | `logging`     | tracing to stderr, text or JSON, no secrets                         |
//! | `sandbox`     | lock-down: identity, capabilities, no_new_privs, Landlock, seccomp  |
//!
//! Start-up order (`serve`): config → keys → TLS material → GGUF header → bind both
//! listeners → lock down → tokio runtime → health port (503 while loading) → engine
//! thread loads the model → seccomp → ready, and only then the API port accepts. `main` stays single-threaded until the lock-down is done (checked), so that
//! every thread — tokio's, the engine's, llama.cpp's — inherits the sandbox.

// SECURITY: unsafe code is confined to the sandbox (raw syscalls) and the llama.cpp
// glue (engine::llama); both opt back in with `allow`, and tests/unsafe_fence.rs checks
// that every use there carries a `// SAFETY:` comment.
#![deny(unsafe_code)]

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
pub mod ratelimit;
pub mod sandbox;
pub mod tls;

use config::Config;
use std::path::Path;
use std::time::Duration;

/// How long in-flight requests may run on after SIGTERM/SIGINT before connections close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Most async worker threads chosen automatically (`server.async_workers = 0`).
const MAX_ASYNC_WORKERS: usize = 4;

/// Everything validated before any socket is bound or the model is loaded.
struct Prepared {
    cfg: Config,
    keys: auth::KeyStore,
    tls: tls::TlsMaterial,
    #[cfg_attr(not(feature = "llama"), allow(dead_code))]
    tls_config: std::sync::Arc<rustls::ServerConfig>,
    gguf: gguf::GgufSummary,
    /// Keys the `user_tag` HMAC in logs (`logging.user_tag_key_file`, or random).
    #[cfg_attr(not(feature = "llama"), allow(dead_code))]
    user_tag_key: ring::hmac::Key,
}

/// OpenAI's `system_fingerprint`: changes when the model file or the build changes.
/// Derived from the file's size and GGUF header summary plus this build's version (not a
/// hash of the weights: reading gigabytes at every start would delay it by minutes).
#[cfg_attr(not(feature = "llama"), allow(dead_code))]
fn system_fingerprint(model: &Path, g: &gguf::GgufSummary) -> String {
    let size = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    let identity = format!(
        "{size}|{}|{}|{}|{:?}|{:?}|{}|{}",
        g.version,
        g.tensor_count,
        g.kv_count,
        g.architecture,
        g.name,
        env!("CARGO_PKG_VERSION"),
        if cfg!(feature = "cuda") {
            "cuda"
        } else {
            "cpu"
        },
    );
    let d = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    let hex: String = d.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("fp_{hex}")
}

/// Steps 2-4 of start-up, after the config is loaded; shared by `serve` and `check-config`.
fn prepare(cfg: Config, config_path: &Path) -> Result<Prepared, String> {
    let mut problems = Vec::new();
    let keys = match keys::load_keys_file(&cfg.auth.keys_file) {
        Ok(entries) => match auth::KeyStore::new(entries, (&cfg.auth).into()) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(format!("auth.keys_file: {e}"));
                None
            }
        },
        Err(errors) => {
            for e in errors {
                problems.push(format!(
                    "auth.keys_file ({}): {e}",
                    cfg.auth.keys_file.display()
                ));
            }
            None
        }
    };
    let tls = match tls::load_material(&cfg.tls)
        .and_then(|m| tls::server_config(&m, cfg.server.http2).map(|c| (m, c)))
    {
        Ok(pair) => Some(pair),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let gguf = match gguf::check_file(&cfg.model.path) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(format!("model.path ({}): {e}", cfg.model.path.display()));
            None
        }
    };
    let user_tag_key = match logging::user_tag_key(cfg.logging.user_tag_key_file.as_deref()) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    match (keys, tls, gguf, user_tag_key) {
        (Some(keys), Some((tls, tls_config)), Some(gguf), Some(user_tag_key))
            if problems.is_empty() =>
        {
            Ok(Prepared {
                cfg,
                keys,
                tls,
                tls_config,
                gguf,
                user_tag_key,
            })
        }
        _ => {
            let mut msg = format!("cannot start with {}:\n", config_path.display());
            for p in problems {
                msg.push_str(&format!("  - {p}\n"));
            }
            Err(msg)
        }
    }
}

/// `check-config`: validate everything start-up would, without binding or loading.
pub fn check_config(config_path: &Path) -> Result<String, String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let p = prepare(cfg, config_path)?;
    let addrs = p.cfg.listen_addrs();
    let plan = sandbox::plan(&p.cfg, (addrs.api.port(), addrs.health.port()))?;
    Ok(format!(
        "config OK: {}\n  sandbox: {} (details: `policy --config FILE`)\n  listen {} (TLS), health {}\n  {} key(s) in {}\n  TLS certificate ({:?}) SHA-256 {}\n  model {} (id {:?}): GGUF v{}, {} tensors, architecture {}, chat template {}",
        config_path.display(),
        plan.identity,
        p.cfg.server.listen,
        p.cfg.server.health_listen,
        p.keys.len(),
        p.cfg.auth.keys_file.display(),
        p.tls.source,
        p.tls.fingerprint(),
        p.cfg.model.path.display(),
        p.cfg.model_id(),
        p.gguf.version,
        p.gguf.tensor_count,
        p.gguf.architecture.as_deref().unwrap_or("unknown"),
        if p.gguf.has_chat_template { "present" } else { "missing (chat completions will fail)" },
    ))
}

/// `policy`: print the sandbox start-up would apply for this config.
pub fn policy(config_path: &Path) -> Result<String, String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let addrs = cfg.listen_addrs();
    let plan = sandbox::plan(&cfg, (addrs.api.port(), addrs.health.port()))?;
    Ok(sandbox::describe(&plan, config_path, true))
}

/// How `serve` ends: serve until a signal, or run the sandbox self-test and exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    SelfTestSandbox,
}

/// `serve`: the whole start-up order, then serve until SIGTERM/SIGINT.
pub fn serve(config_path: &Path, mode: Mode) -> Result<(), String> {
    // 1-4: config, keys, TLS material, GGUF header. Logging needs the config first.
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    logging::init(&cfg.logging)?;
    let p = prepare(cfg, config_path)?;
    tracing::info!(
        keys = p.keys.len(),
        model = %p.cfg.model.path.display(),
        architecture = p.gguf.architecture.as_deref().unwrap_or("unknown"),
        tensors = p.gguf.tensor_count,
        "configuration, keys and GGUF header checked"
    );
    tracing::info!(
        source = ?p.tls.source,
        sha256 = %p.tls.fingerprint(),
        "TLS certificate (pin this fingerprint for a self-signed deployment)"
    );

    // 5: bind both listeners with std sockets (a root start can take port 443 here).
    let addrs = p.cfg.listen_addrs();
    let api_listener = bind(addrs.api, "server.listen")?;
    let health_listener = bind(addrs.health, "server.health_listen")?;
    tracing::info!(
        api = %api_listener.local_addr().map_err(|e| e.to_string())?,
        health = %health_listener.local_addr().map_err(|e| e.to_string())?,
        "listening"
    );

    // 6: lock down, while this is still the only thread (sandbox::lock_down checks).
    let api_port = api_listener.local_addr().map_err(|e| e.to_string())?.port();
    let health_port = health_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();
    let plan = sandbox::plan(&p.cfg, (api_port, health_port))?;
    let self_test = match mode {
        Mode::SelfTestSandbox => Some(sandbox::selftest::prepare(
            api_port,
            p.cfg.model.path.clone(),
        )?),
        Mode::Serve => None,
    };
    // The CPU quota and topology live in /sys and cgroup files that Landlock hides:
    // read them now.
    let cores = cores::physical_cores();
    let mut p = p;
    if p.cfg.model.threads == 0 {
        p.cfg.model.threads = cores as u32;
    }
    let lock = sandbox::lock_down(&plan)?;
    sandbox::check_model_readable(&p.cfg)?;

    // 7: runtime, engine, serve.
    let workers = async_workers(p.cfg.server.async_workers, cores, p.cfg.model.threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        // argon2 has its own threads (auth::argon2_pool); the blocking pool compiles
        // constraints and re-reads the keys file.
        .max_blocking_threads(p.cfg.constraints.max_concurrent_compiles as usize + 2)
        .thread_name("async")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run(
        p,
        api_listener,
        health_listener,
        lock,
        self_test,
        workers,
    ))
}

/// Async worker threads. SECURITY / performance: llama.cpp's threads must have the cores
/// to themselves (oversubscribing them collapses generation speed), and the HTTP side
/// needs little (TLS, JSON, SSE; argon2 has its own threads). Auto (0): the cores
/// the engine leaves free, at least 1 and at most `MAX_ASYNC_WORKERS`.
fn async_workers(configured: u32, cores: usize, engine_threads: u32) -> usize {
    if configured > 0 {
        return configured as usize;
    }
    cores
        .saturating_sub(engine_threads as usize)
        .clamp(1, MAX_ASYNC_WORKERS)
}

fn bind(addr: std::net::SocketAddr, key: &str) -> Result<std::net::TcpListener, String> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|e| format!("{key}: cannot bind {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| format!("{key}: {e}"))?;
    Ok(l)
}

#[cfg(not(feature = "llama"))]
async fn run(
    _p: Prepared,
    _api: std::net::TcpListener,
    _health: std::net::TcpListener,
    _lock: sandbox::LockdownStatus,
    _self_test: Option<sandbox::selftest::Kit>,
    _workers: usize,
) -> Result<(), String> {
    Err("this binary was built without the `llama` feature and cannot serve a model".into())
}

#[cfg(feature = "llama")]
async fn run(
    p: Prepared,
    api_listener: std::net::TcpListener,
    health_listener: std::net::TcpListener,
    lock: sandbox::LockdownStatus,
    self_test: Option<sandbox::selftest::Kit>,
    workers: usize,
) -> Result<(), String> {
    use std::sync::Arc;
    let api_listener =
        tokio::net::TcpListener::from_std(api_listener).map_err(|e| e.to_string())?;
    let health_listener =
        tokio::net::TcpListener::from_std(health_listener).map_err(|e| e.to_string())?;
    let stats = Arc::new(engine::EngineStats::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);

    // Health first: it must answer (503 on /ready) while the model loads.
    let health = tokio::spawn(health::serve_health(
        health_listener,
        Arc::new(health::HealthState {
            stats: stats.clone(),
            metrics: p.cfg.metrics.enabled.then(|| metrics.clone()),
        }),
        shutdown_rx.clone(),
    ));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot watch SIGHUP: {e}"))?;

    engine::llama::route_logs();
    let (engine, loaded) = engine::llama::spawn(&p.cfg, stats.clone())?;
    let state = Arc::new(api::AppState {
        keys: p.keys,
        engine,
        limits: config::LimitsConfig {
            // Every choice takes one of the key's generation slots: more could never start.
            max_n: p
                .cfg
                .limits
                .max_n
                .min(p.cfg.auth.max_concurrent_generations_per_key),
            ..p.cfg.limits.clone()
        },
        model_id: p.cfg.model_id(),
        created: api::unix_now(),
        body_read_timeout: Duration::from_secs(p.cfg.server.body_read_timeout_secs),
        cors_allowed_origins: p.cfg.server.cors_allowed_origins.clone(),
        generations_per_key: p.cfg.auth.max_concurrent_generations_per_key as usize,
        system_fingerprint: system_fingerprint(&p.cfg.model.path, &p.gguf),
        embeddings: p.cfg.model.embeddings,
        metrics: metrics.clone(),
        log_prompts: p.cfg.logging.log_prompts,
        auth_audit: auth::audit::AuthAudit::new(),
        user_tag_key: p.user_tag_key.clone(),
    });
    let audit_summary = tokio::spawn({
        let state = state.clone();
        async move { state.auth_audit.summary().await }
    });
    // Key rotation: SIGHUP re-reads the keys file for as long as the server runs.
    let reloader = tokio::spawn(reload_keys_on_sighup(
        sighup,
        state.clone(),
        p.cfg.auth.keys_file.clone(),
    ));
    let limits = http::ConnLimits {
        max_connections: p.cfg.server.max_connections,
        max_connections_per_address: p.cfg.server.max_connections_per_address,
        max_requests_per_connection: p.cfg.server.max_requests_per_connection,
        max_header_bytes: p.cfg.server.max_header_bytes as usize,
        max_headers: p.cfg.server.max_headers as usize,
        http2: p.cfg.server.http2,
        tls_handshake_timeout: Duration::from_secs(p.cfg.server.tls_handshake_timeout_secs),
        header_read_timeout: Duration::from_secs(p.cfg.server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(p.cfg.server.idle_timeout_secs),
        max_lifetime: Duration::from_secs(p.cfg.server.max_connection_lifetime_secs),
        max_connections_per_ipv6_48: p.cfg.server.max_connections_per_ipv6_48,
    };
    let mut api = None;

    let mut result = Ok(());
    tokio::select! {
        loaded = loaded => match loaded {
            Ok(Ok(m)) => {
                tracing::info!(
                    context = m.context,
                    trained_context = m.n_ctx_train,
                    parameters = m.n_params,
                    size_mib = m.size_bytes / (1024 * 1024),
                    load_ms = m.load_time.as_millis() as u64,
                    chat_template = m.renderer,
                    "model loaded"
                );
                tracing::info!(
                    parallel = m.parallel,
                    context_per_slot = m.context,
                    kv_cache_mib_per_slot = format!("{:.1}", m.kv_bytes_per_slot as f64 / 1048576.0),
                    kv_cache_mib_total = format!("{:.1}", (m.kv_bytes_per_slot * m.parallel as u64) as f64 / 1048576.0),
                    threads = m.threads,
                    threads_batch = m.threads_batch,
                    async_workers = workers,
                    "engine: continuous batching"
                );
                // 8: seccomp, now that llama.cpp (and CUDA) finished initialising.
                match sandbox::seccomp::apply(p.cfg.sandbox.seccomp) {
                    Ok(seccomp) => {
                        tracing::info!("{}", sandbox::status_line(&lock, &seccomp));
                        metrics.set_sandbox(metrics::SandboxGauges {
                            landlock_enforced: lock.landlock_full,
                            seccomp_active: p.cfg.sandbox.seccomp != config::SeccompMode::Off,
                            capabilities_cleared: lock.privileges.kept.is_empty(),
                            running_as_root: lock.privileges.uid == 0,
                        });
                        // 9: ready. SECURITY: the API port accepts only now, with every
                        // sandbox layer in force; until here connections wait in the
                        // kernel's backlog and no TLS, HTTP or argon2 runs.
                        stats.ready.store(true, std::sync::atomic::Ordering::Release);
                        api = Some(tokio::spawn(http::serve_api(
                            api_listener,
                            tokio_rustls::TlsAcceptor::from(p.tls_config.clone()),
                            state.clone(),
                            limits,
                            shutdown_rx.clone(),
                            SHUTDOWN_GRACE,
                        )));
                        tracing::info!("ready");
                        let watch = tokio::spawn(log_seccomp_denials());
                        match self_test {
                            Some(kit) => {
                                result = self_test_report(kit, &p.cfg, lock.mdwe == "on").await
                            }
                            None => tokio::select! {
                                _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
                                _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
                            },
                        }
                        watch.abort();
                    }
                    Err(e) => result = Err(e),
                }
            }
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err("the engine thread ended during model load".into()),
        },
        _ = sigterm.recv() => tracing::info!("SIGTERM during model load: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT during model load: shutting down"),
    }
    reloader.abort();
    audit_summary.abort();
    let _ = shutdown_tx.send(true);
    if let Some(api) = api {
        let _ = api.await;
    }
    let _ = health.await;
    tracing::info!("stopped");
    result
}

/// SIGHUP: re-read and fully validate the keys file; apply it only if all of it is
/// valid, otherwise keep serving the current keys and say why. Requests already
/// authenticated are not affected either way.
#[cfg(feature = "llama")]
async fn reload_keys_on_sighup(
    mut sighup: tokio::signal::unix::Signal,
    state: std::sync::Arc<api::AppState>,
    path: std::path::PathBuf,
) {
    while sighup.recv().await.is_some() {
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || keys::load_keys_file(&file)).await;
        match loaded {
            Ok(Ok(entries)) => match state.keys.reload(entries) {
                Ok(s) => {
                    state.metrics.key_reload(true);
                    tracing::info!(
                        keys = state.keys.len(),
                        added = s.added,
                        removed = s.removed,
                        changed = s.changed,
                        unchanged = s.unchanged,
                        "SIGHUP: keys file reloaded"
                    );
                }
                Err(e) => {
                    state.metrics.key_reload(false);
                    tracing::error!(error = %e, "SIGHUP: keys not reloaded; the previous keys stay in use");
                }
            },
            Ok(Err(errors)) => {
                state.metrics.key_reload(false);
                let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                tracing::error!(
                    file = %path.display(),
                    problems = %why.join("; "),
                    "SIGHUP: keys file refused, the previous keys stay in use (fix the file and send SIGHUP again)"
                );
            }
            Err(e) => {
                state.metrics.key_reload(false);
                tracing::error!(error = %e, "SIGHUP: keys reload task failed; the previous keys stay in use");
            }
        }
    }
}

/// How often new seccomp denials are logged.
#[cfg(feature = "llama")]
const SECCOMP_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Log each denied syscall (the SIGSYS handler may only count; this task reports).
#[cfg(feature = "llama")]
async fn log_seccomp_denials() {
    let mut seen: std::collections::HashMap<&'static str, u64> = Default::default();
    loop {
        tokio::time::sleep(SECCOMP_LOG_INTERVAL).await;
        for (name, count) in sandbox::seccomp::denied_counts() {
            let before = seen.insert(name, count).unwrap_or(0);
            if count > before {
                tracing::warn!(
                    syscall = name,
                    new = count - before,
                    total = count,
                    "seccomp denied a syscall (EPERM); a denied call in normal operation is a bug or an attack"
                );
            }
        }
    }
}

/// `--self-test-sandbox`: run the probes, print one line each on stdout, fail if any
/// result differs from what the sandbox should produce.
#[cfg(feature = "llama")]
async fn self_test_report(
    kit: sandbox::selftest::Kit,
    cfg: &Config,
    mdwe_on: bool,
) -> Result<(), String> {
    let seccomp_on = cfg.sandbox.seccomp != config::SeccompMode::Off;
    let before = sandbox::seccomp::denied_total();
    let outcomes =
        tokio::task::spawn_blocking(move || sandbox::selftest::run(kit, seccomp_on, mdwe_on))
            .await
            .map_err(|e| format!("self-test thread failed: {e}"))?;
    let counted = sandbox::seccomp::denied_total() - before;
    let mut failed = 0;
    for o in &outcomes {
        println!("{o}");
        failed += usize::from(!o.ok());
    }
    println!("self-test seccomp denials counted: {counted}");
    println!(
        "self-test result: {} of {} probes as expected",
        outcomes.len() - failed,
        outcomes.len()
    );
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "sandbox self-test: {failed} probe(s) not as expected"
        ))
    }
}
