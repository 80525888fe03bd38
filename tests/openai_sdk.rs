//! Real clients from PyPI against the real server, as applications run them: the official
//! `openai` Python SDK (tests/openai_sdk.py) and LangChain's `ChatOpenAI`
//! (tests/langchain_client.py). `.ci/setup --sdk` (part of `make test`) installs both,
//! pinned, into `.venv`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// The `logging.user_tag_key_file` content the servers here use.
const USER_TAG_KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// Run one client script against a fresh server; returns its stdout and the server log.
fn run_client(script: &str) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `make test` (it runs .ci/setup --sdk)",
        python.display()
    );
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("user-tag.key");
    std::fs::write(&key_file, USER_TAG_KEY).unwrap();
    let server = Server::start_with(Options {
        extra_toml: format!(
            "[logging]\nuser_tag_key_file = \"{}\"\n",
            key_file.display()
        ),
        ..Options::default()
    });
    let out = Command::new(&python)
        .arg(root.join("tests").join(script))
        .arg(format!("https://localhost:{}/v1", server.api.port()))
        .arg(ALICE)
        .arg(server.ca_pem())
        .arg(MODEL_ID)
        .arg(LIMITED)
        .arg(EXPIRED)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("ttft ") || l.starts_with("final answer"))
    {
        eprintln!("{script}: {line}");
    }
    eprintln!("{script}: {}", stdout.lines().last().unwrap_or_default());
    // SECURITY: whatever the clients sent, no credential reached the log.
    let log = server.log_text();
    assert!(!log.contains("alice-secret"), "credential in the log");
    (stdout, log)
}

#[test]
fn official_python_sdk_works_unchanged() {
    let (out, log) = run_client("openai_sdk.py");
    assert!(out.contains("all SDK checks passed"), "{out}");
    // Every check printed "ok" (the script exits at the first failure).
    assert!(
        out.lines().filter(|l| l.starts_with("ok ")).count() >= 50,
        "{out}"
    );
    // Prompts are rendered by the GGUF's own Jinja template (not llama.cpp's fallback).
    assert!(log.contains("chat_template=\"jinja\""), "{log}");
    // `user` is logged as a keyed tag only: HMAC-SHA256(key, "end-user-4711")[..8],
    // never the unkeyed SHA-256 (91016f0e735e3fa3), which a guess could reverse.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, USER_TAG_KEY);
    let tag: String = ring::hmac::sign(&key, b"end-user-4711").as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(log.contains(&format!("user_tag={tag}")), "{tag}: {log}");
    assert!(
        !log.contains("91016f0e735e3fa3"),
        "an unkeyed tag in the log"
    );
    assert!(!log.contains("end-user-4711"), "end-user id in the log");
}

#[test]
fn langchain_chat_openai_works_unchanged() {
    let (out, _) = run_client("langchain_client.py");
    assert!(out.contains("all LangChain checks passed"), "{out}");
}

#[test]
fn official_python_sdk_speaks_the_responses_api() {
    let (out, log) = run_client("responses_sdk.py");
    assert!(out.contains("all Responses checks passed"), "{out}");
    assert!(
        out.lines().filter(|l| l.starts_with("ok ")).count() >= 40,
        "{out}"
    );
    // The Responses routes are counted and logged like the others.
    assert!(log.contains("route=\"responses\""), "{log}");
    assert!(!log.contains("end-user-4711"), "end-user id in the log");
}

#[test]
fn an_openai_agents_sdk_agent_runs_with_a_function_tool() {
    let (out, _) = run_client("agents_client.py");
    assert!(out.contains("all Agents SDK checks passed"), "{out}");
}
