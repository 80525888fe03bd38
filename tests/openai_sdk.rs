//! Real clients from PyPI against the real server, as applications run them: the official
//! `openai` Python SDK (tests/openai_sdk.py) and LangChain's `ChatOpenAI`
//! (tests/langchain_client.py). `.ci/setup --sdk` (part of `make test`) installs both,
//! pinned, into `.venv`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Run one client script against a fresh server; returns its stdout and the server log.
fn run_client(script: &str) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `make test` (it runs .ci/setup --sdk)",
        python.display()
    );
    let server = Server::start();
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
    // `user` is logged as a hash tag only: SHA-256("end-user-4711")[..8].
    assert!(log.contains("user_tag=91016f0e735e3fa3"), "{log}");
    assert!(!log.contains("end-user-4711"), "end-user id in the log");
}

#[test]
fn langchain_chat_openai_works_unchanged() {
    let (out, _) = run_client("langchain_client.py");
    assert!(out.contains("all LangChain checks passed"), "{out}");
}
