//! The official `openai` Python SDK against the real server: what application developers run.
//! `.ci/setup --sdk` (part of `make test`) installs the SDK into `.venv`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn official_python_sdk_works_unchanged() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `make test` (it runs .ci/setup --sdk)",
        python.display()
    );
    let server = Server::start();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_sdk.py"))
        .arg(format!("https://localhost:{}/v1", server.api.port()))
        .arg(ALICE)
        .arg(server.ca_pem())
        .arg(MODEL_ID)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");
}
