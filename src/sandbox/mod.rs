//! The lock-down: what a compromised process is still allowed to do.
//!
//! Applied by `serve` after both listeners are bound and before the tokio runtime, the
//! engine thread and llama.cpp exist, in this order:
//!
//! 1. refuse if `main` is not the only thread (a thread created earlier would escape);
//! 2. `privileges`: leave root for `[sandbox] user`, clear all five capability sets and
//!    read them back, no_new_privs, non-dumpable (and, after Landlock, write-xor-execute
//!    memory on CPU builds);
//! 3. `landlock`: read-only allow list (model, TLS files, CUDA paths on a CUDA build),
//!    TCP bind on the two ports only, no TCP connect, signal and abstract-socket scopes;
//! 4. (after the model is loaded) `seccomp`: a deny list on every thread.
//!
//! `Plan` is the single description of all of it: `policy` prints it, `lock_down` and
//! `seccomp::apply` enforce it, so what an auditor reads is what runs.

// Raw syscalls (prctl, setgroups, seccomp, signal handlers): each use says why it is sound.
#![allow(unsafe_code)]
// Start-up code, before any client connects: indices into fixed tables it owns (the
// seccomp counters, the signal context's registers). No client input reaches it.
#![allow(clippy::indexing_slicing)]

pub mod landlock;
pub mod privileges;
pub mod reread;
pub mod seccomp;
pub mod selftest;

use crate::config::{Config, LandlockMode, SeccompMode};
use std::fmt::Write as _;

/// Everything the sandbox will do for one config on this host.
pub struct Plan {
    pub identity: privileges::Identity,
    pub landlock: landlock::LandlockPlan,
    pub seccomp: SeccompMode,
    pub cuda: bool,
}

/// Build the plan. `ports` are the bound (api, health) ports.
pub fn plan(cfg: &Config, ports: (u16, u16)) -> Result<Plan, String> {
    let (euid, egid) = privileges::current_ids();
    let identity = privileges::resolve(&cfg.sandbox, euid, egid)?;
    let cuda = cfg!(feature = "cuda");
    Ok(Plan {
        identity,
        landlock: landlock::plan(cfg, ports.0, ports.1, cuda)?,
        seccomp: cfg.sandbox.seccomp,
        cuda,
    })
}

/// What `lock_down` achieved, for the start-up status line.
pub struct LockdownStatus {
    pub threads_before: usize,
    pub mdwe: String,
    pub privileges: privileges::PrivilegeStatus,
    pub landlock: String,
    pub landlock_full: bool,
}

/// Threads of this process, from /proc/self/task.
pub fn thread_count() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .map_err(|e| format!("cannot count threads in /proc/self/task: {e}"))
}

/// Steps 1-3 (see the module header). Any failure stops start-up.
pub fn lock_down(plan: &Plan) -> Result<LockdownStatus, String> {
    // Test-only: start a stray thread, as a future dependency might, to prove the check.
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("LGI_TEST_THREAD_BEFORE_LOCKDOWN").is_some() {
        std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(60)));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SECURITY: capset, no_new_privs and Landlock bind the calling thread and its future
    // children only; a thread started before this point would run unconfined.
    let threads_before = thread_count()?;
    if threads_before != 1 {
        return Err(format!(
            "lock-down must run while main is the only thread, but {threads_before} exist; \
             this is a bug (something started a thread before the sandbox)"
        ));
    }
    if plan.cuda {
        // SECURITY: the CUDA driver's JIT cache would need a writable directory; no write
        // access exists after lock-down, so the cache is off (PTX is compiled at each
        // start if the binary lacks code for the GPU). Safe: still single-threaded.
        std::env::set_var("CUDA_CACHE_DISABLE", "1");
    }
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("LGI_TEST_HIDE_LANDLOCK").is_some() {
        seccomp::hide_landlock_for_tests()?;
    }
    let ruleset = landlock::prepare(&plan.landlock)?;
    let privileges = privileges::drop_privileges(&plan.identity)?;
    let (landlock, landlock_full) = landlock::enforce(ruleset, &plan.landlock)?;
    let mdwe = privileges::deny_write_execute(plan.cuda);
    if !landlock_full {
        tracing::warn!(
            status = %landlock,
            "SECURITY WARNING: Landlock is not fully enforced (sandbox.landlock = \"best-effort\"): \
             a compromised process may read files, connect out or bind ports that the policy denies"
        );
    }
    Ok(LockdownStatus {
        threads_before,
        mdwe,
        privileges,
        landlock,
        landlock_full,
    })
}

/// The model must still be readable by the dropped identity through the sandbox; say so
/// clearly instead of letting llama.cpp report a bare load failure.
pub fn check_model_readable(cfg: &Config) -> Result<(), String> {
    match std::fs::File::open(&cfg.model.path) {
        Ok(_) => Ok(()),
        Err(e) => {
            let (uid, gid) = privileges::current_ids();
            Err(format!(
                "model.path ({}): not readable after lock-down as uid {uid} gid {gid}: {e}. \
                 Make the file and every directory above it readable by sandbox.user \
                 (e.g. chmod o+r on the file and o+x on the directories)",
                cfg.model.path.display()
            ))
        }
    }
}

/// The one start-up line with every layer's status (after seccomp is applied).
pub fn status_line(lock: &LockdownStatus, seccomp: &str) -> String {
    let p = &lock.privileges;
    let caps = if p.kept.is_empty() {
        "all 5 sets empty (verified)".to_string()
    } else {
        format!(
            "cleared, but {} kept (started without CAP_SETPCAP)",
            p.kept.join("+")
        )
    };
    format!(
        "sandbox: threads_at_lockdown={} uid={} gid={} capabilities={} no_new_privs=on dumpable=off write_xor_execute={} landlock={} seccomp={}",
        lock.threads_before, p.uid, p.gid, caps, lock.mdwe, lock.landlock, seccomp
    )
}

/// `policy`: the sandbox as an auditor reads it.
pub fn describe(plan: &Plan, config_path: &std::path::Path, ports_known: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sandbox policy for {} ({} build)",
        config_path.display(),
        if plan.cuda { "CUDA" } else { "CPU" }
    );
    let _ = writeln!(
        s,
        "\norder: bind both listeners -> lock down (main is the only thread; checked) -> \
         start runtime and engine -> load model -> seccomp on all threads -> ready -> \
         the API port starts accepting"
    );
    let _ = writeln!(s, "\n[identity]\n  {}", plan.identity);
    let _ = writeln!(
        s,
        "\n[capabilities]\n  clear: {} (each read back; bounding needs CAP_SETPCAP, i.e. a root start)",
        privileges::CAP_SETS
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "\n[prctl]\n  PR_SET_NO_NEW_PRIVS = 1 (verified)\n  PR_SET_DUMPABLE = 0 (no core dumps, no same-user ptrace)\n  PR_SET_MDWE = REFUSE_EXEC_GAIN {}",
        if plan.cuda {
            "(not on CUDA builds: the driver's JIT may need writable+executable memory)"
        } else {
            "(no memory is ever writable and executable; needs Linux 6.3, else reported)"
        }
    );
    if plan.cuda {
        let _ = writeln!(
            s,
            "\n[environment]\n  CUDA_CACHE_DISABLE=1 (no writable JIT cache exists)"
        );
    }
    let l = &plan.landlock;
    let _ = writeln!(
        s,
        "\n[landlock]\n  mode: {} ({}); rights of ABI v6 (Linux 6.12); running kernel: {}",
        match l.mode {
            LandlockMode::Required => "required",
            LandlockMode::BestEffort => "best-effort",
        },
        match l.mode {
            LandlockMode::Required => "start-up fails unless fully enforced",
            LandlockMode::BestEffort => "starts with a warning if not fully enforced",
        },
        landlock::describe_kernel()
    );
    let _ = writeln!(
        s,
        "  handled filesystem rights (denied unless allowed below): {}",
        landlock::access_names(landlock::handled_fs())
    );
    for r in &l.fs {
        let present = if r.path.exists() {
            ""
        } else if r.required {
            "  [MISSING: start-up will fail]"
        } else {
            "  [absent on this host: skipped]"
        };
        let _ = writeln!(
            s,
            "  allow {:<32} {}{}\n        why: {}",
            landlock::access_names(r.access),
            r.path.display(),
            present,
            r.why
        );
    }
    let _ = writeln!(s, "  handled network rights: bind_tcp, connect_tcp");
    for p in &l.bind {
        let port = if p.port == 0 || !ports_known {
            format!("{} (the port bound at start-up)", p.port)
        } else {
            p.port.to_string()
        };
        let _ = writeln!(s, "  allow bind_tcp  port {port:<6} ({})", p.key);
    }
    let _ = writeln!(s, "  connect_tcp: no port allowed");
    let _ = writeln!(
        s,
        "  scopes: abstract_unix_socket, signal (no connecting to abstract sockets or signalling processes outside the sandbox)"
    );
    let _ = writeln!(
        s,
        "  not covered by Landlock ABI v6: UDP and other socket types (seccomp denies creating them), \
         connecting to pathname unix sockets (needs ABI v9; file permissions of the unprivileged user apply)"
    );
    let _ = write!(s, "\n[seccomp]\n  ");
    match plan.seccomp {
        SeccompMode::Off => {
            let _ = writeln!(s, "off (sandbox.seccomp = \"off\")");
        }
        mode => {
            let _ = writeln!(
                s,
                "applied after the model is loaded, to all threads (TSYNC); denied calls {}",
                if mode == SeccompMode::Kill {
                    "kill the process (SECCOMP_RET_KILL_PROCESS, logged by the kernel)"
                } else {
                    "fail with EPERM (SIGSYS trap, counted in lgi_seccomp_denied_total and logged)"
                }
            );
            for d in seccomp::DENY_LIST {
                let when = match d.when {
                    seccomp::When::Always => "",
                    seccomp::When::DomainNotUnix => "  (when domain != AF_UNIX)",
                    seccomp::When::NewNamespace => "  (when flags include CLONE_NEW*)",
                };
                let _ = writeln!(s, "  deny {}{when}", d.name);
            }
            let _ = writeln!(
                s,
                "  clone3 -> ENOSYS (its flags are not visible to seccomp; glibc falls back to clone)"
            );
            let _ = writeln!(
                s,
                "  deny every x32-ABI syscall (number with bit 0x40000000 set; x86_64)"
            );
        }
    }
    s
}
