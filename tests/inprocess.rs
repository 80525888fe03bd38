//! The fast tier (`make check`): the real server (`server::run`: routes, auth, limits,
//! validation, constraint compiles, SSE, errors, over real TLS on real sockets) in this
//! process, with the deterministic fake engine (`engine::fake`) instead of llama.cpp, so
//! it builds without the C++ library and runs in seconds. What only the whole binary can
//! show (the sandbox, the model, signals) is in the other test files.
//!
//! Expected texts are written out here, not taken from the fake: `ANSWER` below is the
//! fake's documented answer, one word per token.
//!
//! Built only with `--features fake-engine` (`make check`, and `make test` first of all);
//! in the real-engine build this file is empty.
#![cfg(feature = "fake-engine")]

mod common;

use common::inprocess::InProcess;
use common::{Client, Options, ALICE, BOB, MODEL_ID};
use serde_json::{json, Value};
use std::time::Duration;

const ANSWER: &str = "The quick brown fox jumps over the lazy dog.";

fn chat(content: &str) -> Value {
    json!({"model": MODEL_ID, "messages": [{"role": "user", "content": content}]})
}

fn assert_error(reply: &common::Reply, status: u16, kind: &str) -> Value {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.json());
    let body = reply.json();
    let e = &body["error"];
    assert_eq!(e["type"], kind, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    e.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_need_a_valid_key() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let r = c.get("/v1/models", Some(ALICE)).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], MODEL_ID);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    let r = c.get("/v1/models", None).await;
    let e = assert_error(&r, 401, "authentication_error");
    assert_eq!(e["code"], "missing_api_key", "{e}");
    let r = c.get("/v1/models", Some("alice:wrong-secret")).await;
    let e = assert_error(&r, 401, "authentication_error");
    // Nothing in the error echoes what was sent.
    assert!(!r.json().to_string().contains("wrong-secret"), "{e}");
    // The other tenant's key still works after alice's id saw a failure.
    assert_eq!(c.get("/v1/models", Some(BOB)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_wrong_methods() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let r = c.get("/v1/nothing-here", Some(ALICE)).await;
    assert_error(&r, 404, "invalid_request_error");
    let r = c.get("/v1/chat/completions", Some(ALICE)).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_whole_and_cut_by_max_tokens() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let r = c
        .post("/v1/chat/completions", Some(ALICE), &chat("hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let body = r.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL_ID);
    assert_eq!(body["system_fingerprint"], "fp_inprocess");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], ANSWER);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 9);

    let mut cut = chat("hi");
    cut["max_tokens"] = json!(3);
    let body = c
        .post("/v1/chat/completions", Some(ALICE), &cut)
        .await
        .json();
    assert_eq!(body["choices"][0]["message"]["content"], "The quick brown ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_chunks_in_order_then_done() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let mut req = chat("hi");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let events = common::sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, ANSWER);
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 9, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_stream_is_open_mid_way_and_finishes_when_released() {
    use http_body_util::BodyExt;
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    // Held after its first token: the stream has begun and cannot have ended.
    let (mut body, mut seen) = held_stream(&s, &mut c, ALICE).await;
    assert!(seen.contains("\"role\":\"assistant\""), "{seen}");
    assert!(!seen.contains("[DONE]"), "{seen}");
    let (_, metrics) = common::health_get(s.health, "/metrics");
    assert!(
        metrics.contains("\nlgi_active_requests 1\n"),
        "one sequence active while held:\n{metrics}"
    );
    s.gate.open();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_json_names_the_field() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let mut req = chat("hi");
    req["temperatur"] = json!(1);
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    let e = assert_error(&r, 400, "invalid_request_error");
    assert_eq!(e["param"], "temperatur", "{e}");

    let mut req = chat("hi");
    req["temperature"] = json!(9);
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    let e = assert_error(&r, 400, "invalid_request_error");
    assert_eq!(e["param"], "temperature", "{e}");

    let r = c
        .send(common::request(
            "POST",
            "/v1/chat/completions",
            Some(ALICE),
            Some("{not json".into()),
        ))
        .await;
    assert_error(&r, 400, "invalid_request_error");

    let mut req = chat("hi");
    req["model"] = json!("some-other-model");
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    let e = assert_error(&r, 404, "invalid_request_error");
    assert_eq!(e["code"], "model_not_found", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_cap_is_413() {
    let s = InProcess::start(Options {
        extra_toml: "[limits]\nmax_body_bytes = 2048\nmax_prompt_bytes = 1024\n".into(),
        ..Options::default()
    });
    let mut c = s.client().await;
    let r = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat(&"x".repeat(4096)),
        )
        .await;
    assert_error(&r, 413, "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_output_follows_the_schema() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let mut req = chat("a person");
    req["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "person", "strict": true, "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": false
        }}
    });
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let body = r.json();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let person: Value = serde_json::from_str(content).unwrap();
    assert!(person["name"].is_string(), "{person}");
    assert!(person["age"].is_i64(), "{person}");
    assert_eq!(person.as_object().unwrap().len(), 2, "{person}");

    // A schema nothing can satisfy is refused before any engine work.
    req["response_format"]["json_schema"]["schema"] =
        json!({"type": "integer", "minimum": 5, "maximum": 2});
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    assert_error(&r, 400, "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_completions_answer() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let r = c
        .post(
            "/v1/embeddings",
            Some(ALICE),
            &json!({"model": MODEL_ID, "input": ["one", "two"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let body = r.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);

    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &json!({"model": MODEL_ID, "prompt": "Once", "max_tokens": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let body = r.json();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "The quick ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

/// Opens a stream that the closed gate holds after its first token: one generation slot
/// of `cred` stays taken until the returned body is dropped.
/// Returns the body and what it sent so far (up to and including the first token).
async fn held_stream(s: &InProcess, c: &mut Client, cred: &str) -> (hyper::body::Incoming, String) {
    use http_body_util::BodyExt;
    s.gate.close();
    let mut req = chat("hi");
    req["stream"] = json!(true);
    let resp = c
        .send_raw(common::request(
            "POST",
            "/v1/chat/completions",
            Some(cred),
            Some(req.to_string()),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The first token ("The ") proves the generation runs (and holds its slot).
    let mut seen = String::new();
    while !seen.contains("\"The \"") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    (body, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_cap_is_429_before_its_body_is_read() {
    let s = InProcess::start(Options {
        auth_extra: "max_concurrent_generations_per_key = 1\n".into(),
        ..Options::default()
    });
    let mut c1 = s.client().await;
    let (held, _) = held_stream(&s, &mut c1, ALICE).await;
    let mut c2 = s.client().await;
    // Not even parsed: a broken body from a key at its cap is refused for the cap.
    let r = c2
        .send(common::request(
            "POST",
            "/v1/chat/completions",
            Some(ALICE),
            Some("{not json".into()),
        ))
        .await;
    let e = assert_error(&r, 429, "rate_limit_error");
    assert_eq!(e["code"], "rate_limit_exceeded", "{e}");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // The same for embeddings, which share the gate.
    let r = c2
        .post(
            "/v1/embeddings",
            Some(ALICE),
            &json!({"model": MODEL_ID, "input": "x"}),
        )
        .await;
    assert_error(&r, 429, "rate_limit_error");
    // Another key is not affected (one token: done before the closed gate matters).
    let mut one = chat("hi");
    one["max_tokens"] = json!(1);
    let r = c2.post("/v1/chat/completions", Some(BOB), &one).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "The ");
    s.gate.open();
    drop(held);
    let (_, metrics) = common::health_get(s.health, "/metrics");
    assert!(
        metrics.contains("lgi_rate_limited_total{limit=\"generations\"} 2\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_choice_of_n_takes_a_generation_slot() {
    let s = InProcess::start(Options {
        auth_extra: "max_concurrent_generations_per_key = 3\n".into(),
        extra_toml: "[limits]\nmax_n = 3\n".into(),
        ..Options::default()
    });
    let mut c = s.client().await;
    let mut three = chat("hi");
    three["n"] = json!(3);
    three["max_tokens"] = json!(2);
    let body = c
        .post("/v1/chat/completions", Some(ALICE), &three)
        .await
        .json();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{body}");
    assert!(choices
        .iter()
        .all(|c| c["message"]["content"] == "The quick "));
    // With one slot held by a stream, three choices no longer fit the cap of three.
    let mut c2 = s.client().await;
    let (held, _) = held_stream(&s, &mut c2, ALICE).await;
    let r = c.post("/v1/chat/completions", Some(ALICE), &three).await;
    assert_error(&r, 429, "rate_limit_error");
    // Two still do.
    let mut two = three.clone();
    two["n"] = json!(2);
    s.gate.open();
    let r = c.post("/v1/chat/completions", Some(ALICE), &two).await;
    assert_eq!(r.status, 200, "{}", r.json());
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_over_32_kib_is_refused_naming_it() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    // One node with a 40 KiB description: within the body cap and the node cap, over
    // the schema's byte cap.
    let schema = json!({"type": "string", "description": "d".repeat(40 * 1024)});
    assert!(schema.to_string().len() > 40 * 1024);
    let mut req = chat("hi");
    req["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "big", "schema": schema}});
    let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
    let e = assert_error(&r, 400, "invalid_request_error");
    assert_eq!(e["param"], "response_format.json_schema.schema", "{e}");
    assert!(e["message"].as_str().unwrap().contains("32768"), "{e}");
}

/// Issue 29: a tool call cut by `max_tokens` never comes back as text. The fake engine
/// writes the generic envelope under its real constraint, one byte per token; each cut
/// below falls inside a call or between calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tool_call_never_leaks_as_text() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let request = |max_tokens: u64, stream: bool| {
        let mut req = chat("Weather in Paris?");
        req["tools"] = tools.clone();
        req["tool_choice"] = json!("required");
        req["max_tokens"] = json!(max_tokens);
        req["stream"] = json!(stream);
        req
    };
    // The whole answer: one call, in N tokens. Cut one token short, the call is whole
    // and only the envelope's end is missing; cut earlier, inside the call or its opener.
    let (n, _) = common::whole_call_answer(&mut c, &request(400, false)).await;
    for (max_tokens, whole_calls) in [(3, 0), (n / 2, 0), (n - 1, 1)] {
        for stream in [false, true] {
            let r = c
                .post(
                    "/v1/chat/completions",
                    Some(ALICE),
                    &request(max_tokens, stream),
                )
                .await;
            assert_eq!(r.status, 200);
            let (content, calls, finish) = if stream {
                let mut content = String::new();
                let mut calls = Vec::new();
                let mut finish = Value::Null;
                for e in common::sse_events(&r.body) {
                    if e == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(&e).unwrap();
                    let choice = &v["choices"][0];
                    content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
                    // Reassembled as the SDKs do: by index, the name once, the
                    // arguments joined.
                    for d in choice["delta"]["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let i = d["index"].as_u64().unwrap() as usize;
                        if calls.len() <= i {
                            calls.push(json!({"function": {"name": "", "arguments": ""}}));
                        }
                        let f = &mut calls[i]["function"];
                        for key in ["name", "arguments"] {
                            let more = d["function"][key].as_str().unwrap_or("");
                            f[key] = json!(format!("{}{more}", f[key].as_str().unwrap()));
                        }
                    }
                    if !choice["finish_reason"].is_null() {
                        finish = choice["finish_reason"].clone();
                    }
                }
                // A stream sends a call's arguments as they are written (as OpenAI's
                // does): a call the cut went through arrives as far as it was written,
                // after the whole ones, and the finish reason says "length".
                if calls.len() > whole_calls {
                    let cut = calls.pop().unwrap();
                    assert_eq!(cut["function"]["name"], "get_weather", "{cut}");
                    assert!(
                        serde_json::from_str::<Value>(
                            cut["function"]["arguments"].as_str().unwrap()
                        )
                        .is_err(),
                        "a whole call counted as cut: {cut}"
                    );
                }
                (content, calls, finish)
            } else {
                let v = r.json();
                let m = &v["choices"][0]["message"];
                (
                    m["content"].as_str().unwrap_or("").to_string(),
                    m["tool_calls"].as_array().cloned().unwrap_or_default(),
                    v["choices"][0]["finish_reason"].clone(),
                )
            };
            let at = format!("max_tokens {max_tokens}, stream {stream}");
            assert_eq!(finish, "length", "{at}");
            assert!(
                !content.contains("tool_calls") && !content.contains('{'),
                "{at}: {content:?}"
            );
            assert_eq!(content, "", "{at}");
            // Only whole calls, each naming the declared function with valid arguments.
            assert_eq!(calls.len(), whole_calls, "{at}: {calls:?}");
            for call in &calls {
                assert_eq!(call["function"]["name"], "get_weather", "{at}");
                let args: Value =
                    serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
                assert!(args["city"].is_string(), "{at}: {args}");
            }
        }
    }
}

/// The same through /v1/responses: a cut call is never a `message` item holding the
/// envelope; the response says it is incomplete, with the calls that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tool_call_is_no_responses_message() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let request = |max: u64| {
        json!({"model": MODEL_ID, "input": "Weather in Paris?", "tool_choice": "required",
            "max_output_tokens": max,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}]})
    };
    let whole = c
        .post("/v1/responses", Some(ALICE), &request(400))
        .await
        .json();
    assert_eq!(whole["status"], "completed", "{whole}");
    let n = whole["usage"]["output_tokens"].as_u64().unwrap();
    for (max, calls) in [(n / 2, 0), (n - 1, 1)] {
        let v = c
            .post("/v1/responses", Some(ALICE), &request(max))
            .await
            .json();
        assert_eq!(v["status"], "incomplete", "{v}");
        let items = v["output"].as_array().unwrap();
        let texts: Vec<&Value> = items.iter().filter(|i| i["type"] == "message").collect();
        for m in &texts {
            assert!(!m.to_string().contains("tool_calls"), "{v}");
        }
        let made: Vec<&Value> = items
            .iter()
            .filter(|i| i["type"] == "function_call")
            .collect();
        assert_eq!(made.len(), calls, "{v}");
        for call in made {
            assert_eq!(call["name"], "get_weather", "{v}");
        }
    }
}

/// Issue 31: schemas the constraint compiler cannot build are refused in this server's
/// words, naming where, never with the compiler's own text (`<non-verbose/>`,
/// `Failed to generate regex…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbuildable_schemas_are_refused_in_our_words() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    for (schema, param, says) in [
        (
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            "response_format.json_schema.schema.$ref",
            "`$ref` leads through a cycle of references (#/$defs/a → #/$defs/b → #/$defs/a) that never reaches a schema describing a value",
        ),
        (
            json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": i64::MIN}}}),
            "response_format.json_schema.schema.properties.n.maximum",
            "Integer bounds must lie between -9007199254740991 and 9007199254740991 (2^53 - 1, the integers JSON numbers carry exactly)",
        ),
    ] {
        let mut req = chat("hi");
        req["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "s", "schema": schema}});
        let r = c.post("/v1/chat/completions", Some(ALICE), &req).await;
        let e = assert_error(&r, 400, "invalid_request_error");
        assert_eq!(e["param"], param, "{e}");
        assert_eq!(e["code"], "invalid_json_schema", "{e}");
        assert_eq!(e["message"], says, "{e}");
    }
}

/// The health port's /metrics is one registry: the engine's counters, authentication's
/// and the requests' are all there, each counting what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_registry_counts_engine_auth_and_requests() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let r = c
        .post("/v1/chat/completions", Some(ALICE), &chat("hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    // Served from the verified cache: no second argon2 run for alice's right secret.
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
    assert_eq!(
        c.get("/v1/models", Some("alice:wrong-secret")).await.status,
        401
    );
    let want = [
        "\nlgi_ready 1\n",
        "\nlgi_requests_completed_total 1\n",
        "\nlgi_active_requests 0\n",
        "\nlgi_argon2_verifications_total 2\n",
        "\nlgi_auth_address_throttled_total 0\n",
        "lgi_auth_failures_total{reason=\"invalid\"} 1\n",
        "lgi_requests_total{route=\"chat_completions\",status=\"200\",key_id=\"alice\"} 1\n",
        "lgi_requests_total{route=\"models\",status=\"200\",key_id=\"alice\"} 1\n",
    ];
    // A request is counted when its last holder lets go, just after the reply is sent.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, metrics) = common::health_get(s.health, "/metrics");
        assert_eq!(status, 200);
        let missing: Vec<&&str> = want.iter().filter(|w| !metrics.contains(**w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "missing {missing:?} in:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Responses API over the same stack: a whole response and its typed stream agree
/// on the text; an unknown item field is a 400 naming its path; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_whole_and_streamed() {
    let s = InProcess::start(Options::default());
    let mut c = s.client().await;
    let body = json!({"model": MODEL_ID, "input": [{"role": "user", "content": "hi"}]});
    let r = c.post("/v1/responses", Some(ALICE), &body).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], ANSWER);
    assert_eq!(v["usage"]["output_tokens"], 9);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = c.post("/v1/responses", Some(ALICE), &streamed).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let data = data.strip_prefix("data: ").unwrap();
            (
                name.strip_prefix("event: ").unwrap(),
                serde_json::from_str(data).unwrap(),
            )
        })
        .collect();
    let deltas: String = events
        .iter()
        .filter(|(n, _)| *n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ANSWER);
    assert_eq!(events.first().map(|e| e.0), Some("response.created"));
    let (last, done) = events.last().unwrap();
    assert_eq!(*last, "response.completed");
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], ANSWER);
    assert_eq!(done["response"]["usage"], v["usage"]);
    for (i, (_, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], i, "{text}");
    }

    let bad = json!({"model": MODEL_ID, "input": [{"role": "user", "content": "hi", "x": 1}]});
    let r = c.post("/v1/responses", Some(ALICE), &bad).await;
    assert_eq!(
        assert_error(&r, 400, "invalid_request_error")["param"],
        "input[0].x"
    );
    let r = c.get("/v1/responses/resp_1", Some(ALICE)).await;
    assert_eq!(
        assert_error(&r, 404, "invalid_request_error")["code"],
        "response_not_found"
    );
}

/// One scripted model output (issue 29): the server's family (`model.tool_format`) and
/// thinking format, what the model writes (`fake::SCRIPT`), and what a client must get.
struct Vector {
    family: &'static str,
    reasoning: &'static str,
    script: &'static str,
    max_tokens: u64,
    want_reasoning: &'static str,
    want_content: &'static str,
    want_calls: &'static [(&'static str, &'static str)],
    want_finish: &'static str,
    /// A call written without the family's opener: found when the answer is whole, so
    /// a stream sends it whole at the end.
    slip: bool,
}

/// Written from each family's documented output format (not from the parser).
const VECTORS: &[Vector] = &[
    Vector {
        family: "hermes",
        reasoning: "think",
        script: "<think>\nNeed the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        max_tokens: 400,
        want_reasoning: "Need the weather.\n",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "qwen3-coder",
        reasoning: "none",
        script: "Checking both.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=add>\n<parameter=a>\n2\n</parameter>\n<parameter=b>\n40\n</parameter>\n</function>\n</tool_call>",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "Checking both.",
        want_calls: &[("get_weather", r#"{"city":"New York"}"#), ("add", r#"{"a":2,"b":40}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "qwen3-coder",
        reasoning: "none",
        script: "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
        // Cut inside the call: no call, no markers as the answer.
        max_tokens: 9,
        want_reasoning: "",
        want_content: "",
        want_calls: &[],
        want_finish: "length",
        slip: false,
    },
    Vector {
        family: "glm",
        reasoning: "think",
        script: "<think>Two cities.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call><tool_call>get_weather<arg_key>city</arg_key><arg_value>Rome</arg_value></tool_call>",
        max_tokens: 400,
        want_reasoning: "Two cities.",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#), ("get_weather", r#"{"city":"Rome"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "harmony",
        reasoning: "harmony",
        script: "<|channel|>analysis<|message|>User wants the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
        max_tokens: 400,
        want_reasoning: "User wants the weather.",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "harmony",
        reasoning: "harmony",
        script: "<|channel|>analysis<|message|>Just greet.<|end|><|start|>assistant<|channel|>final<|message|>Hello there.<|return|>",
        max_tokens: 400,
        want_reasoning: "Just greet.",
        want_content: "Hello there.",
        want_calls: &[],
        want_finish: "stop",
        slip: false,
    },
    Vector {
        family: "deepseek-v3.1",
        reasoning: "think",
        script: "<think>ok</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"<｜tool▁call▁end｜>\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        max_tokens: 400,
        want_reasoning: "ok",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"<｜tool▁call▁end｜>"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "deepseek-v3.2",
        reasoning: "none",
        script: "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"add\">\n<｜DSML｜parameter name=\"a\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "",
        want_calls: &[("add", r#"{"a":3}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "kimi-k2",
        reasoning: "none",
        script: "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>functions.add:1<|tool_call_argument_begin|>{\"a\": 1}<|tool_call_end|><|tool_calls_section_end|>",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "mistral-args",
        reasoning: "mistral",
        script: "[THINK]Paris.[/THINK]Let me look.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}",
        max_tokens: 400,
        want_reasoning: "Paris.",
        want_content: "Let me look.",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "command-r7b",
        reasoning: "command",
        script: "<|START_THINKING|>Call it.<|END_THINKING|><|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n]<|END_ACTION|>",
        max_tokens: 400,
        want_reasoning: "Call it.",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "minimax-m2",
        reasoning: "think",
        script: "<think>\nhm\n</think>\n\n<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Paris</parameter>\n</invoke>\n</minimax:tool_call>",
        max_tokens: 400,
        want_reasoning: "hm\n",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "llama3",
        reasoning: "none",
        script: "{\"name\": \"add\", \"parameters\": {\"a\": 5, \"b\": 6}}",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "",
        want_calls: &[("add", r#"{"a":5,"b":6}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "gemma4",
        reasoning: "none",
        script: "<|tool_call>call:add{a:2,b:3}<tool_call|><|tool_call>call:get_weather{city:<|\"|>Rome<|\"|>}<tool_call|>",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "",
        want_calls: &[("add", r#"{"a":2,"b":3}"#), ("get_weather", r#"{"city":"Rome"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    Vector {
        family: "apertus",
        reasoning: "none",
        script: "<|tools_prefix|>[{\"get_weather\": {\"city\": \"Bern\"}}]<|tools_suffix|>",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "",
        want_calls: &[("get_weather", r#"{"city":"Bern"}"#)],
        want_finish: "tool_calls",
        slip: false,
    },
    // A slip: the call without its opener, fenced, after a sentence (auto mode).
    Vector {
        family: "hermes",
        reasoning: "none",
        script: "Sure.\n```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "Sure.",
        want_calls: &[("get_weather", r#"{"city":"Paris"}"#)],
        want_finish: "tool_calls",
        slip: true,
    },
    // An ordinary JSON answer is no call.
    Vector {
        family: "hermes",
        reasoning: "none",
        script: "{\"city\": \"Paris\", \"temp_c\": 21}",
        max_tokens: 400,
        want_reasoning: "",
        want_content: "{\"city\": \"Paris\", \"temp_c\": 21}",
        want_calls: &[],
        want_finish: "stop",
        slip: false,
    },
];

fn vector_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "add", "parameters": {"type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a"]}}}
    ])
}

/// (reasoning, content, calls, finish) of a chat answer, whole or streamed.
async fn chat_outcome(
    c: &mut Client,
    v: &Vector,
    stream: bool,
) -> (String, String, Vec<(String, String)>, String) {
    use llama_gguf_inference::engine::fake::SCRIPT;
    let body = json!({"model": MODEL_ID, "max_tokens": v.max_tokens, "stream": stream,
        "tools": vector_tools(),
        "messages": [{"role": "user", "content": format!("{SCRIPT}{}", v.script)}]});
    let r = c.post("/v1/chat/completions", Some(ALICE), &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    if !stream {
        let j = r.json();
        let m = &j["choices"][0]["message"];
        let calls = m["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (s(&c["function"]["name"]), s(&c["function"]["arguments"])))
            .collect();
        return (
            s(&m["reasoning_content"]),
            s(&m["content"]),
            calls,
            s(&j["choices"][0]["finish_reason"]),
        );
    }
    let (mut reasoning, mut content, mut finish) = (String::new(), String::new(), String::new());
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut pieces: Vec<usize> = Vec::new();
    for e in common::sse_events(&r.body) {
        if e == "[DONE]" {
            continue;
        }
        let j: Value = serde_json::from_str(&e).unwrap();
        let choice = &j["choices"][0];
        reasoning.push_str(&s(&choice["delta"]["reasoning_content"]));
        content.push_str(&s(&choice["delta"]["content"]));
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = d["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                // A call's first delta names it, with its id (OpenAI's shape).
                assert_eq!(i, calls.len(), "calls open in order: {e}");
                assert!(
                    d["id"].as_str().is_some_and(|id| id.starts_with("call_")),
                    "{e}"
                );
                assert!(!s(&d["function"]["name"]).is_empty(), "{e}");
                calls.push(Default::default());
                pieces.push(0);
            } else {
                assert!(
                    d["function"].get("name").is_none(),
                    "the name is sent once: {e}"
                );
            }
            calls[i].0.push_str(&s(&d["function"]["name"]));
            let more = s(&d["function"]["arguments"]);
            if !more.is_empty() {
                pieces[i] += 1;
            }
            calls[i].1.push_str(&more);
        }
        if !choice["finish_reason"].is_null() {
            finish = s(&choice["finish_reason"]);
        }
    }
    // The arguments came as they were written (three bytes a token here), not whole.
    for (call, n) in calls.iter().zip(&pieces) {
        assert!(
            v.slip || *n >= 2,
            "{}: {call:?} arrived in {n} piece(s)",
            v.family
        );
    }
    (reasoning, content, calls, finish)
}

/// Issue 29: each family's real-looking output, through parsing and every wire format —
/// chat JSON, chat SSE reassembled as the SDKs do, and Responses items — asserted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn family_outputs_come_back_exactly_through_every_wire() {
    use llama_gguf_inference::engine::fake::SCRIPT;
    for v in VECTORS {
        let s = InProcess::start(Options {
            model_section: format!(
                "context = 1024\nthreads = 2\ntool_format = \"{}\"\nreasoning_format = \"{}\"\n",
                v.family, v.reasoning
            ),
            ..Options::default()
        });
        let mut c = s.client().await;
        let want_calls: Vec<(String, String)> = v
            .want_calls
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect();
        let at = format!("{} {:?}", v.family, &v.script[..v.script.len().min(40)]);
        for stream in [false, true] {
            let got = chat_outcome(&mut c, v, stream).await;
            assert_eq!(
                got,
                (
                    v.want_reasoning.to_string(),
                    v.want_content.to_string(),
                    want_calls.clone(),
                    v.want_finish.to_string()
                ),
                "{at}, stream {stream}"
            );
        }
        // Responses: a reasoning item, a message only for text, one function_call per call.
        let body = json!({"model": MODEL_ID, "max_output_tokens": v.max_tokens,
            "input": format!("{SCRIPT}{}", v.script),
            "tools": vector_tools().as_array().unwrap().iter()
                .map(|t| { let mut f = t["function"].clone(); f["type"] = json!("function"); f })
                .collect::<Vec<_>>()});
        let r = c.post("/v1/responses", Some(ALICE), &body).await.json();
        let items = r["output"].as_array().unwrap();
        let text = |kind: &str, part: &str| -> String {
            items
                .iter()
                .filter(|i| i["type"] == kind)
                .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["type"] == part)
                .map(|p| p["text"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(
            text("reasoning", "reasoning_text"),
            v.want_reasoning,
            "{at}: {r}"
        );
        assert_eq!(text("message", "output_text"), v.want_content, "{at}: {r}");
        let made: Vec<(String, String)> = items
            .iter()
            .filter(|i| i["type"] == "function_call")
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    i["arguments"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(made, want_calls, "{at}: {r}");
        let status = if v.want_finish == "length" {
            "incomplete"
        } else {
            "completed"
        };
        assert_eq!(r["status"], status, "{at}: {r}");

        // Responses streamed: each call's item opens with its name, its arguments come
        // in pieces, and the items closed are the calls; the final object agrees.
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let reply = c.post("/v1/responses", Some(ALICE), &streamed).await;
        let events = common::typed_events(&reply.body);
        let mut pieces: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut closed = Vec::new();
        let mut last = Value::Null;
        for (name, e) in &events {
            match name.as_str() {
                "response.function_call_arguments.delta" => pieces
                    .entry(e["item_id"].as_str().unwrap().to_string())
                    .or_default()
                    .push(e["delta"].as_str().unwrap().to_string()),
                "response.output_item.done" if e["item"]["type"] == "function_call" => {
                    closed.push(e["item"].clone())
                }
                "response.completed" | "response.incomplete" => last = e["response"].clone(),
                _ => {}
            }
        }
        let whole: Vec<&Value> = closed
            .iter()
            .filter(|i| i["status"] != "incomplete")
            .collect();
        let done: Vec<(String, String)> = whole
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    i["arguments"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(done, want_calls, "{at}: {events:?}");
        for item in &whole {
            let id = item["id"].as_str().unwrap();
            let joined: String = pieces.get(id).map(|p| p.concat()).unwrap_or_default();
            assert_eq!(
                joined,
                item["arguments"].as_str().unwrap(),
                "{at}: {events:?}"
            );
            assert!(
                v.slip || pieces[id].len() >= 2,
                "{at}: one piece: {events:?}"
            );
        }
        let final_calls: Vec<&Value> = last["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "function_call")
            .collect();
        assert_eq!(final_calls, whole, "{at}: {last}");
    }
}
