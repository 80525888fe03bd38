//! The CPU container image (image/Dockerfile.cpu), built with `image/build cpu` (its base
//! made from Debian packages: no registry is reachable) and run exactly as README.md's
//! `docker run` block says: all capabilities dropped, no-new-privileges, the repo's
//! seccomp profile, read-only root, the image's non-root user, config/keys/model mounted
//! read-only. Driven over TLS: models, a chat and a stream, health and metrics on the
//! health port, the Docker HEALTHCHECK (the binary's own `healthcheck`), the sandbox
//! status in its log and in /proc, a key rotation with SIGHUP, and `docker stop`.
//!
//! The first build takes ~12 minutes on 2 cores (llama.cpp); later ones reuse Docker's
//! layer cache.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "llama-gguf-inference:cpu";
/// The image's numeric user (image/Dockerfile.cpu `USER`).
const APP_UID: u32 = 65532;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `docker run` command of README.md (the block after `<!-- docker-run -->`), as
/// words, with line continuations joined.
fn readme_docker_run() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let after = readme
        .split_once("<!-- docker-run -->")
        .expect("README.md has a <!-- docker-run --> block")
        .1;
    let block = after
        .split_once("```sh\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let words: Vec<String> = block
        .replace("\\\n", " ")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(words.first().map(String::as_str), Some("docker"));
    words
}

/// Replace `from` by `to` in the README's words; the README must contain it.
fn substitute(words: &mut [String], from: &str, to: &str) {
    let mut hit = false;
    for w in words.iter_mut() {
        if w.contains(from) {
            *w = w.replace(from, to);
            hit = true;
        }
    }
    assert!(hit, "README's docker run line no longer contains {from:?}");
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

fn write_keys(conf: &Path, cred: &str) {
    let path = conf.join("keys");
    let tmp = conf.join("keys.new");
    std::fs::write(
        &tmp,
        format!(
            "{}:{}\n",
            cred.split_once(':').unwrap().0,
            cheap_hash(secret(cred))
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The host folders the README tells the operator to make.
struct Folders {
    _root: tempfile::TempDir,
    config: PathBuf,
    models: PathBuf,
    state: PathBuf,
}

fn folders() -> Folders {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = root.path().join("config");
    let models = root.path().join("models");
    let state = root.path().join("state");
    for d in [&config, &models, &state] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The shipped container config, unchanged.
    std::fs::copy(repo().join("image/config.toml"), config.join("config.toml")).unwrap();
    std::fs::set_permissions(
        config.join("config.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    write_keys(&config, ALICE);
    std::fs::copy(model_path(), models.join("model.gguf")).unwrap();
    std::fs::set_permissions(
        models.join("model.gguf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // The only writable mount: the image's user owns it.
    std::os::unix::fs::chown(&state, Some(APP_UID), Some(APP_UID)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    Folders {
        _root: root,
        config,
        models,
        state,
    }
}

#[tokio::test]
async fn the_cpu_image_runs_as_the_readme_says_and_serves_over_tls() {
    assert!(
        is_root(),
        "this test bind-mounts folders owned by uid {APP_UID}: run it as root (CI does)"
    );
    let build = Command::new("bash")
        .arg(repo().join("image/build"))
        .arg("cpu")
        .output()
        .unwrap();
    let build_log = format!(
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(
        build.status.success(),
        "image/build cpu failed:\n{build_log}"
    );
    println!("{}", build_log.lines().last().unwrap_or_default());

    // The runtime image: the binary and its libraries only, the numeric user, the
    // binary as entrypoint and as healthcheck.
    let (_, user) = docker(&["image", "inspect", "-f", "{{.Config.User}}", IMAGE]);
    assert_eq!(user.trim(), format!("{APP_UID}:{APP_UID}"));
    let (_, entry) = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Entrypoint}}",
        IMAGE,
    ]);
    assert_eq!(entry.trim(), "[\"/usr/local/bin/llama-gguf-inference\"]");
    let (_, health) = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Healthcheck.Test}}",
        IMAGE,
    ]);
    assert!(health.contains("\"healthcheck\""), "{health}");
    let name = format!("lgi-image-test-{}", std::process::id());
    let (ok, out) = docker(&["create", "--name", &format!("{name}-files"), IMAGE]);
    assert!(ok, "{out}");
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {name}-files | tar -t"))
        .output()
        .unwrap();
    let _ = docker(&["rm", &format!("{name}-files")]);
    let files = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        files.contains("usr/local/bin/llama-gguf-inference"),
        "{files}"
    );
    for absent in ["bin/sh", "bin/bash", "usr/bin/apt", "usr/bin/dpkg"] {
        assert!(
            !files.lines().any(|l| l.trim_end_matches('/') == absent),
            "{absent} is in the runtime image"
        );
    }

    let f = folders();
    let (api_port, health_port) = (free_port(), free_port());
    let mut run = readme_docker_run();
    substitute(&mut run, "--name=llm", &format!("--name={name}"));
    substitute(&mut run, "8443:8443", &format!("127.0.0.1:{api_port}:8443"));
    substitute(
        &mut run,
        "127.0.0.1:9090:9090",
        &format!("127.0.0.1:{health_port}:9090"),
    );
    substitute(&mut run, "/srv/llm/config", f.config.to_str().unwrap());
    substitute(&mut run, "/srv/llm/models", f.models.to_str().unwrap());
    substitute(&mut run, "/srv/llm/state", f.state.to_str().unwrap());
    substitute(
        &mut run,
        "policy/seccomp.json",
        repo().join("policy/seccomp.json").to_str().unwrap(),
    );
    for hardening in [
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--read-only",
    ] {
        assert!(
            run.iter().any(|w| w == hardening),
            "README lost {hardening}"
        );
    }
    assert_eq!(run.last().map(String::as_str), Some(IMAGE));

    // 1. The sandbox self-test inside the container, with the same flags.
    let mut self_test: Vec<String> = vec!["run".into(), "--rm".into()];
    self_test.extend(
        run[2..run.len() - 1]
            .iter()
            .filter(|w| {
                !w.starts_with("--name=")
                    && !w.starts_with("-p")
                    && *w != "-d"
                    && !w.starts_with("127.0.0.1:")
            })
            .cloned(),
    );
    self_test.extend(
        [
            IMAGE,
            "serve",
            "--config",
            "/etc/llama-gguf-inference/config.toml",
            "--self-test-sandbox",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = self_test.iter().map(String::as_str).collect();
    let (ok, out) = docker(&args);
    assert!(
        ok && out.contains("probes as expected") && !out.contains("[FAIL]"),
        "self-test in the container failed:\n{out}"
    );
    // Docker's filter is in force before ours and may kill x32 calls: the probe says it
    // was not made rather than passing silently.
    assert!(
        out.contains("self-test x32 getpid (not made: host seccomp filter)"),
        "{out}"
    );

    // 2. Serve, exactly as the README says.
    let args: Vec<&str> = run[1..].iter().map(String::as_str).collect();
    let (ok, out) = docker(&args);
    assert!(ok, "docker run failed: {out}");
    let container = Container(name.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (_, state) = docker(&["inspect", "-f", "{{.State.Health.Status}}", &container.0]);
        if state.trim() == "healthy" {
            break;
        }
        let (_, logs) = docker(&["logs", &container.0]);
        assert!(
            Instant::now() < deadline,
            "never healthy ({}):\n{logs}",
            state.trim()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, logs) = docker(&["logs", &container.0]);
    let sandbox_line = logs
        .lines()
        .find(|l| l.contains("sandbox: "))
        .unwrap_or_else(|| panic!("no sandbox status line:\n{logs}"));
    for part in [
        "uid=65532",
        "capabilities=all 5 sets empty (verified)",
        "no_new_privs=on",
        "landlock=enforced",
        "seccomp=enforced",
    ] {
        assert!(
            sandbox_line.contains(part),
            "{part} missing: {sandbox_line}"
        );
    }
    // stderr-json: every line is one JSON object.
    for l in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not JSON: {l}"
        );
    }

    let api: std::net::SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let health: std::net::SocketAddr = format!("127.0.0.1:{health_port}").parse().unwrap();
    let ca = f.state.join("tls/cert.pem");
    let mut c = Client::connect(api, &ca).await;
    let r = c.get("/v1/models", Some(ALICE)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["id"], "model");
    let chat = json!({"model": "model", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}]});
    let r = c.post("/v1/chat/completions", Some(ALICE), &chat).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let r = c.post("/v1/chat/completions", Some(ALICE), &stream).await;
    assert_eq!(
        sse_events(&r.body).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(health_get(health, "/ready").0, 200);
    let (code, metrics) = health_get(health, "/metrics");
    assert_eq!(code, 200);
    for m in [
        "lgi_seccomp_denied_total 0",
        "lgi_sandbox_landlock_enforced 1",
        "lgi_sandbox_seccomp_active 1",
        "lgi_sandbox_capabilities_cleared 1",
        "lgi_requests_total{route=\"chat_completions\",status=\"200\",key_id=\"alice\"} 2",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }

    // The runtime's filter and our three (clone3, deny list, x32) are stacked; no
    // capability, no privilege gain.
    let (_, pid) = docker(&["inspect", "-f", "{{.State.Pid}}", &container.0]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "Seccomp_filters"), "4", "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert!(
        status_field(&status, "Uid").starts_with("65532"),
        "{status}"
    );

    // 3. Key rotation through the read-only mount: replace the file, SIGHUP.
    let rotated = "alice:alice-rotated-in-container-42";
    write_keys(&f.config, rotated);
    let (ok, out) = docker(&["kill", "-s", "HUP", &container.0]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !docker(&["logs", &container.0])
        .1
        .contains("SIGHUP: keys file reloaded")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            docker(&["logs", &container.0]).1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = Client::connect(api, &ca).await;
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 401);
    assert_eq!(c.get("/v1/models", Some(rotated)).await.status, 200);

    // 4. docker stop: SIGTERM to PID 1 (the binary), drained, exit 0.
    let (ok, out) = docker(&["stop", "-t", "40", &container.0]);
    assert!(ok, "{out}");
    let (_, code) = docker(&["inspect", "-f", "{{.State.ExitCode}}", &container.0]);
    let (_, logs) = docker(&["logs", &container.0]);
    assert_eq!(code.trim(), "0", "exit code; logs:\n{logs}");
    assert!(logs.contains("SIGTERM: shutting down"), "{logs}");
    // No credential or hash in the container's log.
    assert!(
        !logs.contains("alice-secret") && !logs.contains("$argon2id$"),
        "{logs}"
    );
}
