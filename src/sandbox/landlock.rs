//! Landlock: the kernel-enforced allow list for files, TCP ports and IPC scopes.
//!
//! SECURITY: pinned to Landlock ABI v6 (Linux 6.12) so the handled set is one we tested:
//! every filesystem right ABI v6 knows (read, write, execute, make/remove, refer,
//! truncate, device ioctl) is handled, which means denied unless a rule below allows it;
//! both TCP rights (bind, connect) are handled; both scopes (abstract unix sockets and
//! signals to processes outside the sandbox) are on. No rule grants any write, create
//! or execute right on a file or directory. Newer kernels enforce exactly this set.

use crate::config::{Config, LandlockMode};
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::path::{Path, PathBuf};

/// The Landlock ABI whose rights we handle (see the module header).
pub const PINNED_ABI: ABI = ABI::V6;
const PINNED_ABI_NUMBER: i32 = 6;

/// One filesystem rule: what may be done beneath `path`, and why it is needed.
#[derive(Debug, Clone)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
    pub why: String,
    /// Start-up fails if a required path is missing; optional ones are skipped.
    pub required: bool,
}

/// One TCP port that may be bound.
#[derive(Debug, Clone)]
pub struct PortRule {
    pub port: u16,
    pub key: &'static str,
}

/// Everything `apply` will hand to the kernel; `policy` prints the same value.
#[derive(Debug, Clone)]
pub struct LandlockPlan {
    pub mode: LandlockMode,
    pub fs: Vec<FsRule>,
    pub bind: Vec<PortRule>,
}

pub(super) fn read_file() -> BitFlags<AccessFs> {
    AccessFs::ReadFile.into()
}

/// Read a directory tree (open files, list directories), nothing else.
fn read_tree() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// Read and map libraries executable (the CUDA runtime dlopens libcuda after lock-down).
fn read_exec_tree() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute
}

/// A GPU device node: open read/write and send ioctls (how CUDA talks to the driver).
fn device_rw_ioctl() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev
}

/// Build the rules for this config. `api_port`/`health_port` are the ports actually
/// bound (a configured port 0 becomes the kernel's choice).
pub fn plan(
    cfg: &Config,
    api_port: u16,
    health_port: u16,
    cuda: bool,
) -> Result<LandlockPlan, String> {
    let mut fs = vec![FsRule {
        path: cfg.model.path.clone(),
        access: read_file(),
        why: "model.path: llama.cpp opens and maps the weights after lock-down".into(),
        required: true,
    }];
    // Re-read on SIGHUP: the TLS pair and the keys file (`reread.rs` decides how far
    // each rule reaches).
    fs.extend(super::reread::tls_rules(cfg)?);
    fs.push(super::reread::keys_rule(cfg)?);
    for p in &cfg.sandbox.extra_read_paths {
        fs.push(FsRule {
            path: p.clone(),
            access: read_tree(),
            why: "sandbox.extra_read_paths".into(),
            required: true,
        });
    }
    if cuda {
        fs.extend(cuda_rules(&list_dev_nvidia()));
    }
    Ok(LandlockPlan {
        mode: cfg.sandbox.landlock,
        fs,
        bind: vec![
            PortRule {
                port: api_port,
                key: "server.listen",
            },
            PortRule {
                port: health_port,
                key: "server.health_listen",
            },
        ],
    })
}

/// /dev/nvidia0, /dev/nvidia1, ... present now (one node per GPU).
fn list_dev_nvidia() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("nvidia"))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    out.sort();
    out
}

/// What the CUDA runtime and driver touch after lock-down (model load initialises CUDA).
/// Missing paths are skipped: hosts differ in which of these exist.
fn cuda_rules(gpus: &[PathBuf]) -> Vec<FsRule> {
    let mut rules = Vec::new();
    let mut add = |path: &str, access: BitFlags<AccessFs>, why: &str| {
        rules.push(FsRule {
            path: PathBuf::from(path),
            access,
            why: why.into(),
            required: false,
        })
    };
    add(
        "/dev/nvidiactl",
        device_rw_ioctl(),
        "CUDA driver control device",
    );
    add(
        "/dev/nvidia-uvm",
        device_rw_ioctl(),
        "CUDA unified memory device",
    );
    add(
        "/dev/nvidia-uvm-tools",
        device_rw_ioctl(),
        "CUDA unified memory (opened by the runtime at init)",
    );
    add(
        "/dev/nvidia-caps",
        read_tree(),
        "MIG capability nodes (read-only)",
    );
    add(
        "/proc/driver/nvidia",
        read_tree(),
        "driver parameters and GPU list",
    );
    add(
        "/sys/module/nvidia",
        read_tree(),
        "driver version and parameters",
    );
    add(
        "/sys/devices",
        read_tree(),
        "PCI topology of the GPUs (read-only)",
    );
    add(
        "/etc/ld.so.cache",
        read_file(),
        "library lookup for libcuda.so.1",
    );
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets",
        "/usr/local/nvidia/lib64",
    ] {
        add(
            dir,
            read_exec_tree(),
            "CUDA driver and runtime libraries (dlopened during model load)",
        );
    }
    for gpu in gpus {
        rules.push(FsRule {
            path: gpu.clone(),
            access: device_rw_ioctl(),
            why: "GPU device node".into(),
            required: false,
        });
    }
    rules
}

/// Landlock ABI of the running kernel: `Ok(n)`, or the errno explaining its absence.
pub fn kernel_abi() -> Result<i32, std::io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel only
    // returns the ABI number; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(v as i32)
    }
}

/// One-word description of the kernel's Landlock support, for messages.
pub fn describe_kernel() -> String {
    match kernel_abi() {
        Ok(n) => format!("kernel Landlock ABI v{n}"),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            "Landlock is built into this kernel but not enabled (add landlock to the lsm= boot parameter)".into()
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            "this kernel has no Landlock (ENOSYS)".into()
        }
        Err(e) => format!("Landlock unavailable: {e}"),
    }
}

/// A ruleset whose path rules were opened (with the start-up identity, so the paths
/// resolve even where the sandbox user could not list a parent directory), not yet
/// enforced.
pub struct Prepared {
    ruleset: RulesetCreated,
    path_rules: usize,
}

/// Check kernel support against the mode and open every rule's path. Call before the
/// privilege drop; `enforce` after it.
pub fn prepare(plan: &LandlockPlan) -> Result<Prepared, String> {
    let kernel = describe_kernel();
    let supported = kernel_abi().is_ok_and(|n| n >= PINNED_ABI_NUMBER);
    if plan.mode == LandlockMode::Required && !supported {
        return Err(format!(
            "sandbox.landlock = \"required\", but {kernel}; this build needs ABI v{PINNED_ABI_NUMBER} \
             (Linux 6.12 or newer with Landlock enabled) to confine files, TCP ports and IPC. \
             Run on such a kernel, or set sandbox.landlock = \"best-effort\" to start with \
             weaker isolation (not recommended on an internet-facing host)"
        ));
    }
    let level = match plan.mode {
        LandlockMode::Required => CompatLevel::HardRequirement,
        LandlockMode::BestEffort => CompatLevel::BestEffort,
    };
    build(plan, level)
        .map_err(|e| format!("sandbox.landlock: cannot build the ruleset ({kernel}): {e}"))
}

/// Enforce on this thread and every thread created after it. Returns the status text
/// for the start-up line, and whether everything was enforced.
pub fn enforce(prepared: Prepared, plan: &LandlockPlan) -> Result<(String, bool), String> {
    let kernel = describe_kernel();
    let status = prepared
        .ruleset
        .restrict_self()
        .map_err(|e| format!("sandbox.landlock: cannot enforce the ruleset ({kernel}): {e}"))?;
    let fully = status.ruleset == RulesetStatus::FullyEnforced;
    let text = match status.ruleset {
        RulesetStatus::FullyEnforced => format!(
            "enforced (ABI v{PINNED_ABI_NUMBER} rules, {kernel}; {} path rules, bind {}, no connect, scopes signal+abstract-unix)",
            prepared.path_rules,
            plan.bind
                .iter()
                .map(|p| p.port.to_string())
                .collect::<Vec<_>>()
                .join("+"),
        ),
        RulesetStatus::PartiallyEnforced => {
            format!("PARTIALLY enforced ({kernel}; rights newer than the kernel are not restricted)")
        }
        RulesetStatus::NotEnforced => format!("NOT enforced ({kernel})"),
    };
    if plan.mode == LandlockMode::Required && !fully {
        return Err(format!(
            "sandbox.landlock = \"required\", but the ruleset is {text}; set \
             sandbox.landlock = \"best-effort\" to start anyway"
        ));
    }
    Ok((text, fully))
}

fn build(plan: &LandlockPlan, level: CompatLevel) -> Result<Prepared, String> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(PINNED_ABI))
        .map_err(|e| e.to_string())?
        .handle_access(AccessNet::from_all(PINNED_ABI))
        .map_err(|e| e.to_string())?
        .scope(Scope::from_all(PINNED_ABI))
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    let mut path_rules = 0;
    for rule in &plan.fs {
        let fd = match PathFd::new(&rule.path) {
            Ok(fd) => fd,
            Err(_) if !rule.required => continue,
            Err(e) => return Err(format!("{} ({}): {e}", rule.path.display(), rule.why)),
        };
        let access = if is_dir(&rule.path) {
            rule.access
        } else {
            // Directory-only rights cannot be granted on a file.
            rule.access & AccessFs::from_file(PINNED_ABI)
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", rule.path.display()))?;
        path_rules += 1;
    }
    for p in &plan.bind {
        ruleset = ruleset
            .add_rule(NetPort::new(p.port, AccessNet::BindTcp))
            .map_err(|e| format!("{} port {}: {e}", p.key, p.port))?;
    }
    Ok(Prepared {
        ruleset,
        path_rules,
    })
}

fn is_dir(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_dir())
}

/// Names of the rights in `access`, for `policy` output.
pub fn access_names(access: BitFlags<AccessFs>) -> String {
    access
        .iter()
        .map(|a| match a {
            AccessFs::Execute => "execute",
            AccessFs::WriteFile => "write_file",
            AccessFs::ReadFile => "read_file",
            AccessFs::ReadDir => "read_dir",
            AccessFs::RemoveDir => "remove_dir",
            AccessFs::RemoveFile => "remove_file",
            AccessFs::MakeChar => "make_char",
            AccessFs::MakeDir => "make_dir",
            AccessFs::MakeReg => "make_reg",
            AccessFs::MakeSock => "make_sock",
            AccessFs::MakeFifo => "make_fifo",
            AccessFs::MakeBlock => "make_block",
            AccessFs::MakeSym => "make_sym",
            AccessFs::Refer => "refer",
            AccessFs::Truncate => "truncate",
            AccessFs::IoctlDev => "ioctl_dev",
            _ => "other",
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every filesystem right the ruleset handles (denied unless a rule allows it).
pub fn handled_fs() -> BitFlags<AccessFs> {
    AccessFs::from_all(PINNED_ABI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rule_grants_write_create_or_execute_outside_cuda_devices_and_libraries() {
        let cfg = crate::config::Config::parse(
            "[auth]\nkeys_file = \"k\"\n[tls]\nself_signed_dir = \"tls\"\n[model]\npath = \"m.gguf\"\n[sandbox]\nextra_read_paths = [\"x\"]\n",
            Path::new("/srv"),
        )
        .unwrap();
        let p = plan(&cfg, 8443, 8081, false).unwrap();
        let forbidden = AccessFs::WriteFile
            | AccessFs::Execute
            | AccessFs::Truncate
            | AccessFs::MakeReg
            | AccessFs::RemoveFile
            | AccessFs::IoctlDev;
        for r in &p.fs {
            assert!(!r.access.intersects(forbidden), "{r:?}");
        }
        assert_eq!(p.fs[0].path, Path::new("/srv/m.gguf"));
        assert_eq!(
            p.fs.len(),
            5,
            "model, cert, key, keys folder, extra: {:?}",
            p.fs
        );
        assert_eq!(
            p.bind.iter().map(|b| b.port).collect::<Vec<_>>(),
            vec![8443, 8081]
        );

        let gpus = [PathBuf::from("/dev/nvidia0")];
        let cuda = cuda_rules(&gpus);
        for r in &cuda {
            if r.access.contains(AccessFs::WriteFile) || r.access.contains(AccessFs::IoctlDev) {
                assert!(r.path.to_string_lossy().starts_with("/dev/nvidia"), "{r:?}");
            }
            if r.access.contains(AccessFs::Execute) {
                assert!(r.path.starts_with("/usr"), "{r:?}");
            }
        }
        assert!(cuda.iter().any(|r| r.path == Path::new("/dev/nvidia0")));
    }

    #[test]
    fn the_handled_set_is_every_abi_v6_filesystem_right() {
        assert_eq!(handled_fs().len(), 16);
        assert_eq!(access_names(read_exec_tree()), "execute,read_file,read_dir");
    }
}
