//! Chat templates the operator supplies (`model.chat_template_file`), with the real binary
//! and the real model: a GGUF without a template loads, warns naming the key, and answers
//! chat requests with a 400 that names it (raw completions still work); with the key set,
//! chat works; `check-config` renders a sample conversation with the effective template
//! and `template` prints it with its SHA-256 (checked with `sha256sum`, not our code).

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// ChatML, written here from its documented syntax (the test model's family).
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The test model with its `tokenizer.chat_template` key renamed (same length, so the
/// header layout and the tensor data offsets do not move): llama.cpp and our GGUF walk
/// then see a model file without a chat template.
fn model_without_template(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(model_path()).unwrap();
    let key = b"\x17\0\0\0\0\0\0\0tokenizer.chat_template";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("the test model has a chat template");
    let last = at + key.len() - 1;
    bytes[last] = b'X';
    let path = dir.join("no-template.gguf");
    std::fs::write(&path, bytes).unwrap();
    // Readable by the unprivileged user the server drops to.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn chat() -> serde_json::Value {
    json!({"model": MODEL_ID, "max_tokens": 4, "temperature": 0,
           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
}

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_template_is_served_once_the_operator_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_template(dir.path());

    // Without a template: it loads, says so once, and chat requests name the key.
    let server = Server::start_with(Options {
        model: Some(model.clone()),
        ..Options::default()
    });
    let log = server.log_text();
    assert!(
        log.contains("the model file has no chat template and neither model.chat_template_file nor model.chat_template is set"),
        "{log}"
    );
    let mut c = server.client().await;
    let r = c.post("/v1/chat/completions", Some(ALICE), &chat()).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "no_chat_template", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("model.chat_template_file"),
        "{e}"
    );
    let r = c
        .post(
            "/v1/responses",
            Some(ALICE),
            &json!({"model": MODEL_ID, "input": "hi", "max_output_tokens": 2}),
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "no_chat_template");
    // Raw completions need no template.
    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &json!({"model": MODEL_ID, "prompt": "1, 2, 3,", "max_tokens": 2}),
        )
        .await;
    assert_eq!(r.status, 200);
    let config = server.dir.path().join("config.toml");
    let (code, out, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chat template: none"), "{out}");
    let (code, _, err) = run_cli(&["template", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("neither model.chat_template_file nor model.chat_template is set"),
        "{err}"
    );
    drop(c);
    drop(server);

    // A built-in family instead of a file.
    let server = Server::start_with(Options {
        model: Some(model.clone()),
        model_section: format!(
            "{}chat_template = \"chatml\"\n",
            Options::default().model_section
        ),
        ..Options::default()
    });
    let r = server
        .client()
        .await
        .post("/v1/chat/completions", Some(ALICE), &chat())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let log = server.log_text();
    assert!(
        log.contains("origin=model.chat_template (built in)"),
        "{log}"
    );
    let config = server.dir.path().join("config.toml");
    let (code, out, err) = run_cli(&["template", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# chat template: model.chat_template = \"chatml\" (built in)"),
        "{out}"
    );
    drop(server);

    // With `model.chat_template_file`: chat works, rendered by that template.
    let template = dir.path().join("chatml.jinja");
    std::fs::write(&template, CHATML).unwrap();
    let server = Server::start_with(Options {
        model: Some(model.clone()),
        model_section: format!(
            "{}chat_template_file = \"{}\"\n",
            Options::default().model_section,
            template.display()
        ),
        ..Options::default()
    });
    let mut c = server.client().await;
    let r = c.post("/v1/chat/completions", Some(ALICE), &chat()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{v}"
    );
    // The ChatML prompt of one user turn: the template's tokens, not a fallback.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 8, "{v}");
    let hash = sha256sum(&template);
    let log = server.log_text();
    assert!(log.contains(&format!("sha256={hash}")), "{log}");
    assert!(log.contains("chat_template=\"jinja\""), "{log}");

    let config = server.dir.path().join("config.toml");
    let (code, out, err) = run_cli(&["template", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("# SHA-256 {hash}")), "{out}");
    assert!(out.contains("model.chat_template_file"), "{out}");
    assert!(out.ends_with(&format!("{CHATML}\n")), "{out}");
    let (code, out, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("SHA-256 {hash}")), "{out}");
    // The sample conversation: system, user, a tool call, its result, a reply.
    for line in [
        "| <|im_start|>system",
        "| <|im_start|>user",
        "| What is the weather in Paris?<|im_end|>",
        "| <|im_start|>tool",
        "| <|im_start|>assistant",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    // The generic tool format for a template without tool syntax: the call as JSON text.
    for part in [
        r#"{"tool_calls":[{"#,
        r#""name":"get_weather""#,
        r#""city":"Paris""#,
    ] {
        assert!(out.contains(part), "{part} missing:\n{out}");
    }

    // A template that does not compile is refused before anything starts, by its key.
    std::fs::write(&template, "{% for %}").unwrap();
    let (code, _, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("model.chat_template_file"), "{err}");
}
