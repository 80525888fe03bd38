//! Start-up, readiness, shutdown and the command-line tools, run as the real binary.

mod common;

use common::*;
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
            &serde_json::json!({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
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

    // hash-keys converts the old gateway's plaintext file, in its tool's formats (naive
    // ISO 8601 expiries, fractional seconds, a date alone), and says what each client
    // must now send.
    let (code, out, err) = run_cli(
        &["hash-keys"],
        Some("# old\nalice:pw1:60\nbob:pw2::2030-01-01T00:00:00Z\ncarol:pw3:10:2027-06-01T12:30:00.123456\ndave:pw4::2027-01-01\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("pw1") && !out.contains("pw2") && !out.contains("pw3"));
    let keys = llama_gguf_inference::keys::parse_keys(&out).unwrap();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0].requests_per_minute, Some(60));
    assert!(keys[1].expires.is_some());
    assert!(out.contains(":10:2027-06-01T12:30:00.123456Z"), "{out}");
    assert!(out.contains("::2027-01-01T00:00:00Z"), "{out}");
    assert!(
        err.contains("2 expiry time(s) had no UTC offset and were read as UTC"),
        "{err}"
    );
    for line in [
        "alice\talice:pw1",
        "bob\tbob:pw2",
        "carol\tcarol:pw3",
        "dave\tdave:pw4",
    ] {
        assert!(err.lines().any(|l| l == line), "{line:?} missing:\n{err}");
    }

    // --help everywhere, --version, unknown commands.
    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["hash-key", "--help"],
        &["gen-key", "--help"],
        &["hash-keys", "--help"],
        &["config-from-env", "--help"],
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

#[test]
fn the_old_gateways_keys_and_environment_migrate_in_three_commands() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // The old key_mgmt.py's formats: rpm, naive ISO 8601 expiries, a date alone.
    let old_keys = data.join("api_keys.txt");
    std::fs::write(
        &old_keys,
        "# generated by key_mgmt.py\nproduction:sk-prod-abc123:100:2030-01-01T00:00:00\nalice-laptop:sk-alice-abc123:0:2030-06-01T12:30:00.123456\nci:sk-ci-999::2030-03-15\n",
    )
    .unwrap();
    let model = model_path();
    let env = [
        ("DATA_DIR", data.to_str().unwrap()),
        ("MODEL_PATH", model.to_str().unwrap()),
        ("PORT", "0"),
        ("PORT_HEALTH", "0"),
        ("CTX", "1024"),
        ("NGL", "99"),
        ("MAX_REQUESTS_PER_MINUTE", "120"),
        ("AUTH_ENABLED", "false"),
    ];
    // 1. The config.
    let (code, config, err) = run_cli_env(&["config-from-env"], None, &env);
    assert_eq!(code, 0, "{err}");
    assert!(config.contains("# AUTH_ENABLED=false: refused"), "{config}");
    // 2. The keys, into the folder the config names.
    let folder = data.join("llama-gguf-inference");
    std::fs::create_dir(&folder).unwrap();
    let (code, hashed, credentials) = run_cli(&["hash-keys", old_keys.to_str().unwrap()], None);
    assert_eq!(code, 0, "{credentials}");
    assert!(!hashed.contains("sk-"), "no secret in the hashed file");
    std::fs::write(folder.join("keys"), &hashed).unwrap();
    for line in [
        "production\tproduction:sk-prod-abc123",
        "alice-laptop\talice-laptop:sk-alice-abc123",
        "ci\tci:sk-ci-999",
    ] {
        assert!(
            credentials.lines().any(|l| l == line),
            "{line}:\n{credentials}"
        );
    }
    // 3. Check it (as root the server drops to an unprivileged user, which the config
    // must name: `check-config` says so when it is missing).
    let path = folder.join("config.toml");
    std::fs::write(&path, format!("{config}\n{}", default_sandbox_section())).unwrap();
    for p in [data, folder.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (code, out, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}\n{config}");
    assert!(out.contains("3 key(s)"), "{out}");
    let keys = llama_gguf_inference::keys::parse_keys(&hashed).unwrap();
    assert_eq!(keys[0].requests_per_minute, Some(100));
    assert!(keys.iter().all(|k| k.expires.is_some()));
}
