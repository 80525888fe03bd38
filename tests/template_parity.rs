//! Chat-template parity (issue 28): every template of the corpus (llama.cpp's
//! models/templates/, fetched by `.ci/template-corpus`, never committed) renders every
//! conversation of `tests/fixtures/template_conversations.json` byte for byte as Hugging
//! Face transformers renders it.
//!
//! Each conversation goes the server's way — the chat request is validated by the API
//! layer (`ChatCompletionRequest::validate`), shaped to the template's detected
//! capabilities (`ChatTemplate::input`) and rendered (`render_input`) — and the very same
//! template-facing input is rendered by transformers' `render_jinja_template` in `.venv`
//! (`tests/template_reference.py`). Expected outputs come from the reference, never from
//! the code under test. The fast tier: no llama.cpp, no model.
#![cfg(feature = "fake-engine")]

mod common;

use common::{template_corpus, EXPECTED_FAMILY, TEMPLATE_CORPUS_SIZE};
use llama_gguf_inference::api::chat::ChatCompletionRequest;
use llama_gguf_inference::config::LimitsConfig;
use llama_gguf_inference::engine::template::ChatTemplate;
use llama_gguf_inference::engine::Prompt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

const BOS: &str = "<s>";
/// Templates that cannot render identically, and why. The test still checks that the
/// difference is exactly the one named.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "meetkai-functionary-medium-v3.1",
    "writes `'text'|safe + value`: in jinja2 a Markup string HTML-escapes what is added to \
     it, so transformers renders the tool JSON as `{&#34;name&#34;: ...}`; minijinja's `+` \
     does not escape, and ours renders plain JSON",
)];
const EOS: &str = "</s>";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The conversation suite as (name, chat request body).
fn conversations() -> Vec<(String, Value)> {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/template_conversations.json")).unwrap();
    let suite: Value = serde_json::from_str(&text).unwrap();
    suite["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut body = json!({"model": "m", "messages": c["messages"]});
            if let Some(set) = c["tools"].as_str() {
                body["tools"] = suite["tools"][set].clone();
            }
            (c["name"].as_str().unwrap().to_string(), body)
        })
        .collect()
}

/// The chat request as the server turns it into messages and tool objects.
fn request(body: &Value) -> (Vec<llama_gguf_inference::engine::ChatMessage>, Vec<Value>) {
    let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
    match req.validate(&LimitsConfig::default()).unwrap().prompt {
        Prompt::Chat {
            messages, tools, ..
        } => (messages, tools),
        Prompt::Text(_) => unreachable!("a chat request is a chat prompt"),
    }
}

/// Render `cases` with transformers; one `Ok(output)`/`Err(error)` per case, and whether
/// only a mutable sandbox rendered it.
fn reference(cases: &[Value]) -> Vec<(Result<String, String>, bool)> {
    let dir = root().join("target/template-parity");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.json");
    let output = dir.join("reference.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&json!({"cases": cases})).unwrap(),
    )
    .unwrap();
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "no .venv: run `bash .ci/setup --sdk` (make test does)"
    );
    let run = Command::new(python)
        .arg(root().join("tests/template_reference.py"))
        .arg(&input)
        .arg(&output)
        .env("TZ", "UTC")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the reference renderer failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let out = match r["output"].as_str() {
                Some(o) => Ok(o.to_string()),
                None => Err(r["error"].as_str().unwrap_or("?").to_string()),
            };
            (out, r["mutable"].as_bool().unwrap_or(false))
        })
        .collect()
}

/// Where two renders first differ, with a little context on each side.
fn first_difference(ours: &str, theirs: &str) -> String {
    let at = ours
        .char_indices()
        .zip(theirs.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(ours.len().min(theirs.len()));
    let window = |s: &str| {
        let start = s[..at.min(s.len())]
            .char_indices()
            .rev()
            .nth(40)
            .map_or(0, |(i, _)| i);
        s[start..].chars().take(100).collect::<String>()
    };
    format!(
        "at byte {at}:\n      ours:   {:?}\n      theirs: {:?}",
        window(ours),
        window(theirs)
    )
}

/// What jinja2's `Markup` escaping undoes to.
fn html_unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

const TABLE_START: &str = "<!-- template table: generated by tests/template_parity.rs (LGI_WRITE_README=1 rewrites it) -->";
const TABLE_END: &str = "<!-- end of template table -->";

/// README's table of the corpus templates is this test's own findings: the detected
/// capabilities and the parity result of each. `LGI_WRITE_README=1` rewrites it.
fn check_readme_table(
    rows: &[(String, [&str; 7])],
    identical: &std::collections::BTreeMap<&str, bool>,
    known: &[String],
) {
    let mut table = String::from(
        "| template | system role | tools | tool calls | arguments | null content | call ids | content parts | as transformers |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, cols) in rows {
        let parity = match identical.get(name.as_str()) {
            Some(true) => "identical",
            _ if known.iter().any(|k| k.starts_with(&format!("{name} /"))) => "known difference",
            _ => "DIFFERENT",
        };
        table.push_str(&format!("| {name} | {} | {parity} |\n", cols.join(" | ")));
    }
    check_readme_section(TABLE_START, TABLE_END, &table);
}

struct Case {
    template: String,
    conversation: String,
    ours: Result<String, String>,
}

#[test]
fn every_corpus_template_renders_every_conversation_as_transformers_does() {
    let conversations = conversations();
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    let mut not_starting = Vec::new();
    let mut caps_table = Vec::new();
    let mut readme_rows = Vec::new();
    for path in template_corpus() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let template = match ChatTemplate::new(&source, BOS, EOS) {
            Ok(t) => t,
            Err(e) => {
                not_starting.push(format!("{name}: {e}"));
                continue;
            }
        };
        caps_table.push(format!("{name}: {}", template.capabilities().describe()));
        readme_rows.push((name.clone(), template.capabilities().columns()));
        for (conversation, body) in &conversations {
            let (messages, tools) = request(body);
            let input = template.input(&messages, &tools);
            let ours = template.render_input(&input);
            inputs.push(json!({"template": path, "messages": input.messages,
                               "tools": input.tools, "extra": input.extra,
                               "bos_token": BOS, "eos_token": EOS}));
            cases.push(Case {
                template: name.clone(),
                conversation: conversation.clone(),
                ours,
            });
        }
    }
    let theirs = reference(&inputs);
    assert_eq!(theirs.len(), cases.len());

    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut mutable = std::collections::BTreeSet::new();
    let mut identical = 0;
    let mut templates_identical = std::collections::BTreeMap::<&str, bool>::new();
    for (case, (theirs, needs_mutable)) in cases.iter().zip(&theirs) {
        if *needs_mutable {
            mutable.insert(case.template.as_str());
        }
        let same = match (&case.ours, theirs) {
            (Ok(a), Ok(b)) => a == b,
            // The template refuses this conversation in both: the same outcome. (Which
            // conversations a template may refuse is the capability tests' business.)
            (Err(_), Err(_)) => true,
            _ => false,
        };
        let entry = templates_identical
            .entry(case.template.as_str())
            .or_insert(true);
        *entry &= same;
        if same {
            identical += 1;
            continue;
        }
        if let (Some(_), Ok(a), Ok(b)) = (
            KNOWN_DIFFERENCES.iter().find(|(t, _)| *t == case.template),
            &case.ours,
            theirs,
        ) {
            if *a == html_unescape(b) {
                known.push(format!("{} / {}", case.template, case.conversation));
                continue;
            }
        }
        failures.push(match (&case.ours, theirs) {
            (Ok(a), Ok(b)) => format!(
                "{} / {}: {}",
                case.template,
                case.conversation,
                first_difference(a, b)
            ),
            (Err(e), Ok(_)) => format!(
                "{} / {}: ours refused, transformers rendered: {e}",
                case.template, case.conversation
            ),
            (Ok(_), Err(e)) => format!(
                "{} / {}: ours rendered, transformers refused: {e}",
                case.template, case.conversation
            ),
            (Err(_), Err(_)) => unreachable!(),
        });
    }
    for line in &caps_table {
        eprintln!("capabilities  {line}");
    }
    for f in &failures {
        eprintln!("DIFFERENT  {f}");
    }
    for k in &known {
        eprintln!("KNOWN DIFFERENCE  {k}");
    }
    for (t, why) in KNOWN_DIFFERENCES {
        eprintln!("  {t}: {why}");
    }
    for t in &mutable {
        eprintln!(
            "MUTABLE SANDBOX  {t}: transformers' immutable sandbox refuses its list mutation \
             (`ns.list.append`); compared with the same environment, mutable"
        );
    }
    for n in &not_starting {
        eprintln!("NOT STARTING  {n}");
    }
    let same_templates = templates_identical.values().filter(|s| **s).count();
    eprintln!(
        "templates starting: {}/{TEMPLATE_CORPUS_SIZE}",
        TEMPLATE_CORPUS_SIZE - not_starting.len()
    );
    eprintln!(
        "templates rendering identically: {same_templates}/{TEMPLATE_CORPUS_SIZE} (conversations: {identical}/{})",
        TEMPLATE_CORPUS_SIZE * conversations.len()
    );
    check_readme_table(&readme_rows, &templates_identical, &known);
    assert!(not_starting.is_empty(), "{not_starting:#?}");
    assert!(failures.is_empty(), "{} renders differ", failures.len());
}

const FAMILY_START: &str =
    "<!-- family table: generated by tests/template_parity.rs (LGI_WRITE_README=1 rewrites it) -->";
const FAMILY_END: &str = "<!-- end of family table -->";

/// Issue 29: `model.tool_format = "auto"` serves every corpus template in the syntax its
/// family writes (as read by hand above), and README's family table is the registry's,
/// with the corpus templates each family serves.
#[test]
fn every_corpus_template_is_served_in_its_familys_tool_syntax() {
    use llama_gguf_inference::engine::family::{table, FAMILIES};
    use llama_gguf_inference::engine::tool_syntax::ToolFormatSetting;
    let mut wrong = Vec::new();
    let mut served: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    let mut native = 0;
    let corpus = template_corpus();
    assert_eq!(
        corpus.len(),
        EXPECTED_FAMILY.len(),
        "one expectation per template"
    );
    for path in corpus {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let got = ToolFormatSetting::Auto
            .resolve(Some(&source))
            .map_or("generic", |s| s.name());
        let expected = EXPECTED_FAMILY
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no expectation for {name}"))
            .1;
        if got != expected {
            wrong.push(format!("{name}: served as {got}, its family is {expected}"));
        }
        if got != "generic" {
            native += 1;
        }
        served.entry(got).or_default().push(name);
    }
    eprintln!("corpus templates served in a native tool syntax: {native}/{TEMPLATE_CORPUS_SIZE}");
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Every family of the registry serves at least one corpus template.
    for f in FAMILIES {
        assert!(
            served.contains_key(f.name),
            "{} serves no corpus template",
            f.name
        );
    }
    let mut text = table();
    text.push_str(&format!(
        "\nCorpus templates served natively: {native} of {TEMPLATE_CORPUS_SIZE}; the generic JSON envelope serves {}.\n",
        served.get("generic").map_or(String::new(), |v| v.join(", "))
    ));
    check_readme_section(FAMILY_START, FAMILY_END, &text);
}

/// README's text between `start` and `end` is `text`; `LGI_WRITE_README=1` rewrites it.
fn check_readme_section(start_marker: &str, end_marker: &str, text: &str) {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (readme.find(start_marker), readme.find(end_marker)) else {
        panic!("README.md has no {start_marker} markers");
    };
    let body_start = start + start_marker.len() + 1;
    if &readme[body_start..end] == text {
        return;
    }
    if std::env::var_os("LGI_WRITE_README").is_some() {
        let updated = format!("{}{text}{}", &readme[..body_start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        eprintln!("README.md: {start_marker} rewritten");
        return;
    }
    panic!(
        "README.md is out of date: run `LGI_WRITE_README=1 cargo test --no-default-features \
         --features fake-engine --test template_parity` and commit it\n{text}"
    );
}

/// Issue 29: the request's reasoning effort reaches the templates that read it — gpt-oss
/// writes it as its `Reasoning:` system line, Qwen3 closes the thinking block at once for
/// none/minimal (`enable_thinking` false).
#[test]
fn the_reasoning_effort_reaches_the_templates_that_read_it() {
    use llama_gguf_inference::engine::reasoning::Effort;
    use llama_gguf_inference::engine::ChatMessage;
    let read = |name: &str| {
        let path = template_corpus()
            .into_iter()
            .find(|p| p.file_stem().unwrap() == name)
            .unwrap();
        ChatTemplate::new(&std::fs::read_to_string(path).unwrap(), BOS, EOS).unwrap()
    };
    let messages = [ChatMessage::text("user", "Hi".into())];
    let gpt_oss = read("openai-gpt-oss-120b");
    for (effort, line) in [
        (None, "Reasoning: medium"),
        (Some(Effort::High), "Reasoning: high"),
        (Some(Effort::Low), "Reasoning: low"),
        (Some(Effort::None), "Reasoning: low"),
    ] {
        let text = gpt_oss.render_effort(&messages, &[], effort).unwrap();
        assert!(text.contains(line), "{effort:?}: {text}");
    }
    let qwen3 = read("Qwen-Qwen3-0.6B");
    let off = qwen3
        .render_effort(&messages, &[], Some(Effort::None))
        .unwrap();
    assert!(
        off.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        "{off}"
    );
    let on = qwen3
        .render_effort(&messages, &[], Some(Effort::High))
        .unwrap();
    assert!(on.ends_with("<|im_start|>assistant\n"), "{on}");
}
