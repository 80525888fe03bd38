//! Privileges: leave root for the configured user, clear all five capability sets and
//! prove it by reading them back, set no_new_privs and make the process non-dumpable.
//!
//! SECURITY: this runs while `main` is the only thread. `setuid`/`setgid`/`setgroups`
//! from glibc change every thread anyway, but `capset` and `prctl(PR_SET_NO_NEW_PRIVS)`
//! act on the calling thread only, so a thread created earlier would keep its
//! capabilities; `lock_down` refuses to run with more than one thread.

use crate::config::SandboxConfig;
use caps::{CapSet, CapsHashSet};
use std::ffi::CString;

/// The five capability sets of a Linux thread, in the order /proc/PID/status lists them.
pub const CAP_SETS: [(CapSet, &str); 5] = [
    (CapSet::Inheritable, "inheritable"),
    (CapSet::Permitted, "permitted"),
    (CapSet::Effective, "effective"),
    (CapSet::Bounding, "bounding"),
    (CapSet::Ambient, "ambient"),
];

/// A resolved account: numeric ids plus the names for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
}

/// Who the process will be after lock-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Started as root: switch to this account.
    Switch(Account),
    /// Started as root with `allow_root = true` and no user: stay uid 0, no capabilities.
    StayRoot,
    /// Started as another user: nothing to switch; `user` is ignored.
    Unprivileged { uid: u32, gid: u32 },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Switch(a) => write!(
                f,
                "setgroups([]), setgid({}) [{}], setuid({}) [{}]",
                a.gid, a.group, a.uid, a.user
            ),
            Identity::StayRoot => write!(
                f,
                "stays uid 0 (sandbox.allow_root = true), every capability cleared"
            ),
            Identity::Unprivileged { uid, gid } => write!(
                f,
                "already unprivileged (uid {uid}, gid {gid}); sandbox.user is not needed"
            ),
        }
    }
}

/// Decide the identity from the config and the uid we were started with.
pub fn resolve(cfg: &SandboxConfig, euid: u32, egid: u32) -> Result<Identity, String> {
    if euid != 0 {
        return Ok(Identity::Unprivileged {
            uid: euid,
            gid: egid,
        });
    }
    let Some(user) = &cfg.user else {
        return if cfg.allow_root {
            Ok(Identity::StayRoot)
        } else {
            Err(
                "sandbox.user: started as root but no user is set. Running llama.cpp as root \
                 would let a memory-safety bug in the model loader own every root-owned file. \
                 Set sandbox.user to an unprivileged account (e.g. `useradd --system llama` \
                 and user = \"llama\"), or set sandbox.allow_root = true to accept the risk"
                    .into(),
            )
        };
    };
    let account = lookup(user, cfg.group.as_deref())?;
    if account.uid == 0 && !cfg.allow_root {
        return Err(format!(
            "sandbox.user: {user:?} is uid 0; choose an unprivileged account \
             (or set sandbox.allow_root = true to accept the risk)"
        ));
    }
    if account.gid == 0 && !cfg.allow_root {
        return Err(format!(
            "sandbox.group: resolves to gid 0 ({}); choose an unprivileged group",
            account.group
        ));
    }
    Ok(Identity::Switch(account))
}

/// The effective uid and gid of this process.
pub fn current_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid take no arguments and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Resolve `user` (and optionally `group`) through the system's account database (NSS),
/// before lock-down: afterwards /etc/passwd is not readable.
fn lookup(user: &str, group: Option<&str>) -> Result<Account, String> {
    let (uid, primary_gid, user_name) = match user.parse::<u32>() {
        Ok(uid) => match passwd_by_uid(uid)? {
            Some((gid, name)) => (uid, Some(gid), name),
            None => (uid, None, user.to_string()),
        },
        Err(_) => match passwd_by_name(user)? {
            Some((uid, gid)) => (uid, Some(gid), user.to_string()),
            None => {
                return Err(format!(
                    "sandbox.user: no user named {user:?} on this host; create it \
                     (useradd --system --no-create-home {user}) or give a numeric uid"
                ))
            }
        },
    };
    let (gid, group_name) = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => (gid, g.to_string()),
            Err(_) => match group_by_name(g)? {
                Some(gid) => (gid, g.to_string()),
                None => {
                    return Err(format!(
                        "sandbox.group: no group named {g:?} on this host; create it or give a numeric gid"
                    ))
                }
            },
        },
        None => match primary_gid {
            Some(gid) => (gid, format!("primary group of {user}")),
            None => {
                return Err(format!(
                    "sandbox.group: uid {uid} has no account entry, so it has no primary group; \
                     set sandbox.group to a numeric gid"
                ))
            }
        },
    };
    Ok(Account {
        uid,
        gid,
        user: user_name,
        group: group_name,
    })
}

/// Buffer for getpw*_r/getgr*_r string fields. Account entries are short; 64 KiB
/// covers a group with thousands of members.
const NSS_BUFFER: usize = 64 * 1024;

fn passwd_by_name(name: &str) -> Result<Option<(u32, u32)>, String> {
    let c = CString::new(name).map_err(|_| "sandbox.user: contains a NUL byte".to_string())?;
    // SAFETY: `pwd` is plain data the call fills in; `buf` outlives the call and its length
    // is passed; `result` is set to null or to &pwd. We copy the two integers out before
    // `buf` is dropped, so no pointer into it escapes.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; NSS_BUFFER];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(format!(
                "sandbox.user: account lookup failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        Ok((!result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid)))
    }
}

fn passwd_by_uid(uid: u32) -> Result<Option<(u32, String)>, String> {
    // SAFETY: as in passwd_by_name; the name is copied into an owned String while `buf`
    // is alive, after checking it is non-null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; NSS_BUFFER];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 {
            return Err(format!(
                "sandbox.user: account lookup failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() {
            return Ok(None);
        }
        let name = if pwd.pw_name.is_null() {
            uid.to_string()
        } else {
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned()
        };
        Ok(Some((pwd.pw_gid, name)))
    }
}

fn group_by_name(name: &str) -> Result<Option<u32>, String> {
    let c = CString::new(name).map_err(|_| "sandbox.group: contains a NUL byte".to_string())?;
    // SAFETY: as in passwd_by_name, for struct group.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; NSS_BUFFER];
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(format!(
                "sandbox.group: group lookup failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        Ok((!result.is_null()).then_some(grp.gr_gid))
    }
}

/// What `drop_privileges` achieved, for the start-up status line.
#[derive(Debug, Clone)]
pub struct PrivilegeStatus {
    pub uid: u32,
    pub gid: u32,
    /// Sets still non-empty after clearing (only `bounding`, and only when started
    /// without CAP_SETPCAP, can remain; see `drop_privileges`).
    pub kept: Vec<&'static str>,
}

/// Switch identity, clear every capability set, verify; then no_new_privs and
/// non-dumpable. Errors are fatal: start-up stops.
pub fn drop_privileges(identity: &Identity) -> Result<PrivilegeStatus, String> {
    // SECURITY: the bounding set can only shrink with CAP_SETPCAP, which root still has
    // here and loses at setuid, so it is cleared first. Without CAP_SETPCAP (started as
    // an ordinary user) it stays as the parent left it: harmless once no_new_privs is set
    // and exec is denied, and systemd's CapabilityBoundingSet= empties it from outside.
    let can_shrink_bounding = caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP)
        .map_err(|e| format!("cannot read capabilities: {e}"))?;
    if can_shrink_bounding {
        caps::clear(None, CapSet::Bounding)
            .map_err(|e| format!("cannot clear the capability bounding set: {e}"))?;
    }

    if let Identity::Switch(a) = identity {
        // SAFETY: setgroups with a count of 0 reads no memory; setgid/setuid take integers.
        // glibc applies all three to every thread (there is only one here anyway).
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(format!(
                    "setgroups([]): {}",
                    std::io::Error::last_os_error()
                ));
            }
            if libc::setgid(a.gid) != 0 {
                return Err(format!(
                    "sandbox.group: setgid({}): {}",
                    a.gid,
                    std::io::Error::last_os_error()
                ));
            }
            if libc::setuid(a.uid) != 0 {
                return Err(format!(
                    "sandbox.user: setuid({}): {}",
                    a.uid,
                    std::io::Error::last_os_error()
                ));
            }
        }
        verify_ids(a)?;
    }

    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("cannot clear capabilities: {e}"))?;
    }
    let mut kept = Vec::new();
    for (set, name) in CAP_SETS {
        let held: CapsHashSet =
            caps::read(None, set).map_err(|e| format!("cannot read capabilities: {e}"))?;
        if !held.is_empty() {
            if matches!(set, CapSet::Bounding) && !can_shrink_bounding {
                kept.push(name);
                continue;
            }
            return Err(format!(
                "the {name} capability set still holds {} capabilities after clearing",
                held.len()
            ));
        }
    }

    // SAFETY: prctl with integer arguments only.
    unsafe {
        // SECURITY: no exec can ever gain privileges (setuid binaries, file capabilities);
        // also what allows an unprivileged seccomp filter.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(format!(
                "PR_SET_NO_NEW_PRIVS: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
            return Err("PR_SET_NO_NEW_PRIVS did not stick".into());
        }
        // SECURITY: no core dump (it would hold keys' HMAC secret and prompts) and no
        // ptrace attach from other processes of the same user.
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(format!(
                "PR_SET_DUMPABLE: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let (uid, gid) = current_ids();
    Ok(PrivilegeStatus { uid, gid, kept })
}

/// prctl(PR_SET_MDWE) (Linux 6.3): refuse any mapping that is, or later becomes, both
/// writable and executable, and any mapping that gains execute permission.
const PR_SET_MDWE: libc::c_int = 65;
const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;

/// SECURITY: memory-deny-write-execute for the whole process (inherited by every thread
/// and kept for its lifetime): injected code cannot be mapped executable. Returns the
/// status text; an old kernel (EINVAL) is reported, not fatal.
pub fn deny_write_execute(cuda: bool) -> String {
    if cuda {
        // The CUDA driver may JIT PTX into writable+executable memory; not verified on
        // a GPU host yet, so not enforced there (policy/README.md).
        return "off (CUDA build)".into();
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) };
    if rc == 0 {
        "on".into()
    } else {
        format!(
            "unsupported ({}; needs Linux 6.3)",
            std::io::Error::last_os_error()
        )
    }
}

/// Real, effective and saved ids all switched, no supplementary groups, and uid 0 is
/// out of reach.
fn verify_ids(a: &Account) -> Result<(), String> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: the out-pointers are valid u32 locals; getgroups(0, null) only counts.
    let (groups, regain) = unsafe {
        libc::getresuid(&mut r, &mut e, &mut s);
        libc::getresgid(&mut rg, &mut eg, &mut sg);
        let groups = libc::getgroups(0, std::ptr::null_mut());
        (groups, if a.uid != 0 { libc::setuid(0) } else { -1 })
    };
    if [r, e, s] != [a.uid; 3] || [rg, eg, sg] != [a.gid; 3] {
        return Err(format!(
            "identity switch incomplete: uids {r}/{e}/{s}, gids {rg}/{eg}/{sg}"
        ));
    }
    if groups != 0 {
        return Err(format!(
            "{groups} supplementary groups remain after setgroups([])"
        ));
    }
    if regain == 0 {
        return Err("setuid(0) succeeded after dropping root".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(user: Option<&str>, allow_root: bool) -> SandboxConfig {
        SandboxConfig {
            user: user.map(String::from),
            allow_root,
            ..SandboxConfig::default()
        }
    }

    #[test]
    fn root_without_a_user_is_refused_unless_allowed() {
        let e = resolve(&cfg(None, false), 0, 0).unwrap_err();
        assert!(e.starts_with("sandbox.user:"), "{e}");
        assert!(e.contains("allow_root"), "{e}");
        assert_eq!(resolve(&cfg(None, true), 0, 0).unwrap(), Identity::StayRoot);
    }

    #[test]
    fn non_root_start_keeps_its_ids() {
        assert_eq!(
            resolve(&cfg(Some("nobody"), false), 1000, 1000).unwrap(),
            Identity::Unprivileged {
                uid: 1000,
                gid: 1000
            }
        );
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let Identity::Switch(a) = resolve(&cfg(Some("nobody"), false), 0, 0).unwrap() else {
            panic!("expected a switch");
        };
        assert_eq!(a.uid, 65534);
        assert_eq!(a.user, "nobody");
        let Identity::Switch(b) = resolve(&cfg(Some("65534"), false), 0, 0).unwrap() else {
            panic!("expected a switch");
        };
        assert_eq!((b.uid, b.gid), (a.uid, a.gid));
        let e = resolve(&cfg(Some("no-such-user-lgi"), false), 0, 0).unwrap_err();
        assert!(e.contains("no user named"), "{e}");
        let e = resolve(&cfg(Some("root"), false), 0, 0).unwrap_err();
        assert!(e.contains("uid 0"), "{e}");
    }
}
