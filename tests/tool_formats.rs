//! Native tool-call formats, with the real binary and the real model under a chat template
//! of each family (written here from each family's documented syntax, not copied from a
//! model repository). The test model was not trained on any of them, so the calls are
//! made with `tool_choice: "required"` or a named function: the engine writes the
//! family's opener, the constraint makes the call name a declared function with valid
//! arguments, and the answer comes back as OpenAI `tool_calls`. Checked per family: the
//! start-up log names the syntax `auto` found, the prompt carries the tools in the
//! template's own words (no generic instructions message), and the call parses.

mod common;

use common::*;
use serde_json::{json, Value};

/// Hermes / Qwen 2.5: tools in `<tools>`, calls in `<tool_call>` blocks, results in
/// `<tool_response>`.
const HERMES: &str = r#"{%- if tools %}<|im_start|>system
You may call functions. Signatures within <tools></tools>:
<tools>
{%- for t in tools %}
{{ t | tojson }}
{%- endfor %}
</tools>
For each call write <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.tool_calls %}<|im_start|>assistant
{%- for c in m.tool_calls %}
<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

/// Llama 3.1: JSON tool calling (`{"name", "parameters"}`), `<|python_tag|>` before a
/// call in the history, results from the `ipython` role.
const LLAMA3: &str = r#"{%- if tools %}<|start_header_id|>system<|end_header_id|>

Environment: ipython
Answer a function call as JSON {"name": function name, "parameters": arguments}. Functions:
{% for t in tools %}{{ t | tojson }}
{% endfor %}<|eot_id|>{% endif %}
{%- for m in messages %}
{%- if m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- elif m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>

{% for c in m.tool_calls %}<|python_tag|>{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% endfor %}<|eom_id|>
{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- endif %}{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"#;

/// Mistral (v3 tokenizer): tools in `[AVAILABLE_TOOLS]` before the last user turn, calls
/// as a `[TOOL_CALLS]` list, results in `[TOOL_RESULTS]`.
const MISTRAL: &str = r#"{%- for m in messages %}
{%- if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]
{%- elif m.role == 'system' %}[INST]{{ m.content }}[/INST]
{%- elif m.tool_calls %}[TOOL_CALLS][{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]</s>
{%- elif m.role == 'tool' %}[TOOL_RESULTS]{"content": {{ m.content | tojson }}}[/TOOL_RESULTS]
{%- else %}{{ m.content }}</s>
{%- endif %}{%- endfor %}"#;

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
                           "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "add", "description": "Add two integers",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "required": ["a", "b"], "additionalProperties": false}}}
    ])
}

/// A tool round trip in the history: a call, its result, then a new question.
fn history() -> Value {
    json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"},
        {"role": "user", "content": "And what is 2 plus 3?"}
    ])
}

fn args(call: &Value) -> Value {
    serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {call}"))
}

/// One family end to end: the syntax found, a forced call, a named call, streaming, and
/// the Responses API.
async fn family(template: &str, name: &str) {
    let (server, _template) = server_with_template(template, "");
    let log = server.log_text();
    assert!(
        log.contains(&format!("key=\"model.tool_format\" value={name}")),
        "auto should find {name}:\n{log}"
    );
    // check-config names the syntax and renders the sample conversation (a call and its
    // result) in the family's own format.
    let config = server.dir.path().join("config.toml");
    let (code, out, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("model.tool_format = {name}")),
        "{out}"
    );
    assert!(out.contains("split_mode \"layer\""), "{out}");
    let call_marker = match name {
        "hermes" => "<tool_call>",
        "llama3" => "<|python_tag|>{\"name\": \"get_weather\"",
        _ => "[TOOL_CALLS][{\"name\": \"get_weather\"",
    };
    assert!(out.contains(call_marker), "{call_marker} missing:\n{out}");
    eprintln!("{name} check-config:\n{out}");
    let mut c = server.client().await;

    // Required (one call): a declared function with arguments valid for it.
    let body = json!({"model": MODEL_ID, "temperature": 0, "max_tokens": 80,
        "messages": history(), "tools": tools(), "tool_choice": "required",
        "parallel_tool_calls": false});
    let r = c.post("/v1/chat/completions", Some(ALICE), &body).await;
    assert_eq!(
        r.status,
        200,
        "{name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{name}: {v}");
    eprintln!("{name} answer: {}", choice["message"]);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{name}: {v}");
    let called = calls[0]["function"]["name"].as_str().unwrap();
    let a = args(&calls[0]);
    match called {
        "get_weather" => assert!(a["city"].is_string(), "{a}"),
        "add" => assert!(a["a"].is_i64() && a["b"].is_i64(), "{a}"),
        other => panic!("{name}: undeclared function {other}"),
    }
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));

    // A named function: that one, whatever the model prefers.
    let mut named = body.clone();
    named["tool_choice"] = json!({"type": "function", "function": {"name": "add"}});
    let v = c
        .post("/v1/chat/completions", Some(ALICE), &named)
        .await
        .json();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "add", "{name}: {v}");
    let a = args(call);
    assert!(a["a"].is_i64() && a["b"].is_i64(), "{name}: {a}");

    // Streamed: one tool_calls delta, then finish_reason tool_calls.
    let mut streamed = named.clone();
    streamed["stream"] = json!(true);
    let r = c.post("/v1/chat/completions", Some(ALICE), &streamed).await;
    let chunks: Vec<Value> = sse_events(&r.body)
        .into_iter()
        .filter(|e| e != "[DONE]")
        .map(|e| serde_json::from_str(&e).unwrap())
        .collect();
    let delta_call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .unwrap_or_else(|| panic!("{name}: no tool_calls delta"));
    assert_eq!(delta_call[0]["function"]["name"], "add");
    assert_eq!(delta_call[0]["index"], 0);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls", "{last}");

    // The Responses API: a function_call item.
    let resp = json!({"model": MODEL_ID, "temperature": 0, "max_output_tokens": 80,
        "input": "What is 2 plus 3?", "parallel_tool_calls": false,
        "tools": [{"type": "function", "name": "add", "description": "Add two integers",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "required": ["a", "b"], "additionalProperties": false}}],
        "tool_choice": "required"});
    let v = c.post("/v1/responses", Some(ALICE), &resp).await.json();
    let item = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap_or_else(|| panic!("{name}: no function_call item: {v}"));
    assert_eq!(item["name"], "add", "{v}");
    let a: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    assert!(a["a"].is_i64(), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermes_calls_come_back_as_tool_calls() {
    family(HERMES, "hermes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama3_calls_come_back_as_tool_calls() {
    family(LLAMA3, "llama3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistral_calls_come_back_as_tool_calls() {
    family(MISTRAL, "mistral").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_hermes_calls_and_the_generic_override() {
    // Parallel calls allowed: at least one call, every one declared and valid.
    let (server, _template) = server_with_template(HERMES, "");
    let mut c = server.client().await;
    let body = json!({"model": MODEL_ID, "temperature": 0, "max_tokens": 160,
        "messages": history(), "tools": tools(), "tool_choice": "required"});
    let v = c
        .post("/v1/chat/completions", Some(ALICE), &body)
        .await
        .json();
    let native_prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert!((1..=8).contains(&calls.len()), "{v}");
    for call in calls {
        let n = call["function"]["name"].as_str().unwrap();
        assert!(n == "add" || n == "get_weather", "{v}");
        let _ = args(call);
    }
    drop(c);
    drop(server);

    // `model.tool_format = "generic"` keeps the JSON envelope under the same template.
    let (server, _template) = server_with_template(HERMES, "tool_format = \"generic\"\n");
    assert!(!server.log_text().contains("key=\"model.tool_format\""));
    let mut c = server.client().await;
    let v = c
        .post("/v1/chat/completions", Some(ALICE), &body)
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    // The generic format adds its instructions message; the native one lets the
    // template describe the tools: the same request is longer here.
    let generic_prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        generic_prompt > native_prompt,
        "{generic_prompt} vs {native_prompt}"
    );
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &json!({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}],
                    "tools": tools(), "tool_choice": "required", "max_tokens": 80}),
        )
        .await;
    assert_eq!(r.status, 200);
}

/// Issue 29, as reported: the test model's own template (generic envelope), `required`,
/// cut by `max_tokens` inside its answer. The reply carries the calls completed before the
/// cut as `tool_calls`, says `length`, and never the envelope as content — whole or
/// streamed, and through /v1/responses. The cuts are placed from the whole answer's
/// length (temperature 0 writes the same prefix again), so they fall inside the answer
/// on any hardware.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_generic_answer_returns_its_whole_calls_never_the_envelope() {
    let server = Server::start();
    let mut c = server.client().await;
    let weather = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let question = "What is the weather in Paris, Rome, Oslo, Lima and Cairo?";
    let body = |max_tokens: u64, stream: bool| {
        json!({"model": MODEL_ID, "max_tokens": max_tokens, "temperature": 0, "stream": stream,
            "tools": weather, "tool_choice": "required",
            "messages": [{"role": "user", "content": question}]})
    };
    let (n, all) = whole_call_answer(&mut c, &body(400, false)).await;
    for max_tokens in [n / 2, n - 1] {
        let v = c
            .post(
                "/v1/chat/completions",
                Some(ALICE),
                &body(max_tokens, false),
            )
            .await
            .json();
        let choice = &v["choices"][0];
        eprintln!("cut at {max_tokens} of {n}: {choice}");
        assert_eq!(choice["finish_reason"], "length", "{v}");
        let content = choice["message"]["content"].as_str().unwrap_or("");
        assert!(!content.contains('{'), "the envelope leaked: {v}");
        let calls = choice["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(calls.len() < all || max_tokens == n - 1, "{v}");
        for call in &calls {
            assert_eq!(call["function"]["name"], "get_weather", "{v}");
            assert!(args(call)["city"].is_string(), "{v}");
        }

        // Streamed: the same calls, the same finish, no envelope in any delta.
        let r = c
            .post("/v1/chat/completions", Some(ALICE), &body(max_tokens, true))
            .await;
        // Arguments joined per call index, as the SDKs reassemble them.
        let mut streamed: Vec<String> = Vec::new();
        let mut finish = Value::Null;
        for e in sse_events(&r.body) {
            if e == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(&e).unwrap();
            let ch = &chunk["choices"][0];
            assert!(
                !ch["delta"]["content"].as_str().unwrap_or("").contains('{'),
                "{chunk}"
            );
            for d in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = d["index"].as_u64().unwrap() as usize;
                if streamed.len() <= i {
                    streamed.resize(i + 1, String::new());
                }
                streamed[i].push_str(d["function"]["arguments"].as_str().unwrap_or(""));
            }
            if !ch["finish_reason"].is_null() {
                finish = ch["finish_reason"].clone();
            }
        }
        assert_eq!(finish, "length");
        // The whole calls, then at most the one the cut went through, as far as it was
        // written (a stream cannot take back what it sent: its arguments may even be
        // whole when the cut fell before the call object's own end).
        let whole = streamed
            .iter()
            .filter(|a| serde_json::from_str::<Value>(a).is_ok())
            .count();
        assert!(whole >= calls.len(), "{streamed:?} {v}");
        assert!(streamed.len() <= calls.len() + 1, "{streamed:?} {v}");

        // Responses: incomplete, the same calls as function_call items, no message
        // holding the envelope.
        let v = c
            .post(
                "/v1/responses",
                Some(ALICE),
                &json!({"model": MODEL_ID, "max_output_tokens": max_tokens, "temperature": 0,
                    "tool_choice": "required", "input": question,
                    "tools": [{"type": "function", "name": "get_weather",
                               "parameters": weather[0]["function"]["parameters"]}]}),
            )
            .await
            .json();
        assert_eq!(v["status"], "incomplete", "{v}");
        let items = v["output"].as_array().unwrap();
        for item in items.iter().filter(|i| i["type"] == "message") {
            assert!(!item.to_string().contains("tool_calls"), "{v}");
        }
        let made = items
            .iter()
            .filter(|i| i["type"] == "function_call")
            .count();
        assert_eq!(made, calls.len(), "{v}");
    }
}
