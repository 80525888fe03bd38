//! The server after start-up: health port, engine, app state and connection limits (all
//! from the resolved settings, here and nowhere else), then seccomp, readiness and the
//! API port, until `shutdown` resolves; then a graceful drain.
//!
//! As in mini-redis, `run` takes listeners that are already bound and a shutdown future,
//! so the in-process tests (fake engine, no lock-down) drive exactly this code.
//!
//! SECURITY: the API listener is bound before lock-down but accepts only after seccomp
//! is installed and readiness is set: until then connections wait in the kernel's
//! backlog and no TLS, HTTP or argon2 runs in a process that is not fully locked down.
//! The health port answers from the start (503 on /ready while the model loads).

use crate::api::AppState;
use crate::auth::KeyStore;
use crate::config::SeccompMode;
use crate::engine::{self, LoadedModel};
use crate::metrics::{Metrics, SandboxGauges};
use crate::sandbox::{self, selftest, LockdownStatus};
use crate::settings::Settings;
use crate::{health, http, signals};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long in-flight requests may run on after SIGTERM/SIGINT before connections close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Both listeners, bound (std sockets, non-blocking) before lock-down.
pub struct Listeners {
    pub api: std::net::TcpListener,
    pub health: std::net::TcpListener,
}

impl Listeners {
    pub fn local_addrs(&self) -> Result<(SocketAddr, SocketAddr), String> {
        let addr = |l: &std::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
        Ok((addr(&self.api)?, addr(&self.health)?))
    }
}

/// Everything `run` needs, validated and resolved by start-up.
pub struct Launch {
    pub settings: Settings,
    pub keys: KeyStore,
    pub tls: Arc<rustls::ServerConfig>,
    /// The pair `tls` serves (its expiry is exported as a metric).
    pub tls_switch: Arc<crate::tls::CertSwitch>,
    /// Re-read on SIGHUP with the keys file (None: a self-signed certificate).
    pub tls_reload: Option<crate::tls::Reload>,
    /// Keys the `user_tag` HMAC in logs.
    pub user_tag_key: ring::hmac::Key,
    /// OpenAI's `system_fingerprint` (`gguf::system_fingerprint`).
    pub system_fingerprint: String,
    /// Re-read on SIGHUP.
    pub keys_file: PathBuf,
    pub seccomp: SeccompMode,
    /// What lock-down applied; None only in in-process tests, which never lock down.
    pub lock: Option<LockdownStatus>,
    /// `--self-test-sandbox`: probe the sandbox once ready, then stop.
    pub self_test: Option<selftest::Kit>,
}

/// Serve until `shutdown` resolves (to the name of what asked, e.g. "SIGTERM").
pub async fn run(
    launch: Launch,
    listeners: Listeners,
    shutdown: impl Future<Output = &'static str>,
) -> Result<(), String> {
    let api_listener =
        tokio::net::TcpListener::from_std(listeners.api).map_err(|e| e.to_string())?;
    let health_listener =
        tokio::net::TcpListener::from_std(listeners.health).map_err(|e| e.to_string())?;
    let Launch {
        settings,
        keys,
        tls,
        tls_switch,
        tls_reload,
        user_tag_key,
        system_fingerprint,
        keys_file,
        seccomp,
        lock,
        self_test,
    } = launch;
    let metrics = Arc::new(Metrics::new(Arc::default(), keys.counters()));
    metrics.set_tls_not_after(tls_switch.current().validity.not_after.unix_timestamp());
    let (drain_tx, drain_rx) = watch::channel(false);

    // Health first: it must answer (503 on /ready) while the model loads.
    let health = tokio::spawn(health::serve_health(
        health_listener,
        Arc::new(health::HealthState {
            metrics: metrics.clone(),
            export: settings.api.metrics_enabled,
        }),
        drain_rx.clone(),
    ));
    let sighup = signals::hangup()?;
    let (engine, loaded) = engine::spawn(&settings.engine, metrics.engine().clone())?;
    let state = Arc::new(AppState::new(
        &settings,
        keys,
        engine,
        metrics.clone(),
        user_tag_key,
        system_fingerprint,
    ));
    let audit_summary = tokio::spawn({
        let state = state.clone();
        async move { state.auth_audit.summary().await }
    });
    // Key and certificate rotation: SIGHUP re-reads the keys file and the TLS pair for
    // as long as the server runs.
    let reloader = tokio::spawn(signals::reload_on_sighup(
        sighup,
        state.clone(),
        keys_file,
        tls_reload,
    ));

    tokio::pin!(shutdown);
    let mut api = None;
    let result = tokio::select! {
        loaded = loaded => match loaded {
            Ok(Ok(model)) => {
                log_model(&model, settings.async_workers);
                match go_live(seccomp, lock.as_ref(), &metrics) {
                    Ok(()) => {
                        api = Some(tokio::spawn(http::serve_api(
                            api_listener,
                            tokio_rustls::TlsAcceptor::from(tls),
                            state.clone(),
                            settings.connections,
                            drain_rx.clone(),
                            SHUTDOWN_GRACE,
                        )));
                        tracing::info!("ready");
                        serve_until_stopped(self_test, seccomp, lock.as_ref(), shutdown).await
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the engine thread ended during model load".into()),
        },
        why = &mut shutdown => {
            tracing::info!("{why} during model load: shutting down");
            Ok(())
        }
    };
    reloader.abort();
    audit_summary.abort();
    let _ = drain_tx.send(true);
    if let Some(api) = api {
        let _ = api.await;
    }
    let _ = health.await;
    tracing::info!("stopped");
    result
}

/// Seccomp, now that llama.cpp (and CUDA) finished initialising; then readiness.
fn go_live(
    mode: SeccompMode,
    lock: Option<&LockdownStatus>,
    metrics: &Metrics,
) -> Result<(), String> {
    let seccomp = sandbox::seccomp::apply(mode)?;
    match lock {
        Some(lock) => {
            tracing::info!("{}", sandbox::status_line(lock, &seccomp));
            metrics.set_sandbox(SandboxGauges {
                landlock_enforced: lock.landlock_full,
                seccomp_active: mode != SeccompMode::Off,
                capabilities_cleared: lock.privileges.kept.is_empty(),
                running_as_root: lock.privileges.uid == 0,
            });
        }
        None => tracing::warn!("sandbox: not locked down (in-process test server)"),
    }
    // SECURITY: ready only now, with every sandbox layer in force.
    metrics.engine().ready.store(true, Ordering::Release);
    Ok(())
}

/// Serving: until `shutdown`, or once through the sandbox self-test.
async fn serve_until_stopped(
    self_test: Option<selftest::Kit>,
    seccomp: SeccompMode,
    lock: Option<&LockdownStatus>,
    shutdown: impl Future<Output = &'static str>,
) -> Result<(), String> {
    let watch: JoinHandle<()> = tokio::spawn(signals::log_seccomp_denials());
    let result = match self_test {
        Some(kit) => {
            let mdwe_on = lock.is_some_and(|l| l.mdwe == "on");
            selftest::report(kit, seccomp != SeccompMode::Off, mdwe_on).await
        }
        None => {
            let why = shutdown.await;
            tracing::info!("{why}: shutting down");
            Ok(())
        }
    };
    watch.abort();
    result
}

fn log_model(m: &LoadedModel, async_workers: usize) {
    tracing::info!(
        context = m.context,
        trained_context = m.n_ctx_train,
        parameters = m.n_params,
        size_mib = m.size_bytes / (1024 * 1024),
        load_ms = m.load_time.as_millis() as u64,
        chat_template = m.renderer,
        "model loaded"
    );
    if let Some(caps) = &m.template_caps {
        tracing::info!(capabilities = %caps, "chat template");
    }
    let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
    tracing::info!(
        parallel = m.parallel,
        context_per_slot = m.context,
        kv_cache_mib_per_slot = mib(m.kv_bytes_per_slot),
        kv_cache_mib_total = mib(m.kv_bytes_per_slot * u64::from(m.parallel)),
        threads = m.threads,
        threads_batch = m.threads_batch,
        async_workers,
        "engine: continuous batching"
    );
}
