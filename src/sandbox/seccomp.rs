//! seccomp: a deny list of syscalls the appliance never makes once the model is loaded,
//! applied to every thread at once (SECCOMP_FILTER_FLAG_TSYNC).
//!
//! SECURITY: a deny list, not an allow list, on purpose: llama.cpp, CUDA and glibc make
//! syscalls we do not control, and a missed entry in an allow list is an outage, while
//! this list targets what an exploit needs to escalate or escape (exec, ptrace, kernel
//! attack surface such as bpf/io_uring/user namespaces, new network sockets). The host
//! can add the allow list in policy/seccomp.json on top.
//!
//! In `eperm` mode a denied call traps (SECCOMP_RET_TRAP): the kernel never runs it and
//! sends SIGSYS, whose handler below makes the call return EPERM and counts it; the
//! counts are logged and exported on /metrics. Installing another handler cannot make a
//! denied call run. In `kill` mode the kernel kills the process and logs the event.

use crate::config::SeccompMode;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A denied syscall: its name, number, and when it is denied.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub when: When,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// `socket`/`socketpair` whose domain (argument 0) is not AF_UNIX.
    DomainNotUnix,
    /// `clone` whose flags (argument 0) create a namespace.
    NewNamespace,
}

const fn always(name: &'static str, nr: libc::c_long) -> Denied {
    Denied {
        name,
        nr,
        when: When::Always,
    }
}

/// The deny list. Each group says what it stops.
pub const DENY_LIST: &[Denied] = &[
    // Running anything else: the classic second stage of an exploit.
    always("execve", libc::SYS_execve),
    always("execveat", libc::SYS_execveat),
    // Reading or writing other processes' memory.
    always("ptrace", libc::SYS_ptrace),
    always("process_vm_readv", libc::SYS_process_vm_readv),
    always("process_vm_writev", libc::SYS_process_vm_writev),
    // Filesystem namespace changes.
    always("mount", libc::SYS_mount),
    always("umount2", libc::SYS_umount2),
    always("pivot_root", libc::SYS_pivot_root),
    always("chroot", libc::SYS_chroot),
    always("move_mount", libc::SYS_move_mount),
    always("open_tree", libc::SYS_open_tree),
    always("fsopen", libc::SYS_fsopen),
    always("fsconfig", libc::SYS_fsconfig),
    always("fsmount", libc::SYS_fsmount),
    always("fspick", libc::SYS_fspick),
    always("mount_setattr", libc::SYS_mount_setattr),
    // Kernel attack surface an unprivileged process can otherwise reach.
    always("bpf", libc::SYS_bpf),
    always("perf_event_open", libc::SYS_perf_event_open),
    always("userfaultfd", libc::SYS_userfaultfd),
    always("io_uring_setup", libc::SYS_io_uring_setup),
    always("io_uring_enter", libc::SYS_io_uring_enter),
    always("io_uring_register", libc::SYS_io_uring_register),
    always("keyctl", libc::SYS_keyctl),
    always("add_key", libc::SYS_add_key),
    always("request_key", libc::SYS_request_key),
    always("personality", libc::SYS_personality),
    // Kernel code loading.
    always("kexec_load", libc::SYS_kexec_load),
    always("kexec_file_load", libc::SYS_kexec_file_load),
    always("init_module", libc::SYS_init_module),
    always("finit_module", libc::SYS_finit_module),
    always("delete_module", libc::SYS_delete_module),
    // Namespaces (user namespaces are a large unprivileged kernel surface).
    always("unshare", libc::SYS_unshare),
    always("setns", libc::SYS_setns),
    Denied {
        name: "clone",
        nr: libc::SYS_clone,
        when: When::NewNamespace,
    },
    // New sockets. The two listeners exist before lock-down and accept() makes no socket;
    // UDP is outside Landlock's TCP rules, so new inet sockets are denied outright.
    // AF_UNIX stays (journald logging, the CUDA runtime's IPC).
    Denied {
        name: "socket",
        nr: libc::SYS_socket,
        when: When::DomainNotUnix,
    },
    Denied {
        name: "socketpair",
        nr: libc::SYS_socketpair,
        when: When::DomainNotUnix,
    },
];

/// Namespace-creating clone flags (CLONE_NEWTIME shares its bit with the exit signal in
/// clone(2) and can only be set through clone3/unshare, which are covered).
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// Denials counted by the SIGSYS handler, one slot per DENY_LIST entry.
static DENIED_COUNTS: [AtomicU64; DENY_LIST.len()] = [const { AtomicU64::new(0) }; DENY_LIST.len()];
/// x32-ABI syscalls denied (any number with `X32_SYSCALL_BIT` set).
static X32_DENIED: AtomicU64 = AtomicU64::new(0);

/// Set in the syscall number of the x86_64 kernel's x32 ABI. The deny list matches exact
/// numbers, so without a filter of its own `unshare | X32_SYSCALL_BIT` would be a
/// different number that passes (on kernels built with x32 support).
pub const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;

/// Total denied calls so far (for /metrics).
pub fn denied_total() -> u64 {
    DENIED_COUNTS
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum::<u64>()
        + X32_DENIED.load(Ordering::Relaxed)
}

/// (name, count) for every entry denied at least once.
pub fn denied_counts() -> Vec<(&'static str, u64)> {
    DENY_LIST
        .iter()
        .zip(DENIED_COUNTS.iter())
        .map(|(d, c)| (d.name, c.load(Ordering::Relaxed)))
        .chain(std::iter::once((
            "x32 (any)",
            X32_DENIED.load(Ordering::Relaxed),
        )))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Install the filters on every thread. Returns the status for the start-up line.
pub fn apply(mode: SeccompMode) -> Result<String, String> {
    let action = match mode {
        SeccompMode::Off => return Ok("off (sandbox.seccomp = \"off\")".into()),
        SeccompMode::Eperm => {
            install_sigsys_handler()?;
            SeccompAction::Trap
        }
        SeccompMode::Kill => SeccompAction::KillProcess,
    };
    let arch = target_arch()?;
    // clone3 passes its flags in memory, where seccomp cannot look; answering ENOSYS makes
    // glibc fall back to clone(2), whose flags the deny list checks. Not counted: it is
    // routine for every new thread.
    let clone3 = enosys_filter(&[libc::SYS_clone3])
        .map_err(|e| format!("sandbox.seccomp: cannot build the clone3 filter: {e}"))?;
    let deny = SeccompFilter::new(deny_rules()?, SeccompAction::Allow, action.clone(), arch)
        .and_then(seccompiler::BpfProgram::try_from)
        .map_err(|e| format!("sandbox.seccomp: cannot build the deny list: {e}"))?;
    let x32 = x32_filter(&action);
    for program in [&clone3, &deny, &x32] {
        seccompiler::apply_filter_all_threads(program)
            .map_err(|e| format!("sandbox.seccomp: cannot install the filter: {e}"))?;
    }
    Ok(format!(
        "enforced ({} syscalls and the x32 ABI denied on all threads, {})",
        DENY_LIST.len(),
        match mode {
            SeccompMode::Kill => "kill process",
            _ => "EPERM, counted",
        }
    ))
}

/// SECURITY: deny every x32-ABI syscall (number with `X32_SYSCALL_BIT`). The appliance
/// never uses that ABI, and seccompiler's rules match exact numbers only, so this is a
/// small hand-written program: load the architecture; if it is x86_64, load the number
/// and deny it when the bit is set; allow everything else (the deny list still applies,
/// being a separate filter: the kernel runs all of them and the strictest answer wins).
/// On other architectures there is no x32 ABI and the program allows everything.
fn x32_filter(action: &SeccompAction) -> seccompiler::BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const OFFSET_NR: u32 = 0; // struct seccomp_data { int nr; __u32 arch; ... }
    const OFFSET_ARCH: u32 = 4;
    let deny: u32 = match action {
        SeccompAction::KillProcess => 0x8000_0000,
        _ => 0x0003_0000, // SECCOMP_RET_TRAP: the SIGSYS handler answers EPERM, counted
    };
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    if !cfg!(target_arch = "x86_64") {
        return vec![insn(RET_K, 0, 0, RET_ALLOW)];
    }
    vec![
        insn(LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // other arch: allow
        insn(LD_W_ABS, 0, 0, OFFSET_NR),
        insn(JSET_K, 0, 1, X32_SYSCALL_BIT as u32),
        insn(RET_K, 0, 0, deny),
        insn(RET_K, 0, 0, RET_ALLOW),
    ]
}

/// A filter answering ENOSYS ("not implemented") to every syscall in `nrs`.
fn enosys_filter(nrs: &[libc::c_long]) -> Result<seccompiler::BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = nrs.iter().map(|&nr| (nr, vec![])).collect();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        target_arch()?,
    )
    .and_then(seccompiler::BpfProgram::try_from)
    .map_err(|e| e.to_string())
}

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        format!(
            "sandbox.seccomp: no filter for architecture {}; set sandbox.seccomp = \"off\"",
            std::env::consts::ARCH
        )
    })
}

fn deny_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let cond = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .map_err(|e| format!("sandbox.seccomp: {e}"))
    };
    let mut rules = BTreeMap::new();
    for d in DENY_LIST {
        let conditions = match d.when {
            When::Always => vec![],
            When::DomainNotUnix => {
                vec![
                    SeccompRule::new(vec![cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?])
                        .map_err(|e| e.to_string())?,
                ]
            }
            // Rules in the list are OR-ed: any namespace flag set matches.
            When::NewNamespace => CLONE_NAMESPACE_FLAGS
                .iter()
                .map(|&f| {
                    SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(f), f)?])
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
        };
        rules.insert(d.nr, conditions);
    }
    Ok(rules)
}

/// The SIGSYS part of `siginfo_t` on 64-bit Linux: three ints, padding to the 8-byte
/// aligned union, then `_sigsys { void *call_addr; int syscall; unsigned arch; }`.
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// si_code of a SIGSYS sent by seccomp.
const SYS_SECCOMP: libc::c_int = 1;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t and ucontext_t for an SA_SIGINFO
    // handler; SigsysInfo matches the 64-bit layout (see its comment). Only atomics and
    // a register store happen here, both async-signal-safe.
    unsafe {
        let info = &*(info as *const SigsysInfo);
        if info.code != SYS_SECCOMP {
            return; // a SIGSYS sent with kill(): nothing to answer
        }
        let nr = info.syscall as libc::c_long;
        if let Some(i) = DENY_LIST.iter().position(|d| d.nr == nr) {
            DENIED_COUNTS[i].fetch_add(1, Ordering::Relaxed);
        } else if nr & X32_SYSCALL_BIT != 0 {
            X32_DENIED.fetch_add(1, Ordering::Relaxed);
        }
        set_return_value(ctx as *mut libc::ucontext_t, -(libc::EPERM as i64));
    }
}

/// Make the trapped syscall return `value` when the handler returns.
///
/// # Safety
/// `uc` must be the ucontext passed to a SIGSYS handler.
#[cfg(target_arch = "x86_64")]
unsafe fn set_return_value(uc: *mut libc::ucontext_t, value: i64) {
    (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = value;
}

/// Make the trapped syscall return `value` when the handler returns.
///
/// # Safety
/// `uc` must be the ucontext passed to a SIGSYS handler.
#[cfg(target_arch = "aarch64")]
unsafe fn set_return_value(uc: *mut libc::ucontext_t, value: i64) {
    (*uc).uc_mcontext.regs[0] = value as u64;
}

fn install_sigsys_handler() -> Result<(), String> {
    // SAFETY: a zeroed sigaction is valid; we fill in the handler (a plain extern "C" fn
    // that only touches atomics and the ucontext) and an empty mask before installing it.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "sandbox.seccomp: cannot install the SIGSYS handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Test-only: make the Landlock syscalls fail with ENOSYS on this thread (and threads
/// created later), exactly as on a kernel built without Landlock.
#[cfg(feature = "test-hooks")]
pub fn hide_landlock_for_tests() -> Result<(), String> {
    let program = enosys_filter(&[
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_restrict_self,
    ])?;
    // SAFETY: prctl with integer arguments; no_new_privs is set again by lock-down anyway.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    seccompiler::apply_filter(&program).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_list_compiles_to_bpf_and_has_no_duplicates() {
        let rules = deny_rules().unwrap();
        assert_eq!(rules.len(), DENY_LIST.len(), "a syscall is listed twice");
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Trap,
            target_arch().unwrap(),
        )
        .unwrap();
        let prog = seccompiler::BpfProgram::try_from(f).unwrap();
        assert!(prog.len() > DENY_LIST.len());
        assert_eq!(rules_for("clone").len(), CLONE_NAMESPACE_FLAGS.len());
    }

    fn rules_for(name: &str) -> Vec<SeccompRule> {
        let nr = DENY_LIST.iter().find(|d| d.name == name).unwrap().nr;
        deny_rules().unwrap().remove(&nr).unwrap()
    }

    #[test]
    fn the_list_covers_what_the_issue_names() {
        for name in [
            "execve",
            "execveat",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "init_module",
            "finit_module",
            "unshare",
            "setns",
            "personality",
            "socket",
        ] {
            assert!(DENY_LIST.iter().any(|d| d.name == name), "{name} missing");
        }
    }
}
