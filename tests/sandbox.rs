//! The lock-down, proven from outside the process: per-thread kernel state read from
//! /proc, the self-test's forbidden actions, and the failure modes of start-up.

mod common;

use common::*;
use serde_json::json;

/// `serve --self-test-sandbox` with `sandbox` as the [sandbox] section.
fn self_test(sandbox: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sandbox: sandbox.into(),
        ..Options::default()
    };
    let config = write_config(dir.path(), &opts);
    run_cli_env(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--self-test-sandbox",
        ],
        None,
        env,
    )
}

/// The self-test line for `probe`, e.g. "... got EACCES expected EACCES [ok]".
fn probe_line<'a>(stdout: &'a str, probe: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("self-test {probe} ")))
        .unwrap_or_else(|| panic!("no line for probe {probe:?} in:\n{stdout}"))
}

fn assert_probe(stdout: &str, probe: &str, got: &str) {
    let line = probe_line(stdout, probe);
    assert!(
        line.contains(&format!("got {got} ")) && line.ends_with("[ok]"),
        "probe {probe:?}: expected {got} and [ok], got: {line}"
    );
}

#[test]
fn self_test_every_forbidden_action_fails_with_the_expected_errno() {
    let (code, out, err) = self_test(&default_sandbox_section(), &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_probe(&out, "read model file", "allowed");
    assert_probe(&out, "read /etc/passwd", "EACCES");
    assert_probe(&out, "write a file in /tmp", "EACCES");
    assert_probe(&out, "connect 127.0.0.1:api", "EACCES");
    assert_probe(&out, "bind a third port", "EACCES");
    assert_probe(&out, "connect abstract unix", "EPERM");
    assert_probe(&out, "signal parent process", "EPERM");
    assert_probe(&out, "exec /bin/true", "EPERM");
    assert_probe(&out, "ptrace attach parent", "EPERM");
    assert_probe(&out, "setgroups (capability)", "EPERM");
    assert_probe(&out, "unshare user namespace", "EPERM");
    assert_probe(&out, "new UDP socket", "EPERM");
    assert_probe(&out, "io_uring_setup", "EPERM");
    assert_probe(&out, "map memory W+X", "EACCES");
    // The x32 ABI is denied whether or not this kernel has it; the line says which.
    let x32 = if out.contains("self-test x32 getpid (kernel has x32) ") {
        "x32 getpid (kernel has x32)"
    } else {
        "x32 getpid (kernel has no x32)"
    };
    assert_probe(&out, x32, "EPERM");
    assert!(
        out.contains("self-test result: 15 of 15 probes as expected"),
        "{out}"
    );
    // ptrace, unshare, the UDP socket, io_uring and the x32 call trapped in this process
    // (the exec was in a forked child): the SIGSYS handler counted each.
    assert!(
        out.contains("self-test seccomp denials counted: 5"),
        "{out}"
    );
    // The start-up line reports every layer, and lock-down found main alone.
    let status = err
        .lines()
        .find(|l| l.contains("sandbox: threads_at_lockdown="))
        .unwrap_or_else(|| panic!("no sandbox status line:\n{err}"));
    for part in [
        "threads_at_lockdown=1 ",
        "capabilities=all 5 sets empty (verified)",
        "no_new_privs=on",
        "write_xor_execute=on",
        "landlock=enforced",
        "seccomp=enforced",
    ] {
        assert!(status.contains(part), "{part:?} missing from: {status}");
    }
    if is_root() {
        assert!(status.contains("uid=65534 gid=65534"), "{status}");
    }
}

#[test]
fn landlock_alone_stops_exec_when_seccomp_is_off() {
    // Without seccomp, exec must still fail: Landlock grants no execute right anywhere.
    let sandbox = format!("{}seccomp = \"off\"\n", section_header());
    let (code, out, err) = self_test(&sandbox, &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_probe(&out, "exec /bin/true", "EACCES");
    assert_probe(&out, "read /etc/passwd", "EACCES");
    assert!(probe_line(&out, "new UDP socket").ends_with("[skip]"));
    assert!(err.contains("seccomp=off"), "{err}");
}

/// "[sandbox]\n" plus the user line when running as root.
fn section_header() -> String {
    let s = default_sandbox_section();
    if s.is_empty() {
        "[sandbox]\n".into()
    } else {
        s
    }
}

#[test]
fn required_landlock_on_a_kernel_without_it_refuses_to_start() {
    // The test hook makes the Landlock syscalls fail with ENOSYS, as on a kernel built
    // without Landlock; the real detection path runs.
    let (code, out, err) = self_test(&section_header(), &[("LGI_TEST_HIDE_LANDLOCK", "1")]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("sandbox.landlock = \"required\", but this kernel has no Landlock (ENOSYS)"),
        "{err}"
    );
    assert!(err.contains("sandbox.landlock = \"best-effort\""), "{err}");
    assert!(
        !err.contains(" ready"),
        "must stop before loading the model:\n{err}"
    );
}

#[test]
fn best_effort_landlock_starts_with_a_loud_warning_and_the_self_test_shows_the_gap() {
    let sandbox = format!("{}landlock = \"best-effort\"\n", section_header());
    let (code, out, err) = self_test(&sandbox, &[("LGI_TEST_HIDE_LANDLOCK", "1")]);
    assert!(
        err.contains("SECURITY WARNING: Landlock is not fully enforced"),
        "{err}"
    );
    assert!(err.contains("landlock=NOT enforced"), "{err}");
    // The self-test reports what is then no longer stopped, and fails.
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        probe_line(&out, "read /etc/passwd").ends_with("[FAIL]"),
        "{out}"
    );
    assert_probe(&out, "exec /bin/true", "EPERM");
}

/// One field of a /proc/PID/task/TID/status file.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} missing from status:\n{status}"))
}

#[tokio::test]
async fn every_thread_has_no_capabilities_no_new_privs_and_seccomp() {
    let server = Server::start();
    // Run a generation first so llama.cpp's worker threads exist.
    let mut c = server.client().await;
    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &json!({"model": MODEL_ID, "prompt": "Hello", "max_tokens": 4}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let tasks = format!("/proc/{}/task", server.pid());
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&tasks).unwrap() {
        let dir = entry.unwrap().path();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let name = status_field(&status, "Name").to_string();
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(&status, cap),
                "0000000000000000",
                "thread {name}: {cap}"
            );
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "thread {name}");
        assert_eq!(status_field(&status, "Seccomp"), "2", "thread {name}");
        assert_eq!(
            status_field(&status, "Seccomp_filters"),
            "3",
            "thread {name}"
        );
        if is_root() {
            assert_eq!(
                status_field(&status, "Uid"),
                "65534\t65534\t65534\t65534",
                "thread {name}"
            );
            assert_eq!(status_field(&status, "Groups"), "", "thread {name}");
        }
        threads.push(name);
    }
    // main, tokio workers, the engine thread, and llama.cpp's compute thread(s), which it
    // starts during the first generation (after seccomp) and which inherit the engine
    // thread's name.
    assert!(threads.iter().any(|t| t == "async"), "threads: {threads:?}");
    assert!(
        threads.iter().filter(|t| *t == "engine").count() >= 2,
        "expected the engine thread plus llama.cpp's worker(s): {threads:?}"
    );
    // Normal serving trips no seccomp rule.
    assert_eq!(server.metric("lgi_seccomp_denied_total"), 0);
}

#[test]
fn policy_prints_every_rule_the_server_applies() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Options::default());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\nhealth_listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:9443\"\nhealth_listen = \"127.0.0.1:9081\"",
    );
    std::fs::write(&config, text).unwrap();
    let (code, out, err) = run_cli(&["policy", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let model = model_path();
    for expected in [
        format!("allow read_file                        {}", model.display()),
        "allow bind_tcp  port 9443".into(),
        "allow bind_tcp  port 9081".into(),
        "connect_tcp: no port allowed".into(),
        "scopes: abstract_unix_socket, signal".into(),
        "clear: inheritable, permitted, effective, bounding, ambient".into(),
        "PR_SET_NO_NEW_PRIVS = 1".into(),
        "deny execve\n".into(),
        "deny socket  (when domain != AF_UNIX)".into(),
        "deny every x32-ABI syscall".into(),
        "mode: required".into(),
    ] {
        assert!(out.contains(&expected), "{expected:?} missing from:\n{out}");
    }
    if is_root() {
        assert!(out.contains("setuid(65534) [nobody]"), "{out}");
    }
}

#[test]
fn a_root_start_without_a_sandbox_user_is_refused_with_the_reason() {
    require_root("only a root start switches users");
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sandbox: String::new(),
        ..Options::default()
    };
    let config = write_config(dir.path(), &opts);
    let (code, _, err) = run_cli(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sandbox.user: started as root but no user is set"),
        "{err}"
    );
    assert!(err.contains("sandbox.allow_root = true"), "{err}");
    let (code, _, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1, "check-config must catch it too: {err}");
}

#[test]
fn a_model_the_sandbox_user_cannot_read_stops_start_up_with_a_clear_message() {
    require_root("needs a root start that drops to another user");
    use std::os::unix::fs::PermissionsExt;
    // The model reached through a directory only root may enter.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = private.path().join("model.gguf");
    std::os::unix::fs::symlink(model_path(), &link).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Options::default());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &model_path().display().to_string(),
        &link.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let (code, _, err) = run_cli(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not readable after lock-down as uid 65534"),
        "{err}"
    );
    assert!(err.contains("model.path"), "{err}");
}

#[test]
fn seccomp_kill_mode_kills_the_process_on_the_first_denied_call() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sandbox: format!("{}seccomp = \"kill\"\n", section_header()),
        ..Options::default()
    };
    let config = write_config(dir.path(), &opts);
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--self-test-sandbox",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seccomp=enforced"), "{stderr}");
    assert!(
        stderr.contains("kill process"),
        "status line must say kill: {stderr}"
    );
    // The self-test's first denied call in this process (ptrace) is fatal.
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "status {:?}; stdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_thread_started_before_lock_down_stops_start_up() {
    // The test hook starts one stray thread right before lock-down.
    let (code, out, err) = self_test(
        &default_sandbox_section(),
        &[("LGI_TEST_THREAD_BEFORE_LOCKDOWN", "1")],
    );
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("lock-down must run while main is the only thread, but 2 exist"),
        "{err}"
    );
}

#[test]
fn a_keys_file_in_a_folder_holding_other_files_is_refused_with_what_to_do() {
    // keys_file = "/var/lib/keys" would have made all of /var/lib readable: Landlock's
    // folder rule (needed for key rotation) covers the folder's whole subtree.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Options::default());
    std::fs::write(dir.path().join("database.sqlite"), "someone else's data").unwrap();
    for cmd in ["check-config", "serve"] {
        let (code, _, err) = run_cli(&[cmd, "--config", config.to_str().unwrap()], None);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(
            err.contains("auth.keys_file")
                && err.contains("database.sqlite")
                && err.contains("Move the keys file into a folder of its own"),
            "{cmd}: {err}"
        );
    }
    // The same folder with only the server's own files is accepted.
    std::fs::remove_file(dir.path().join("database.sqlite")).unwrap();
    let (code, out, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
}
