//! Start-up, readiness, shutdown and the command-line tools, run as the real binary.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_model_is_loaded() {
    // The model load waits (test hook) until this test creates `release`: the loading
    // state lasts as long as the checks below need, however fast the machine.
    let gate = tempfile::tempdir().unwrap();
    // Searchable by the unprivileged user the server drops to.
    std::fs::set_permissions(
        gate.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let release = gate.path().join("release");
    let server = Server::start_with(Options {
        env: vec![(
            "LGI_TEST_LOAD_GATE".into(),
            release.to_str().unwrap().into(),
        )],
        wait_ready: false,
        ..Options::default()
    });
    // The model is held back by the test hook: alive, not ready.
    // The probe reads health_listen from a config; the test server's says port 0
    // (ephemeral), so the probe gets a copy naming the port it really has.
    let probe_dir = tempfile::tempdir().unwrap();
    let probe_config = probe_dir.path().join("config.toml");
    let text = std::fs::read_to_string(server.dir.path().join("config.toml")).unwrap();
    let text = text.replace(
        "health_listen = \"127.0.0.1:0\"",
        &format!("health_listen = \"{}\"", server.health),
    );
    assert!(text.contains(&server.health.to_string()), "{text}");
    std::fs::write(&probe_config, text).unwrap();
    let config = probe_config.to_str().unwrap();
    let (code, _, err) = run_cli(&["healthcheck", "--config", config], None);
    assert_eq!(code, 1, "healthcheck while loading: {err}");
    assert!(err.contains("/ready answered 503"), "{err}");
    assert_eq!(health_get(server.health, "/health").0, 200);
    let (status, body) = health_get(server.health, "/ready");
    assert_eq!((status, body.as_str()), (503, "{\"status\":\"loading\"}"));
    // The API port does not serve while the model loads: nothing accepts the connection
    // (it waits in the kernel's backlog), so no TLS, HTTP or argon2 runs before every
    // sandbox layer, seccomp included, is in force.
    let early = tokio::spawn({
        let (api, ca) = (server.api, server.ca_pem());
        async move {
            let mut c = Client::connect(api, &ca).await;
            let r = c.get("/v1/models", Some(ALICE)).await;
            (r.status, std::time::Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !early.is_finished(),
        "the API answered while the model loaded"
    );
    assert_eq!(health_get(server.health, "/ready").0, 503);
    std::fs::write(&release, "").unwrap();
    server.wait_ready(Duration::from_secs(60));
    // Once ready, the waiting connection is served; seccomp was in force before.
    let (status, _) = tokio::time::timeout(Duration::from_secs(30), early)
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert_eq!(status, 200);
    let log = server.log_text();
    let line_of = |what: &str, pred: &dyn Fn(&str) -> bool| {
        log.lines()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} line:\n{log}"))
    };
    let seccomp_at = line_of("seccomp status", &|l| l.contains("seccomp=enforced"));
    let ready_at = line_of("ready", &|l| l.ends_with(" INFO ready"));
    let first_request = line_of("request", &|l| l.contains("request done"));
    assert!(seccomp_at < ready_at && ready_at < first_request, "{log}");
    let mut c = server.client().await;
    let (code, out, err) = run_cli(&["healthcheck", "--config", config], None);
    assert_eq!(code, 0, "healthcheck when ready: {out}{err}");
    assert!(out.contains("→ 200"), "{out}");
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &json!({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        )
        .await;
    assert_eq!(r.status, 200);
    // Server gone: nothing listens on the health port any more.
    drop(c);
    drop(server);
    let (code, _, err) = run_cli(&["healthcheck", "--config", config], None);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn sigterm_stops_gracefully_with_exit_code_zero() {
    let mut server = Server::start();
    let pid = server.pid();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_for("the process to exit", Duration::from_secs(30), || {
        server.log_text().contains("stopped")
    });
    let code = server.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
}

#[test]
fn check_config_accepts_good_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Options::default());
    let (code, out, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("config OK")
            && out.contains("4 key(s)")
            && out.contains("chat template present"),
        "{out}"
    );

    // A typo, a bad range and a bad model path: all reported at once, each by key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[auth]\nkeys_file = \"keys\"\n[model]\npath = \"missing.gguf\"\ncontext = 1\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("model.context") && err.contains("allowed 64..="),
        "{err}"
    );
    std::fs::write(
        &bad,
        "[auth]\nkeys_file = \"keys\"\n[model]\npath = \"m.gguf\"\ncontxt = 5\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("contxt") && err.contains("unknown field"),
        "{err}"
    );

    // A file that is not GGUF is refused before llama.cpp sees it.
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a model at all").unwrap();
    std::fs::write(
        &bad,
        format!(
            "[auth]\nkeys_file = \"keys\"\n[model]\npath = \"{}\"\n",
            fake.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("model.path") && err.contains("not a GGUF file"),
        "{err}"
    );

    // A plaintext secret in the keys file is refused, and not echoed.
    std::fs::write(dir.path().join("keys"), "bob:hunter2-plaintext\n").unwrap();
    let (code, _, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("auth.keys_file") && err.contains("line 1") && !err.contains("hunter2"),
        "{err}"
    );

    // serve refuses the same config with the same message.
    let (code, _, err) = run_cli(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn key_tools_produce_working_credentials() {
    // gen-key: the printed credential authenticates against the printed line.
    let (code, out, _) = run_cli(&["gen-key", "ci-key"], None);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    let credential = lines[1];
    let keys_line = lines[3];
    assert!(
        credential.starts_with("ci-key:")
            && keys_line.starts_with("ci-key:$argon2id$v=19$m=19456,t=2,p=1$")
    );
    let entry = llama_gguf_inference::keys::parse_keys(keys_line)
        .unwrap()
        .remove(0);
    let secret = credential.split_once(':').unwrap().1;
    use argon2::PasswordVerifier;
    assert!(argon2::Argon2::default()
        .verify_password(secret.as_bytes(), &entry.hash.password_hash())
        .is_ok());

    // hash-key reads stdin and never prints the secret.
    let (code, out, _) = run_cli(&["hash-key"], Some("my-secret\n"));
    assert_eq!(code, 0);
    let hash = out.trim();
    assert!(hash.starts_with("$argon2id$") && !out.contains("my-secret"));
    let parsed = argon2::password_hash::PasswordHash::new(hash).unwrap();
    assert!(argon2::Argon2::default()
        .verify_password(b"my-secret", &parsed)
        .is_ok());
    assert_eq!(run_cli(&["hash-key"], Some("")).0, 2);

    // hash-keys converts the old gateway's plaintext file.
    let (code, out, err) = run_cli(
        &["hash-keys"],
        Some("# old\nalice:pw1:60\nbob:pw2::2030-01-01T00:00:00Z\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("pw1") && !out.contains("pw2"));
    let keys = llama_gguf_inference::keys::parse_keys(&out).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].requests_per_minute, Some(60));
    assert!(keys[1].expires.is_some());

    // --help everywhere, --version, unknown commands.
    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["hash-key", "--help"],
        &["gen-key", "--help"],
        &["hash-keys", "--help"],
    ] {
        let (code, out, _) = run_cli(cmd, None);
        assert_eq!(code, 0, "{cmd:?}");
        assert!(out.contains("llama-gguf-inference"), "{cmd:?}");
    }
    let (code, out, _) = run_cli(&["--version"], None);
    assert_eq!(code, 0);
    assert!(out.starts_with("llama-gguf-inference 0."));
    assert_eq!(run_cli(&["frobnicate"], None).0, 2);
    assert_eq!(run_cli(&["gen-key", "bad id!"], None).0, 2);
}
