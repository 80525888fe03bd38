//! Signals and the tasks they drive: SIGTERM/SIGINT stop the server gracefully, SIGHUP
//! reloads the keys file and the TLS certificate, and a watcher logs syscalls seccomp
//! denied.
//!
//! SECURITY: a reload applies a keys file only if all of it is valid, and a certificate
//! only if the pair checks whole (`tls::Reload`); otherwise what is in use stays and the
//! log says why (never a hash, a secret or key material). The two are independent: a
//! broken certificate does not hold back a key rotation, nor the reverse. The SIGSYS
//! handler may only count (it runs in signal context); `log_seccomp_denials` reports.

use crate::api::AppState;
use crate::metrics::Reloaded;
use crate::{keys, sandbox, tls};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often new seccomp denials are logged.
const SECCOMP_LOG_INTERVAL: Duration = Duration::from_secs(5);

fn watch(kind: SignalKind, name: &str) -> Result<Signal, String> {
    signal(kind).map_err(|e| format!("cannot watch {name}: {e}"))
}

/// SIGTERM and SIGINT, watched from start-up on.
pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    pub fn watch() -> Result<Stop, String> {
        Ok(Stop {
            term: watch(SignalKind::terminate(), "SIGTERM")?,
            int: watch(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves to the name of the first of the two that arrives.
    pub async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// SIGHUP, for `reload_on_sighup`.
pub fn hangup() -> Result<Signal, String> {
    watch(SignalKind::hangup(), "SIGHUP")
}

/// SIGHUP: reload the keys file, then the TLS pair when one is configured. Each is
/// applied only when whole and valid, otherwise what is in use stays and the log says
/// why. Requests already authenticated, and connections already established, are not
/// affected either way.
pub async fn reload_on_sighup(
    mut sighup: Signal,
    state: Arc<AppState>,
    keys_path: PathBuf,
    tls: Option<tls::Reload>,
) {
    while sighup.recv().await.is_some() {
        reload_keys(&state, &keys_path).await;
        if let Some(tls) = &tls {
            reload_tls(&state, tls).await;
        }
    }
}

/// Re-read and fully validate the keys file; apply it only if all of it is valid.
async fn reload_keys(state: &AppState, path: &std::path::Path) {
    let file = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || keys::load_keys_file(&file)).await;
    // Err: (what the log says, why), so each refusal keeps its own message.
    let outcome = match loaded {
        Ok(Ok(entries)) => state
            .keys
            .reload(entries)
            .map_err(|e| (NOT_RELOADED, e.to_string())),
        Ok(Err(errors)) => {
            let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            Err((
                FILE_REFUSED,
                format!("{}: {}", path.display(), why.join("; ")),
            ))
        }
        Err(e) => Err((NOT_RELOADED, format!("the reload task failed: {e}"))),
    };
    state.metrics.reloaded(Reloaded::Keys, outcome.is_ok());
    match outcome {
        Ok(s) => tracing::info!(
            keys = state.keys.len(),
            added = s.added,
            removed = s.removed,
            changed = s.changed,
            unchanged = s.unchanged,
            "SIGHUP: keys file reloaded"
        ),
        Err((message, why)) => tracing::error!(problems = %why, "{message}"),
    }
}

/// Re-read the TLS pair; new handshakes use it when it checks whole and is valid now.
async fn reload_tls(state: &AppState, reload: &tls::Reload) {
    let job = reload.clone();
    let outcome = tokio::task::spawn_blocking(move || job.run(time::OffsetDateTime::now_utc()))
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
    state.metrics.reloaded(Reloaded::Tls, outcome.is_ok());
    match outcome {
        Ok(r) => {
            state
                .metrics
                .set_tls_not_after(r.current.validity.not_after.unix_timestamp());
            if r.previous == r.current.fingerprint {
                tracing::info!(sha256 = %r.current.fingerprint, "SIGHUP: TLS certificate re-read, unchanged");
            } else {
                tracing::info!(
                    sha256 = %r.current.fingerprint,
                    previous = %r.previous,
                    not_after = %tls::rfc3339(r.current.validity.not_after),
                    "SIGHUP: TLS certificate reloaded; new handshakes use it, open connections keep the previous one"
                );
            }
        }
        Err(why) => tracing::error!(
            problems = %why,
            "SIGHUP: TLS certificate refused, the previous certificate stays in use (fix the files and send SIGHUP again)"
        ),
    }
}

const NOT_RELOADED: &str = "SIGHUP: keys not reloaded; the previous keys stay in use";
const FILE_REFUSED: &str =
    "SIGHUP: keys file refused, the previous keys stay in use (fix the file and send SIGHUP again)";

/// Log each denied syscall, once per interval with the new count.
pub async fn log_seccomp_denials() {
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
