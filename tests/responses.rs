//! The Responses API (`/v1/responses`) of the real binary with the real model, over real
//! TLS, read as raw bytes: the typed stream events in OpenAI's order with a
//! `sequence_number` counting up from 0, the `event:` line matching each `type`, every
//! refused field named in a 400, nothing stored (404 by id), the token count, and a
//! client that leaves stopping its generation. The SDK-level checks are
//! tests/responses_sdk.py and tests/agents_client.py (run by tests/openai_sdk.rs).

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Duration;

const QUESTION: &str = "What is the capital of France?";

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"], "additionalProperties": false}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_and_tool_calls_come_as_typed_events_in_order() {
    let server = Server::start();
    let mut c = server.client().await;
    // A count the model goes on with: cut by max_output_tokens, on any hardware.
    let body = json!({"model": MODEL_ID, "input": "Count from 1 to 100: 1, 2, 3,",
                      "max_output_tokens": 8, "temperature": 0, "stream": true});
    let r = c.post("/v1/responses", Some(ALICE), &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let events = typed_events(&r.body);
    let n = events.len();
    let deltas = n - 8;
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]);
    assert!(deltas >= 1, "{:?}", names(&events));
    assert_eq!(names(&events), want);
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{id}");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let last = &events[n - 1].1["response"];
    assert_eq!(last["id"], id, "one response id throughout");
    assert_eq!(last["status"], "incomplete");
    assert_eq!(last["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(last["usage"]["output_tokens"], 8);
    assert_eq!(last["output"][0]["content"][0]["text"], text);
    assert_eq!(events[n - 4].1["text"], text, "output_text.done");
    assert_eq!(
        events[2].1["item"]["id"], last["output"][0]["id"],
        "one item id throughout"
    );

    // The same request as a whole body: the same text.
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let r = c.post("/v1/responses", Some(ALICE), &whole).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["output"][0]["content"][0]["text"], text);
    assert_eq!(v["usage"]["input_tokens"], last["usage"]["input_tokens"]);
    assert_eq!(v["usage"]["output_tokens"], 8);
    // The second time, the prompt came from the key's prefix cache.
    assert!(
        v["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{v}"
    );

    // A tool call: the function_call item's events, then completed.
    let body = json!({"model": MODEL_ID, "input": "What is the weather in Paris?",
                      "tools": [weather_tool()], "tool_choice": "required",
                      "parallel_tool_calls": false, "max_output_tokens": 60,
                      "temperature": 0, "stream": true});
    let r = c.post("/v1/responses", Some(ALICE), &body).await;
    assert_eq!(r.status, 200);
    let events = typed_events(&r.body);
    eprintln!("streamed response with a tool call, events in order:");
    for (name, data) in &events {
        eprintln!("  {} {name}", data["sequence_number"]);
    }
    // The call's item opens with its name, its arguments follow as they are written
    // (one delta or more), then the item closes and the response completes.
    let kinds = names(&events);
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.function_call_arguments.delta")
        .count();
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ];
    want.extend(std::iter::repeat_n(
        "response.function_call_arguments.delta",
        deltas,
    ));
    want.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert!(deltas >= 1, "{kinds:?}");
    assert_eq!(kinds, want);
    let n = events.len();
    let call = &events[n - 2].1["item"];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["status"], "completed");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    let joined: String = events
        .iter()
        .filter(|(k, _)| k == "response.function_call_arguments.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(joined, call["arguments"].as_str().unwrap());
    assert_eq!(events[n - 1].1["response"]["output"][0], *call);

    // Issue 29: `max_tool_calls` bounds the calls, parallel calls allowed (the engine
    // ends the answer at the bound), and is echoed.
    let body = json!({"model": MODEL_ID, "input": "Weather in Paris, Rome and Oslo?",
                      "tools": [weather_tool()], "tool_choice": "required",
                      "max_tool_calls": 1, "max_output_tokens": 200, "temperature": 0});
    let v = c.post("/v1/responses", Some(ALICE), &body).await.json();
    assert_eq!(v["max_tool_calls"], 1, "{v}");
    let made = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .count();
    assert_eq!(made, 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_fields_are_named_and_nothing_is_stored() {
    let server = Server::start();
    let mut c = server.client().await;
    let base = json!({"model": MODEL_ID, "input": "hi", "max_output_tokens": 4});
    for (extra, param) in [
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"conversation": "conv_1"}), "conversation"),
        (json!({"store": true}), "store"),
        (json!({"background": true}), "background"),
        (json!({"prompt": {"id": "pmpt_1"}}), "prompt"),
        (json!({"truncation": "auto"}), "truncation"),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "file_search", "vector_store_ids": []}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [{"type": "code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [{"type": "computer_use_preview"}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [{"type": "image_generation"}]}),
            "tools[0].type",
        ),
        (
            json!({"include": ["file_search_call.results"]}),
            "include[0]",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": "x", "extra": 1}]}),
            "input[0].extra",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "schema": {}}}}),
            "text.format.name",
        ),
        (json!({"max_output_tokens": 0}), "max_output_tokens"),
        (json!({"mirostat": 2}), "mirostat"),
    ] {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = c.post("/v1/responses", Some(ALICE), &body).await;
        assert_eq!(
            r.status,
            400,
            "{extra}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = &r.json()["error"];
        assert_eq!(e["param"], param, "{extra}: {e}");
        assert_eq!(e["type"], "invalid_request_error", "{e}");
    }
    // Nothing is kept, so nothing can be fetched, cancelled or deleted by id.
    for (method, path) in [
        ("GET", "/v1/responses/resp_123"),
        ("DELETE", "/v1/responses/resp_123"),
        ("POST", "/v1/responses/resp_123/cancel"),
        ("GET", "/v1/responses/resp_123/input_items"),
    ] {
        let r = c.send(request(method, path, Some(ALICE), None)).await;
        assert_eq!(r.status, 404, "{method} {path}");
        let e = &r.json()["error"];
        assert_eq!(e["code"], "response_not_found", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("does not store"),
            "{e}"
        );
    }
    // Authentication comes first on these paths too.
    let r = c
        .send(request("GET", "/v1/responses/resp_123", None, None))
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .send(request("PUT", "/v1/responses/resp_123", Some(ALICE), None))
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST, DELETE"));
    let r = c
        .send(request("GET", "/v1/responses", Some(ALICE), None))
        .await;
    assert_eq!(r.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_tokens_counts_what_a_response_would_read() {
    let server = Server::start();
    let mut c = server.client().await;
    let input = json!([{"role": "user", "content": QUESTION}]);
    let count = c
        .post(
            "/v1/responses/input_tokens",
            Some(ALICE),
            &json!({"model": MODEL_ID, "input": input, "instructions": "Be brief."}),
        )
        .await;
    assert_eq!(
        count.status,
        200,
        "{}",
        String::from_utf8_lossy(&count.body)
    );
    let count = count.json();
    assert_eq!(count["object"], "response.input_tokens");
    let r = c
        .post(
            "/v1/responses",
            Some(ALICE),
            &json!({"model": MODEL_ID, "input": input, "instructions": "Be brief.",
                    "max_output_tokens": 1}),
        )
        .await
        .json();
    assert_eq!(count["input_tokens"], r["usage"]["input_tokens"]);
    assert!(count["input_tokens"].as_u64().unwrap() > 5, "{count}");
    // Counting generates nothing: one generation completed, with its one token, and none
    // was started (and cancelled) for the count.
    server.wait_for("the generation counted", Duration::from_secs(10), || {
        server.metric("lgi_requests_completed_total") == 1
    });
    assert_eq!(server.metric("lgi_completion_tokens_total"), 1);
    assert_eq!(server.metric("lgi_requests_cancelled_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_responses_stream_stops_its_generation() {
    // Slow steps (test hook): the stream is still running when the client leaves.
    let server = Server::start_with(slow_steps());
    let mut c = server.client().await;
    let body = json!({"model": MODEL_ID, "input": "Count: 1, 2, 3,", "max_output_tokens": 400,
                      "temperature": 0, "stream": true});
    let resp = c
        .send_raw(request(
            "POST",
            "/v1/responses",
            Some(ALICE),
            Some(body.to_string()),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Read until the first text delta arrives.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("response.output_text.delta") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(server.metric("lgi_active_requests"), 1, "generating");
    drop(body);
    drop(c);
    server.wait_for(
        "the cancelled generation to be counted",
        Duration::from_secs(30),
        || server.metric("lgi_requests_cancelled_total") == 1,
    );
    assert!(server.metric("lgi_completion_tokens_total") < 400);
    // Served on: another tenant's request goes through.
    let r = server
        .client()
        .await
        .post(
            "/v1/responses",
            Some(BOB),
            &json!({"model": MODEL_ID, "input": "hi", "max_output_tokens": 2}),
        )
        .await;
    assert_eq!(r.status, 200);
}
