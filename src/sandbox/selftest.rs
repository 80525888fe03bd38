//! `serve --self-test-sandbox`: after the full start-up (lock-down, model load, seccomp),
//! a freshly spawned thread tries what an exploit would try and reports each result,
//! then the server exits. Only reachable from the command line, never over HTTP.
//!
//! Each probe exercises one layer, so a silently broken layer shows up as its own line:
//! the TCP probes use sockets created *before* lock-down (a new inet socket would be
//! stopped by seccomp first and prove nothing about Landlock), and the abstract-socket
//! probe connects to a listener created outside the sandbox.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// What a probe should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allowed,
    Errno(i32),
    /// Not meaningful with this configuration (e.g. seccomp off).
    Skip,
}

/// Resources the probes need that must exist before lock-down.
pub struct Kit {
    tcp_for_connect: OwnedFd,
    tcp_for_bind: OwnedFd,
    _abstract_listener: UnixListener,
    abstract_name: Vec<u8>,
    api_port: u16,
    model: PathBuf,
    /// Whether the kernel answers x32-ABI syscalls (probed before our filter).
    x32: X32,
}

/// What the x32 probe can know before our seccomp filter is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum X32 {
    /// The kernel runs x32 syscalls (built with CONFIG_X86_X32_ABI).
    KernelHasIt,
    /// It answers ENOSYS.
    KernelLacksIt,
    /// A seccomp filter from outside (a container runtime's) is already in force; such
    /// filters may kill the process on an x32 call, so the probe is not made.
    HostFilter,
}

/// Create the kit; call before lock-down.
pub fn prepare(api_port: u16, model: PathBuf) -> Result<Kit, String> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("llama-gguf-inference-self-test-{}", std::process::id()).into_bytes();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)
        .map_err(|e| format!("self-test: {e}"))?;
    let listener =
        UnixListener::bind_addr(&addr).map_err(|e| format!("self-test: abstract socket: {e}"))?;
    Ok(Kit {
        tcp_for_connect: tcp_socket()?,
        tcp_for_bind: tcp_socket()?,
        _abstract_listener: listener,
        abstract_name: name,
        api_port,
        model,
        x32: if host_seccomp_filter() {
            X32::HostFilter
        } else if x32_getpid().is_ok() {
            X32::KernelHasIt
        } else {
            X32::KernelLacksIt
        },
    })
}

/// Whether this process already runs under a seccomp filter (`Seccomp: 2` in
/// /proc/self/status); called before ours is installed, so it is the host's.
fn host_seccomp_filter() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(true)
}

/// `getpid` through the x32 ABI: the pid on a kernel built with x32 support, ENOSYS on
/// one without (and EPERM under our seccomp filter, either way).
fn x32_getpid() -> Result<(), i32> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: getpid takes no arguments and changes nothing.
        check(unsafe { libc::syscall(super::seccomp::X32_SYSCALL_BIT | libc::SYS_getpid) })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err(libc::ENOSYS)
    }
}

fn tcp_socket() -> Result<OwnedFd, String> {
    // SAFETY: socket(2) returns a new descriptor we own, or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("self-test: socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One line of the report.
pub struct Outcome {
    pub name: &'static str,
    pub layer: &'static str,
    pub expect: Expect,
    pub got: Result<(), i32>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        match self.expect {
            Expect::Skip => true,
            Expect::Allowed => self.got.is_ok(),
            Expect::Errno(e) => self.got == Err(e),
        }
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ENOENT => "ENOENT".into(),
        other => format!("errno {other}"),
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let got = match (self.expect, self.got) {
            (Expect::Skip, _) => "-".to_string(),
            (_, Ok(())) => "allowed".to_string(),
            (_, Err(e)) => errno_name(e),
        };
        let expect = match self.expect {
            Expect::Allowed => "allowed".to_string(),
            Expect::Errno(e) => errno_name(e),
            Expect::Skip => "skipped".to_string(),
        };
        let verdict = match (self.expect, self.ok()) {
            (Expect::Skip, _) => "skip",
            (_, true) => "ok",
            (_, false) => "FAIL",
        };
        write!(
            f,
            "self-test {:<22} {:<8} got {:<8} expected {:<8} [{}]",
            self.name, self.layer, got, expect, verdict
        )
    }
}

/// Convert a raw syscall return into a result with the errno.
fn check(rc: libc::c_long) -> Result<(), i32> {
    if rc < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    } else {
        Ok(())
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Run every probe on a new thread (created after lock-down, so it inherits everything)
/// and return the outcomes.
pub fn run(kit: Kit, seccomp_on: bool, mdwe_on: bool) -> Vec<Outcome> {
    let handle = std::thread::Builder::new()
        .name("self-test".into())
        .spawn(move || probes(&kit, seccomp_on, mdwe_on));
    match handle.map(|h| h.join()) {
        Ok(Ok(out)) => out,
        _ => vec![Outcome {
            name: "spawn probe thread",
            layer: "-",
            expect: Expect::Allowed,
            got: Err(-1),
        }],
    }
}

fn probes(kit: &Kit, seccomp_on: bool, mdwe_on: bool) -> Vec<Outcome> {
    let seccomp = |e: i32| {
        if seccomp_on {
            Expect::Errno(e)
        } else {
            Expect::Skip
        }
    };
    let mut out = Vec::new();
    let mut probe = |name, layer, expect, got| {
        out.push(Outcome {
            name,
            layer,
            expect,
            got,
        })
    };

    // Control: the one file the engine needs must still be readable.
    let model = CString::new(kit.model.as_os_str().as_encoded_bytes()).unwrap_or_default();
    probe(
        "read model file",
        "control",
        Expect::Allowed,
        open_close(&model, libc::O_RDONLY),
    );
    probe(
        "read /etc/passwd",
        "landlock",
        Expect::Errno(libc::EACCES),
        open_close(&cstr("/etc/passwd"), libc::O_RDONLY),
    );
    let tmp = cstr(&format!(
        "/tmp/llama-gguf-inference-self-test-{}",
        std::process::id()
    ));
    let created = open_close(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL);
    if created.is_ok() {
        // SAFETY: tmp is NUL-terminated; removes the file the failed probe created.
        unsafe { libc::unlink(tmp.as_ptr()) };
    }
    probe(
        "write a file in /tmp",
        "landlock",
        Expect::Errno(libc::EACCES),
        created,
    );
    probe(
        "connect 127.0.0.1:api",
        "landlock",
        Expect::Errno(libc::EACCES),
        address_call(
            libc::SYS_connect,
            kit.tcp_for_connect.as_raw_fd(),
            kit.api_port,
        ),
    );
    probe(
        "bind a third port",
        "landlock",
        Expect::Errno(libc::EACCES),
        address_call(libc::SYS_bind, kit.tcp_for_bind.as_raw_fd(), 0),
    );
    probe(
        "connect abstract unix",
        "landlock",
        Expect::Errno(libc::EPERM),
        connect_abstract(&kit.abstract_name),
    );
    // SAFETY: getppid has no arguments and cannot fail.
    let ppid = unsafe { libc::getppid() };
    probe(
        "signal parent process",
        "landlock",
        // As PID 1 of a container there is no visible parent (and kill(0) would mean
        // "my own process group").
        if ppid > 0 {
            Expect::Errno(libc::EPERM)
        } else {
            Expect::Skip
        },
        if ppid > 0 {
            // SAFETY: kill with signal 0 only checks permission; nothing is delivered.
            check(unsafe { libc::syscall(libc::SYS_kill, ppid, 0) })
        } else {
            Err(0)
        },
    );
    probe(
        "exec /bin/true",
        if seccomp_on { "seccomp" } else { "landlock" },
        Expect::Errno(if seccomp_on {
            libc::EPERM
        } else {
            libc::EACCES
        }),
        exec_in_child("/bin/true"),
    );
    probe(
        "ptrace attach parent",
        if seccomp_on { "seccomp" } else { "landlock" },
        Expect::Errno(libc::EPERM),
        ptrace_attach_parent(),
    );
    probe(
        "setgroups (capability)",
        "caps",
        Expect::Errno(libc::EPERM),
        // SAFETY: raw setgroups with an empty list reads no memory and, unlike glibc's
        // wrapper, affects only this thread if it were ever allowed.
        check(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) }),
    );
    probe(
        "unshare user namespace",
        "seccomp",
        seccomp(libc::EPERM),
        // SAFETY: integer argument only.
        check(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) }),
    );
    probe(
        "new UDP socket",
        "seccomp",
        seccomp(libc::EPERM),
        new_socket(libc::AF_INET, libc::SOCK_DGRAM),
    );
    probe(
        "io_uring_setup",
        "seccomp",
        seccomp(libc::EPERM),
        io_uring_setup(),
    );
    // SECURITY: the x32 bit must not be a way around the deny list. Denied whether or not
    // this kernel has x32 (the name says which, so a run on a kernel without it is not
    // mistaken for proof that x32 numbers would be stopped by the kernel itself).
    let (x32_name, x32_expect) = match kit.x32 {
        X32::KernelHasIt => ("x32 getpid (kernel has x32)", seccomp(libc::EPERM)),
        X32::KernelLacksIt => ("x32 getpid (kernel has no x32)", seccomp(libc::EPERM)),
        X32::HostFilter => ("x32 getpid (not made: host seccomp filter)", Expect::Skip),
    };
    let x32_expect = if cfg!(target_arch = "x86_64") {
        x32_expect
    } else {
        Expect::Skip
    };
    probe(
        x32_name,
        "seccomp",
        x32_expect,
        if x32_expect == Expect::Skip {
            Err(0)
        } else {
            x32_getpid()
        },
    );
    probe(
        "map memory W+X",
        "mdwe",
        if mdwe_on {
            Expect::Errno(libc::EACCES)
        } else {
            Expect::Skip
        },
        map_write_execute(),
    );
    out
}

fn map_write_execute() -> Result<(), i32> {
    // SAFETY: an anonymous private mapping of one page, unmapped again if it succeeded.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(-1));
        }
        libc::munmap(p, 4096);
    }
    Ok(())
}

fn open_close(path: &CString, flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: path is NUL-terminated and outlives the call; a returned fd is closed.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o600,
        );
        check(fd)?;
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

fn sockaddr_v4(port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; zero is a valid bit pattern.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    sa
}

/// connect(2) or bind(2) (`nr`) of `fd` to 127.0.0.1:`port`.
fn address_call(nr: libc::c_long, fd: libc::c_int, port: u16) -> Result<(), i32> {
    let sa = sockaddr_v4(port);
    // SAFETY: `sa` is a valid sockaddr_in for the duration of the call, its size passed.
    check(unsafe {
        libc::syscall(
            nr,
            fd,
            &sa as *const libc::sockaddr_in,
            std::mem::size_of::<libc::sockaddr_in>(),
        )
    })
}

fn new_socket(domain: libc::c_int, ty: libc::c_int) -> Result<(), i32> {
    // SAFETY: socket(2) with integer arguments; a returned fd is closed.
    unsafe {
        let fd = libc::syscall(libc::SYS_socket, domain, ty | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

fn connect_abstract(name: &[u8]) -> Result<(), i32> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(|_| -1)?;
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

fn ptrace_attach_parent() -> Result<(), i32> {
    // SAFETY: PTRACE_ATTACH takes a pid and null pointers; if it ever succeeded we detach
    // at once so the parent is left as it was. Without a visible parent (PID 1 of a
    // container) we aim at ourselves' pid 1, i.e. this process, which ptrace refuses too.
    unsafe {
        let ppid = libc::getppid().max(1);
        let rc = libc::syscall(
            libc::SYS_ptrace,
            libc::PTRACE_ATTACH,
            ppid,
            std::ptr::null::<libc::c_void>(),
            std::ptr::null::<libc::c_void>(),
        );
        if rc == 0 {
            libc::syscall(
                libc::SYS_ptrace,
                libc::PTRACE_DETACH,
                ppid,
                std::ptr::null::<libc::c_void>(),
                std::ptr::null::<libc::c_void>(),
            );
        }
        check(rc)
    }
}

fn io_uring_setup() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: params is a writable buffer of the size the kernel expects; a returned fd
    // is closed.
    unsafe {
        let fd = libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr());
        check(fd)?;
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

/// fork, then execve in the child with raw syscalls only; the child's exit status
/// carries the errno back (0: the exec happened and /bin/true ran).
fn exec_in_child(path: &str) -> Result<(), i32> {
    let prog = cstr(path);
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: after fork the child only makes raw syscalls and _exit (async-signal-safe),
    // using memory prepared before the fork; the parent reaps the child.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(-1));
        }
        if pid == 0 {
            libc::syscall(
                libc::SYS_execve,
                prog.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
            );
            let errno = *libc::__errno_location();
            libc::_exit(100 + errno.clamp(0, 150));
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) != pid {
            return Err(-1);
        }
        if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                0 => Ok(()),
                code if code >= 100 => Err(code - 100),
                _ => Err(-1),
            }
        } else {
            Err(-1)
        }
    }
}

/// `--self-test-sandbox`: run the probes on a new thread, print one line each on stdout,
/// fail if any result differs from what the sandbox should produce.
pub async fn report(kit: Kit, seccomp_on: bool, mdwe_on: bool) -> Result<(), String> {
    let before = super::seccomp::denied_total();
    let outcomes = tokio::task::spawn_blocking(move || run(kit, seccomp_on, mdwe_on))
        .await
        .map_err(|e| format!("self-test thread failed: {e}"))?;
    let counted = super::seccomp::denied_total() - before;
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
