//! Keeping it running: key rotation on SIGHUP, metrics after a known sequence of
//! requests, the per-request log line, journald logging, and draining on SIGTERM.
//! All against the real binary over TLS.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// SmolLM2's end-of-text tokens, banned so a generation runs to max_tokens and is still
/// in flight when the test acts.
fn long_chat(max_tokens: u32) -> Value {
    json!({"model": MODEL_ID, "max_tokens": max_tokens, "stream": true, "temperature": 0,
        "logit_bias": {"0": -100, "2": -100},
        "messages": [{"role": "user", "content": "Count from one to one hundred."}]})
}

/// Start a `long_chat` stream with alice's key and wait until the engine is generating it.
async fn stream_in_flight(
    server: &Server,
    client: &mut Client,
    max_tokens: u32,
) -> hyper::Response<hyper::body::Incoming> {
    let resp = client
        .send_raw(request(
            "POST",
            "/v1/chat/completions",
            Some(ALICE),
            Some(long_chat(max_tokens).to_string()),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    server.wait_for(
        "the stream to be generating",
        Duration::from_secs(30),
        || server.metric("lgi_active_requests") == 1,
    );
    resp
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Let the sandbox user (nobody, when the tests run as root) read the keys file again
/// after lock-down, as an operator's deployment does (policy/README.md).
fn open_to_sandbox_user(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Replace the keys file the way editors and `mv` do: a new inode, renamed over it.
fn replace_keys(dir: &Path, text: &str) {
    let tmp = dir.join("keys.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, dir.join("keys")).unwrap();
}

fn metric_line(body: &str, prefix: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn sighup_rotates_keys_without_touching_requests_in_flight() {
    let server = Server::start_with(slow_steps());
    open_to_sandbox_user(server.dir.path());

    // A stream in flight with alice's current key.
    let mut streamer = server.client().await;
    let resp = stream_in_flight(&server, &mut streamer, 120).await;

    // Rotate: alice gets a new secret, bob is added, carol, limited and expired are removed.
    let alice_new = "alice:alice-rotated-9876543210";
    let bob = "bob:bob-secret-0123456789";
    replace_keys(
        server.dir.path(),
        &format!(
            "alice:{}\nbob:{}\n",
            cheap_hash(secret(alice_new)),
            cheap_hash(secret(bob))
        ),
    );
    signal(server.pid(), "HUP");
    server.wait_for("the reload", Duration::from_secs(30), || {
        server.log_text().contains("SIGHUP: keys file reloaded")
    });
    let log = server.log_text();
    assert!(
        log.contains("added=1") && log.contains("removed=3") && log.contains("changed=1"),
        "{log}"
    );

    // Old secret refused at once (its verified tag went with the old record), new ones in.
    let mut c = server.client().await;
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 401);
    assert_eq!(c.get("/v1/models", Some(LIMITED)).await.status, 401);
    assert_eq!(c.get("/v1/models", Some(alice_new)).await.status, 200);
    assert_eq!(c.get("/v1/models", Some(bob)).await.status, 200);

    // The stream that started under the old key runs to its end.
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let events = sse_events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let finish = events
        .iter()
        .rev()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find_map(|v| v["choices"][0]["finish_reason"].as_str().map(String::from));
    assert_eq!(finish.as_deref(), Some("length"), "{events:?}");

    // A broken file is refused whole; the keys in use stay.
    replace_keys(
        server.dir.path(),
        &format!("carol:{}\nthis line is not a key\n", cheap_hash("c")),
    );
    signal(server.pid(), "HUP");
    server.wait_for("the refusal", Duration::from_secs(30), || {
        server.log_text().contains("SIGHUP: keys file refused")
    });
    assert!(
        server.log_text().contains("line 2"),
        "{}",
        server.log_text()
    );
    assert_eq!(c.get("/v1/models", Some(alice_new)).await.status, 200);
    assert_eq!(server.metric("lgi_key_reloads_total"), 1);
    assert_eq!(server.metric("lgi_key_reload_failures_total"), 1);
    // No secret or hash reached the log.
    let log = server.log_text();
    assert!(!log.contains("rotated-9876543210") && !log.contains("$argon2id$"));
}

#[tokio::test]
async fn metrics_and_request_lines_after_a_known_sequence() {
    let server = Server::start();
    let mut c = server.client().await;
    let chat = json!({"model": MODEL_ID, "max_tokens": 5, "temperature": 0,
        "messages": [{"role": "user", "content": "The secret word is PAPAYA. Say hi."}]});
    assert_eq!(
        c.post("/v1/chat/completions", Some(ALICE), &chat)
            .await
            .status,
        200
    );
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    assert_eq!(
        c.post("/v1/chat/completions", Some(ALICE), &streamed)
            .await
            .status,
        200
    );
    assert_eq!(
        c.post("/v1/chat/completions", Some("alice:wrong-secret"), &chat)
            .await
            .status,
        401
    );
    assert_eq!(
        c.post("/v1/chat/completions", None, &chat).await.status,
        401
    );
    // `limited` allows 3 requests per minute: the fourth is refused.
    for expected in [200, 200, 200, 429] {
        assert_eq!(c.get("/v1/models", Some(LIMITED)).await.status, expected);
    }
    assert_eq!(c.get("/nope", Some(ALICE)).await.status, 404);

    let (code, m) = health_get(server.health, "/metrics");
    assert_eq!(code, 200);
    let count = |prefix: &str| metric_line(&m, prefix).unwrap_or_else(|| panic!("{prefix}\n{m}"));
    assert_eq!(
        count("lgi_requests_total{route=\"chat_completions\",status=\"200\",key_id=\"alice\"}"),
        2
    );
    assert_eq!(
        count("lgi_requests_total{route=\"chat_completions\",status=\"401\",key_id=\"\"}"),
        2
    );
    assert_eq!(
        count("lgi_requests_total{route=\"models\",status=\"200\",key_id=\"limited\"}"),
        3
    );
    assert_eq!(
        count("lgi_requests_total{route=\"models\",status=\"429\",key_id=\"\"}"),
        1
    );
    assert_eq!(
        count("lgi_requests_total{route=\"other\",status=\"404\",key_id=\"\"}"),
        1
    );
    assert_eq!(count("lgi_auth_failures_total{reason=\"invalid\"}"), 1);
    assert_eq!(count("lgi_auth_failures_total{reason=\"missing\"}"), 1);
    assert_eq!(count("lgi_rate_limited_total{limit=\"requests\"}"), 1);
    assert_eq!(count("lgi_rate_limited_total{limit=\"tokens\"}"), 0);
    assert_eq!(
        count("lgi_time_to_first_token_seconds_count{route=\"chat_completions\"}"),
        2
    );
    assert_eq!(
        count("lgi_request_duration_seconds_count{route=\"chat_completions\"}"),
        4
    );
    assert_eq!(
        count("lgi_request_duration_seconds_bucket{route=\"chat_completions\",le=\"+Inf\"}"),
        4
    );
    assert_eq!(count("lgi_completion_tokens_total "), 10);
    assert_eq!(count("lgi_queue_depth "), 0);
    assert_eq!(count("lgi_active_requests "), 0);
    let tps: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("lgi_completion_tokens_per_second "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(tps > 0.0, "{m}");
    assert_eq!(count("lgi_sandbox_landlock_enforced "), 1);
    assert_eq!(count("lgi_sandbox_seccomp_active "), 1);
    if is_root() {
        assert_eq!(count("lgi_sandbox_capabilities_cleared "), 1);
        assert_eq!(count("lgi_sandbox_running_as_root "), 0);
    }

    // One line per request, with key id, route, status, tokens and durations; the
    // prompt is not logged by default.
    let log = server.log_text();
    let done: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("request done") && l.contains("route=\"chat_completions\"")
                || l.contains("request done") && l.contains("route=chat_completions")
        })
        .collect();
    assert_eq!(done.len(), 4, "{log}");
    let ok: Vec<&&str> = done.iter().filter(|l| l.contains("status=200")).collect();
    assert_eq!(ok.len(), 2, "{log}");
    for l in ok {
        assert!(
            l.contains("key_id=alice")
                && l.contains("completion_tokens=5")
                && l.contains("ttft_ms=")
                && l.contains(" ms="),
            "{l}"
        );
    }
    assert!(!log.contains("PAPAYA"), "prompt text in the log:\n{log}");
    // Start-up names the compute devices and the offload, and shows load progress.
    assert!(
        log.contains("compute device")
            && log.contains("model layers on the GPU")
            && log.contains("loading model")
            && log.contains("progress=\"100%\""),
        "{log}"
    );
}

#[tokio::test]
async fn metrics_can_be_switched_off_and_prompts_logged_on_request() {
    let server = Server::start_with(Options {
        extra_toml: "[metrics]\nenabled = false\n[logging]\nlog_prompts = true\n".into(),
        ..Options::default()
    });
    assert_eq!(health_get(server.health, "/metrics").0, 404);
    assert_eq!(health_get(server.health, "/ready").0, 200);
    // The old gateway's liveness path, on the health port only.
    assert_eq!(
        health_get(server.health, "/ping"),
        (200, "{\"status\":\"ok\"}".to_string())
    );
    assert_eq!(health_get(server.health, "/anything").0, 404);
    let mut c = server.client().await;
    let chat = json!({"model": MODEL_ID, "max_tokens": 2,
        "messages": [{"role": "user", "content": "The secret word is PAPAYA."}]});
    assert_eq!(
        c.post("/v1/chat/completions", Some(ALICE), &chat)
            .await
            .status,
        200
    );
    server.wait_for("the prompt line", Duration::from_secs(10), || {
        server.log_text().contains("PAPAYA")
    });
}

#[tokio::test]
async fn sigterm_drains_a_stream_in_flight_then_exits_zero() {
    let mut server = Server::start_with(slow_steps());
    let mut c = server.client().await;
    let resp = stream_in_flight(&server, &mut c, 60).await;
    signal(server.pid(), "TERM");
    // New connections are refused while the stream drains (the listener is closed).
    server.wait_for("the listener to close", Duration::from_secs(10), || {
        server
            .log_text()
            .contains("API listener closed; draining connections")
    });
    assert!(
        std::net::TcpStream::connect_timeout(&server.api, Duration::from_secs(2)).is_err(),
        "a new connection was accepted while draining"
    );
    // The stream still ends properly, with all its tokens.
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => panic!("stream cut: {e}; log:\n{}", server.log_text()),
    };
    let events = sse_events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events
        .iter()
        .any(|e| e.contains("\"finish_reason\":\"length\"")));
    let code = server.wait_exit(Duration::from_secs(40));
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
    let log = server.log_text();
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );
}

/// One journald native-protocol datagram: `KEY=value\n` fields, or `KEY\n` + 64-bit
/// little-endian length + bytes + `\n` for values that hold newlines.
fn parse_journal_datagram(mut d: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !d.is_empty() {
        let nl = d
            .iter()
            .position(|b| *b == b'\n')
            .expect("field ends with a newline");
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            d = &d[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &d[nl + 9..nl + 9 + len];
            assert_eq!(
                d[nl + 9 + len],
                b'\n',
                "length-encoded field ends with a newline"
            );
            fields.push((name, String::from_utf8_lossy(value).into_owned()));
            d = &d[nl + 10 + len..];
        }
    }
    fields
}

#[tokio::test]
async fn journald_target_writes_the_native_protocol_from_inside_the_sandbox() {
    require_root("the journald stand-in is mounted over /run/systemd/journal, which needs root");
    // A unix datagram socket standing in for journald, mounted (in a private mount
    // namespace of the server only) where journald's socket lives.
    let journal = tempfile::tempdir().unwrap();
    std::fs::set_permissions(journal.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock_path = journal.path().join("socket");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<(String, String)>>::new()));
    let sink = received.clone();
    let (listening_tx, listening_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut idle = 0;
        while idle < 150 {
            match sock.recv(&mut buf) {
                Ok(0) => {} // the layer's empty probe datagram
                Ok(n) => {
                    idle = 0;
                    let fields = parse_journal_datagram(&buf[..n]);
                    let get = |name: &str| {
                        fields
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                    };
                    if get("MESSAGE").as_deref() == Some("listening") {
                        let _ = listening_tx.send(format!(
                            " listening api={} health={}",
                            get("F_API").unwrap_or_default(),
                            get("F_HEALTH").unwrap_or_default()
                        ));
                    }
                    sink.lock().unwrap().push(fields);
                }
                Err(_) => idle += 1,
            }
        }
    });
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let mount = format!(
        "mount --bind {} /run/systemd/journal && exec \"$0\" \"$@\"",
        journal.path().display()
    );
    let server = Server::start_with(Options {
        extra_toml: "[logging]\ntarget = \"journald\"\n".into(),
        wrapper: [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &mount,
        ]
        .map(String::from)
        .to_vec(),
        listening: Some(listening_rx),
        ..Options::default()
    });
    let mut c = server.client().await;
    let chat = json!({"model": MODEL_ID, "max_tokens": 3,
        "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(
        c.post("/v1/chat/completions", Some(ALICE), &chat)
            .await
            .status,
        200
    );
    let has = |msg: &str| {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.iter().any(|(k, v)| k == "MESSAGE" && v.contains(msg)))
    };
    server.wait_for(
        "the request line in the journal",
        Duration::from_secs(20),
        || has("request done"),
    );
    let events = received.lock().unwrap().clone();
    // Lines logged after lock-down and seccomp arrived: the socket stays reachable.
    assert!(has("sandbox: ") && has("ready"), "{events:?}");
    let done = events
        .iter()
        .find(|f| f.iter().any(|(k, v)| k == "MESSAGE" && v == "request done"))
        .unwrap();
    let field = |name: &str| {
        done.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing in {done:?}"))
    };
    assert_eq!(field("F_STATUS"), "200");
    assert_eq!(field("F_ROUTE"), "chat_completions");
    assert_eq!(field("PRIORITY"), "5"); // tracing-journald: INFO is "notice"
    assert_eq!(field("SYSLOG_IDENTIFIER"), "llama-gguf-inference");
    assert!(
        done.iter()
            .any(|(k, v)| k.ends_with("KEY_ID") && v == "alice"),
        "{done:?}"
    );
    // journald got the log, so stderr did not.
    assert!(
        !server.log_text().contains("request done"),
        "{}",
        server.log_text()
    );
    drop(server);
    reader.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reissued_key_id_does_not_inherit_the_old_holders_prefix_cache() {
    // One slot, so every request lands on the same cache.
    let server = Server::start_with(Options {
        model_section: "context = 1024\nthreads = 2\nparallel = 1\n".into(),
        ..Options::default()
    });
    open_to_sandbox_user(server.dir.path());
    let body = serde_json::json!({"model": MODEL_ID, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Name three colours of the rainbow."}]});
    let cached = |r: &Reply| -> u64 {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    let mut c = server.client().await;
    c.post("/v1/chat/completions", Some(ALICE), &body).await;
    // The same key asking again reuses its prefix.
    let again = c.post("/v1/chat/completions", Some(ALICE), &body).await;
    assert!(cached(&again) > 0, "the same key should reuse its prefix");

    // The id "alice" is removed and given to someone else: a new hash (here for the same
    // secret, so the client code stays the same; a new salt makes it a new key line).
    let keys = std::fs::read_to_string(server.dir.path().join("keys")).unwrap();
    let alice_line = keys.lines().find(|l| l.starts_with("alice:")).unwrap();
    let reissued = keys.replace(alice_line, &format!("alice:{}", cheap_hash(secret(ALICE))));
    replace_keys(server.dir.path(), &reissued);
    signal(server.pid(), "HUP");
    server.wait_for("the reload", Duration::from_secs(10), || {
        server.log_text().contains("SIGHUP: keys file reloaded")
    });
    let mut c = server.client().await;
    let after = c.post("/v1/chat/completions", Some(ALICE), &body).await;
    assert_eq!(
        cached(&after),
        0,
        "a reissued id must start with a cold prefix cache"
    );
}

/// `keys list/add/rotate/remove` on the running server's keys file, then SIGHUP: what
/// the commands printed is what the server now accepts and refuses.
#[tokio::test]
async fn keys_commands_edit_the_file_the_running_server_reloads() {
    let server = Server::start();
    open_to_sandbox_user(server.dir.path());
    let dir = server.dir.path();
    let config = dir.join("config.toml");
    let config = config.to_str().unwrap();
    let keys_file = dir.join("keys");

    let (rc, out, err) = run_cli(&["keys", "list", "--config", config], None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        out,
        "id\trequests_per_minute\texpires\texpired\targon2\n\
         alice\tdefault\tnever\tno\tm=7168,t=1,p=1\n\
         carol\tdefault\tnever\tno\tm=7168,t=1,p=1\n\
         limited\t3\tnever\tno\tm=7168,t=1,p=1\n\
         expired\tdefault\t2001-01-01T00:00:00Z\tyes\tm=7168,t=1,p=1\n"
    );

    // add: the credential alone on stdout, the reload hint on stderr.
    let (rc, dave, err) = run_cli(
        &[
            "keys",
            "add",
            "dave",
            "--rpm",
            "50",
            "--expires",
            "30d",
            "--config",
            config,
        ],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    let dave = dave.trim().to_string();
    assert!(
        dave.starts_with("dave:") && dave.len() == "dave:".len() + 43,
        "{dave}"
    );
    assert!(
        err.contains("systemctl reload") && err.contains("50 requests per minute"),
        "{err}"
    );
    let (rc, alice_new, err) = run_cli(&["keys", "rotate", "alice", "--config", config], None);
    assert_eq!(rc, 0, "{err}");
    let alice_new = alice_new.trim().to_string();
    let (rc, _, err) = run_cli(
        &[
            "keys",
            "remove",
            "carol",
            "--file",
            keys_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(rc, 0, "{err}");
    // Mode kept (the sandbox user still reads it), no temporary left, no hash printed.
    let meta = std::fs::metadata(&keys_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("keys"))
        .collect();
    assert_eq!(names, ["keys"]);
    let (_, listed, _) = run_cli(&["keys", "list", "--config", config], None);
    assert!(
        !listed.contains("$argon2") && !listed.contains("carol"),
        "{listed}"
    );
    assert!(listed.contains("dave\t50\t"), "{listed}");
    // limited's limit and every comment survived the rotation of alice.
    let text = std::fs::read_to_string(&keys_file).unwrap();
    assert!(text.starts_with("# test keys\nalice:$argon2id$"), "{text}");
    assert!(text.contains(":3\n"), "{text}");

    // Until the reload the server still has the old keys.
    let mut c = server.client().await;
    assert_eq!(c.get("/v1/models", Some(&dave)).await.status, 401);
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
    signal(server.pid(), "HUP");
    server.wait_for("the reload", Duration::from_secs(30), || {
        server.log_text().contains("SIGHUP: keys file reloaded")
    });
    assert_eq!(c.get("/v1/models", Some(&dave)).await.status, 200);
    assert_eq!(c.get("/v1/models", Some(&alice_new)).await.status, 200);
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 401);
    assert_eq!(c.get("/v1/models", Some(BOB)).await.status, 401);

    // Files another user could have written are refused and left as they are.
    std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (rc, out, err) = run_cli(&["keys", "add", "eve", "--config", config], None);
    assert_eq!((rc, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("world-writable"), "{err}");
    std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.join("keys-link");
    std::os::unix::fs::symlink(&keys_file, &link).unwrap();
    let (rc, _, err) = run_cli(
        &["keys", "rotate", "dave", "--file", link.to_str().unwrap()],
        None,
    );
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&keys_file).unwrap(), text);
    let log = server.log_text();
    assert!(!log.contains(secret(&dave)) && !log.contains("$argon2id$"));
}
