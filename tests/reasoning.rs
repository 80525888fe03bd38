//! Reasoning models, with the real binary and the real model under a chat template that
//! opens a `<think>` block in its generation prompt (as DeepSeek-R1 distills' and Qwen3's
//! do; written here from that documented shape). The test model was not trained to
//! think, so the tests do not wait for it to close the block: they cut inside it
//! (`max_tokens`, a stop string) or spend a thinking budget (`reasoning_effort`), after
//! which the engine writes `</think>` and the model answers. Checked: the thinking comes
//! back as `reasoning_content` / a reasoning item and never as the answer, counted in
//! `reasoning_tokens`; an output constraint applies to the answer only; a model that does
//! not think refuses `reasoning_effort` by name.

mod common;

use common::*;
use serde_json::{json, Value};

/// ChatML whose generation prompt opens the thinking block.
const THINKING_CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

/// Thinking budget of `reasoning_effort: "low"` in these servers.
const LOW: u64 = 3;
/// At most this many thinking tokens for the forced "\n</think>" (one per character at
/// worst; the blank line after it is answer).
const CLOSER_MAX: u64 = 9;

fn thinking_server() -> (Server, tempfile::TempDir) {
    server_with_template(
        THINKING_CHATML,
        &format!("reasoning_budget_low = {LOW}\nreasoning_budget_medium = 8\n"),
    )
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": MODEL_ID, "temperature": 0,
        "messages": [{"role": "user", "content": "What is 2 + 2?"}]});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    body
}

fn message(v: &Value) -> &Value {
    &v["choices"][0]["message"]
}

fn reasoning_tokens(v: &Value) -> u64 {
    v["usage"]["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reasoning_tokens: {v}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_is_split_out_cut_truthfully_and_capped_by_effort() {
    let (server, _template) = thinking_server();
    let log = server.log_text();
    assert!(
        log.contains("key=\"model.reasoning_format\" value=think"),
        "auto should find <think> in the template:\n{log}"
    );
    let mut c = server.client().await;

    // Cut inside the thinking by max_tokens: all of it is reasoning, the answer is empty.
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 4})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let thought = text(&message(&v)["reasoning_content"]).to_string();
    assert!(!thought.is_empty(), "{v}");
    assert_eq!(message(&v)["content"], "", "{v}");
    assert_eq!(reasoning_tokens(&v), 4, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");

    // A stop string inside the thinking: finish "stop", the thinking up to it, no answer.
    let word = thought
        .split_whitespace()
        .find(|w| w.len() >= 3)
        .unwrap_or_else(|| panic!("a word in {thought:?}"))
        .to_string();
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 4, "stop": [word.clone()]})),
        )
        .await;
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let before = &thought[..thought.find(&word).unwrap()];
    assert_eq!(
        message(&v).get("reasoning_content").map_or("", |r| text(r)),
        before.trim_start(),
        "{v}"
    );
    assert_eq!(message(&v)["content"], "", "{v}");

    // reasoning_effort "low": LOW thinking tokens, then the forced closer, then the
    // model's own answer, which carries no marker.
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 40, "reasoning_effort": "low"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let reasoning = text(&message(&v)["reasoning_content"]);
    let content = text(&message(&v)["content"]);
    assert!(!reasoning.is_empty() && !content.is_empty(), "{v}");
    for part in [reasoning, content] {
        assert!(!part.contains("think>"), "a marker leaked: {v}");
    }
    let n = reasoning_tokens(&v);
    assert!((LOW + 1..=LOW + CLOSER_MAX).contains(&n), "{n}: {v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > n, "{v}");

    // "none": no thinking at all (the closer comes first), only an answer.
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 20, "reasoning_effort": "none"})),
        )
        .await;
    let v = r.json();
    assert!(message(&v).get("reasoning_content").is_none(), "{v}");
    assert!(!text(&message(&v)["content"]).is_empty(), "{v}");
    assert!((1..=CLOSER_MAX).contains(&reasoning_tokens(&v)), "{v}");

    // Streamed: every reasoning delta before the first content delta, no marker in
    // either, and the usage counts the thinking.
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(
                json!({"max_tokens": 40, "reasoning_effort": "low", "stream": true,
                         "stream_options": {"include_usage": true}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    let (mut reasoning, mut content, mut usage) = (String::new(), String::new(), Value::Null);
    for e in sse_events(&r.body) {
        if e == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&e).unwrap();
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let delta = &chunk["choices"][0]["delta"];
        if let Some(r) = delta["reasoning_content"].as_str() {
            assert!(content.is_empty(), "thinking after the answer began: {e}");
            reasoning.push_str(r);
        }
        if let Some(t) = delta["content"].as_str() {
            content.push_str(t);
        }
    }
    assert!(!reasoning.is_empty() && !content.is_empty());
    assert!(!reasoning.contains("think>") && !content.contains("think>"));
    let n = usage["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap();
    assert!((LOW + 1..=LOW + CLOSER_MAX).contains(&n), "{usage}");

    // An effort the API does not know is a 400 naming the field.
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"reasoning_effort": "max"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "reasoning_effort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constrained_answer_comes_after_free_thinking() {
    let (server, _template) = thinking_server();
    let mut c = server.client().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}},
                        "required": ["answer"], "additionalProperties": false});
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 60, "reasoning_effort": "low",
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "a", "strict": true, "schema": schema}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    // The thinking was free text (the constraint waited); the answer is the schema's.
    assert!(!text(&message(&v)["reasoning_content"]).is_empty(), "{v}");
    let answer: Value = serde_json::from_str(text(&message(&v)["content"]))
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {v}"));
    assert!(answer["answer"].is_i64(), "{answer}");
    assert_eq!(answer.as_object().unwrap().len(), 1, "{answer}");

    // With a forced tool call: the call is parsed, the thinking kept beside it.
    let tool = json!({"type": "function", "function": {"name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"], "additionalProperties": false}}});
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 80, "reasoning_effort": "low",
                         "tools": [tool], "tool_choice": "required"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &message(&v)["tool_calls"][0]["function"];
    assert_eq!(call["name"], "add", "{v}");
    let args: Value = serde_json::from_str(text(&call["arguments"])).unwrap();
    assert!(args["a"].is_i64() && args["b"].is_i64(), "{args}");
    assert!(!text(&message(&v)["reasoning_content"]).is_empty(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_thinking_as_a_reasoning_item() {
    let (server, _template) = thinking_server();
    let mut c = server.client().await;
    let body = json!({"model": MODEL_ID, "input": "What is 2 + 2?", "temperature": 0,
                      "max_output_tokens": 40, "reasoning": {"effort": "low", "summary": "auto"}});
    let r = c.post("/v1/responses", Some(ALICE), &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{v}");
    assert_eq!(output[0]["type"], "reasoning", "{v}");
    assert_eq!(output[0]["content"][0]["type"], "reasoning_text", "{v}");
    assert!(!text(&output[0]["content"][0]["text"]).is_empty(), "{v}");
    assert_eq!(output[1]["type"], "message", "{v}");
    assert!(!text(&output[1]["content"][0]["text"]).is_empty(), "{v}");
    assert_eq!(v["reasoning"]["effort"], "low", "{v}");
    let n = v["usage"]["output_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap();
    assert!((LOW + 1..=LOW + CLOSER_MAX).contains(&n), "{v}");

    // Streamed: the reasoning item at output_index 0 opens, streams and closes before
    // the message item (output_index 1) opens.
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = c.post("/v1/responses", Some(ALICE), &stream).await;
    assert_eq!(r.status, 200);
    let events = typed_events(&r.body);
    let names = names(&events);
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} missing: {names:?}"))
    };
    assert!(at("response.reasoning_text.delta") < at("response.reasoning_text.done"));
    assert!(at("response.reasoning_text.done") < at("response.output_text.delta"));
    let (_, added) = &events[at("response.output_item.added")];
    assert_eq!(added["item"]["type"], "reasoning", "{added}");
    for (name, e) in &events {
        match name.as_str() {
            "response.reasoning_text.delta" => assert_eq!(e["output_index"], 0, "{e}"),
            "response.output_text.delta" => assert_eq!(e["output_index"], 1, "{e}"),
            _ => {}
        }
    }
    let (_, done) = events.last().unwrap();
    assert_eq!(done["type"], "response.completed", "{done}");
    assert_eq!(done["response"]["output"][0]["type"], "reasoning", "{done}");

    // A cut inside the thinking: incomplete, the reasoning item only.
    let cut = json!({"model": MODEL_ID, "input": "What is 2 + 2?", "temperature": 0,
                     "max_output_tokens": 3});
    let v = c.post("/v1/responses", Some(ALICE), &cut).await.json();
    assert_eq!(v["status"], "incomplete", "{v}");
    assert_eq!(v["output"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["output"][0]["type"], "reasoning", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_does_not_think_refuses_reasoning_effort_by_name() {
    // The test model's own template has no <think>: auto resolves to none.
    let server = Server::start();
    assert!(
        server
            .log_text()
            .contains("key=\"model.reasoning_format\" value=none"),
        "{}",
        server.log_text()
    );
    let mut c = server.client().await;
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 2, "reasoning_effort": "low"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["param"], "reasoning_effort", "{e}");
    assert!(
        text(&e["error"]["message"]).contains("model.reasoning_format"),
        "{e}"
    );
    let r = c
        .post(
            "/v1/responses",
            Some(ALICE),
            &json!({"model": MODEL_ID, "input": "hi", "reasoning": {"effort": "high"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "reasoning.effort");
    // Without an effort nothing changes: no reasoning field, reasoning_tokens 0.
    let v = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(json!({"max_tokens": 3})),
        )
        .await
        .json();
    assert!(message(&v).get("reasoning_content").is_none(), "{v}");
    assert_eq!(reasoning_tokens(&v), 0, "{v}");
}
