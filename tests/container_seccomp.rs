//! policy/seccomp.json, tested under a real container runtime: the binary and its shared
//! libraries go into an image made from scratch (no registry is reachable), which runs
//! with the profile, no capabilities, a read-only root filesystem and a non-root user.
//! It must start, serve a streamed and a plain chat completion over TLS, pass the sandbox
//! self-test and stop cleanly on SIGTERM.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "llama-gguf-inference-seccomp-test:latest";

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker must be installed for this test (CI has it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The binary's shared libraries, from ldd.
fn shared_libraries(bin: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// Build the image from the binary and its libraries (a few seconds).
fn build_image() {
    let stage = tempfile::tempdir().unwrap();
    let mut files = shared_libraries(BIN);
    files.push(PathBuf::from(BIN));
    for f in &files {
        let dest = if f == Path::new(BIN) {
            stage.path().join("app/llama-gguf-inference")
        } else {
            stage.path().join(f.strip_prefix("/").unwrap())
        };
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(f, &dest).unwrap();
    }
    // What a minimal real image has: an account database and a /tmp mount point.
    std::fs::create_dir_all(stage.path().join("etc")).unwrap();
    std::fs::write(
        stage.path().join("etc/passwd"),
        "root:x:0:0::/:/sbin/nologin\nnobody:x:65534:65534::/:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::create_dir_all(stage.path().join("tmp")).unwrap();
    let tar = stage.path().join("../image.tar");
    let tar = tar.to_str().unwrap();
    let status = Command::new("tar")
        .args(["-C", stage.path().to_str().unwrap(), "-cf", tar, "."])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, out) = docker(&["import", tar, IMAGE]);
    let _ = std::fs::remove_file(tar);
    assert!(ok, "docker import failed: {out}");
}

/// A config directory readable by uid 65534: config, keys and a pre-made certificate.
fn config_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sandbox: String::new(), // started as uid 65534 by the runtime: nothing to switch
        ..Options::default()
    };
    let config = write_config(dir.path(), &opts);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&model_path().display().to_string(), "/model/model.gguf");
    std::fs::write(&config, text).unwrap();
    // check-config on the host creates the self-signed certificate the container reuses
    // (its root filesystem and this directory are read-only there).
    let (code, _, err) = run_cli(
        &[
            "check-config",
            "--config",
            dir.path().join("config.toml").to_str().unwrap(),
        ],
        None,
    );
    // The model path only exists inside the container; everything else must be fine.
    assert!(
        code == 1 && err.contains("model.path") && !err.contains("tls"),
        "{err}"
    );
    assert!(
        dir.path().join("tls/key.pem").exists(),
        "check-config did not create the certificate"
    );
    for entry in walk(dir.path()) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `docker run` arguments shared by both runs: the hardening under test.
fn run_args(conf: &Path) -> Vec<String> {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/seccomp.json");
    [
        "--network=host",
        "--user=65534:65534",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--tmpfs=/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--security-opt=seccomp={}", profile.display()),
        format!("--volume={}:/model/model.gguf:ro", model_path().display()),
        format!("--volume={}:/etc/lgi:ro", conf.display()),
        IMAGE.to_string(),
        "/app/llama-gguf-inference".into(),
        "serve".into(),
        "--config".into(),
        "/etc/lgi/config.toml".into(),
    ])
    .collect()
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_appliance_runs_under_the_container_seccomp_profile() {
    build_image();
    let conf = config_dir();

    // 1. The sandbox self-test passes inside the container, under the profile.
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(run_args(conf.path()));
    args.push("--self-test-sandbox".into());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = docker(&args_ref);
    assert!(ok, "self-test in the container failed:\n{out}");
    assert!(out.contains("probes as expected"), "{out}");
    assert!(!out.contains("[FAIL]"), "{out}");

    // 2. Serve for real.
    let name = format!("lgi-seccomp-test-{}", std::process::id());
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), format!("--name={name}")];
    args.extend(run_args(conf.path()));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = docker(&args_ref);
    assert!(ok, "docker run failed: {out}");
    let container = Container(name);

    let deadline = Instant::now() + Duration::from_secs(60);
    let (api, health) = loop {
        let (_, logs) = docker(&["logs", &container.0]);
        if let Some(line) = logs.lines().find(|l| l.contains(" listening ")) {
            if logs.contains(" ready") {
                break listening_addrs(line);
            }
        }
        assert!(Instant::now() < deadline, "never ready:\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    };

    let ca = conf.path().join("tls/cert.pem");
    let mut c = Client::connect(api, &ca).await;
    let chat = json!({"model": MODEL_ID, "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}]});
    let r = c.post("/v1/chat/completions", Some(ALICE), &chat).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let r = c.post("/v1/chat/completions", Some(ALICE), &stream).await;
    assert_eq!(r.status, 200);
    let events = sse_events(&r.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let (code, metrics) = health_get(health, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("lgi_seccomp_denied_total 0"), "{metrics}");

    // The runtime's filter and both of ours are stacked on the serving process.
    let (_, pid) = docker(&["inspect", "-f", "{{.State.Pid}}", &container.0]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "Seccomp_filters"), "3", "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");

    // 3. SIGTERM (docker stop) drains and exits 0.
    let (ok, out) = docker(&["stop", "-t", "30", &container.0]);
    assert!(ok, "{out}");
    let (_, code) = docker(&["inspect", "-f", "{{.State.ExitCode}}", &container.0]);
    let (_, logs) = docker(&["logs", &container.0]);
    assert_eq!(code.trim(), "0", "exit code; logs:\n{logs}");
    assert!(logs.contains("SIGTERM: shutting down"), "{logs}");
}
