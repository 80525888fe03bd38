//! The OpenAI API end to end: the real binary, real TLS, the real model.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Duration;

fn chat_body(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": content}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn completion_body(prompt: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL_ID, "prompt": prompt});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// POST a chat request as `alice`.
async fn chat(c: &mut Client, content: &str, extra: Value) -> Reply {
    c.post(
        "/v1/chat/completions",
        Some(ALICE),
        &chat_body(content, extra),
    )
    .await
}

/// A short chat that must succeed: proves the server (still) serves.
async fn assert_serves(c: &mut Client) {
    let r = chat(c, "Hi", json!({"max_tokens": 3})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn assert_openai_error(reply: &Reply, status: u16, kind: &str) -> Value {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let v = reply.json();
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_and_fetched() {
    let server = Server::start();
    let mut c = server.client().await;
    let r = c.get("/v1/models", Some(ALICE)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL_ID);
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert!(
        r.header("server").is_none(),
        "no Server header may leak a version"
    );

    let r = c.get(&format!("/v1/models/{MODEL_ID}"), Some(ALICE)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], MODEL_ID);

    let r = c.get("/v1/models/gpt-4", Some(ALICE)).await;
    let v = assert_openai_error(&r, 404, "invalid_request_error");
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_are_accepted_and_listed_and_nothing_else_is() {
    let server = Server::start_with(Options {
        model_section: format!(
            "{}aliases = [\"gpt-4o-mini\", \"old-gateway-name\"]\n",
            Options::default().model_section
        ),
        ..Options::default()
    });
    let mut c = server.client().await;
    let v = c.get("/v1/models", Some(ALICE)).await.json();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL_ID, "gpt-4o-mini", "old-gateway-name"]);
    assert_eq!(
        c.get("/v1/models/old-gateway-name", Some(ALICE))
            .await
            .json()["id"],
        "old-gateway-name"
    );
    for name in ["gpt-4o-mini", "old-gateway-name"] {
        let r = c
            .post(
                "/v1/chat/completions",
                Some(ALICE),
                &json!({"model": name, "max_tokens": 2,
                        "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}");
        // Answers name the model by its id.
        assert_eq!(r.json()["model"], MODEL_ID);
    }
    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &json!({"model": "gpt-4", "prompt": "hi", "max_tokens": 2}),
        )
        .await;
    let v = assert_openai_error(&r, 404, "invalid_request_error");
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_non_streaming_and_streaming_agree() {
    let server = Server::start();
    let mut c = server.client().await;
    let greedy = json!({"temperature": 0, "max_tokens": 24});
    let r = chat(&mut c, "What is the capital of France?", greedy.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL_ID);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let text = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    let usage = &v["usage"];
    let (p, comp) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(
        p > 5,
        "the templated prompt is more than a few tokens: {usage}"
    );
    assert!((1..=24).contains(&comp));
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + comp);
    let reason = choice["finish_reason"].as_str().unwrap();
    assert!(
        reason == "stop" && comp < 24 || reason == "length" && comp == 24,
        "{reason} {comp}"
    );

    // The same greedy request streamed: same text, same usage, well-formed chunks.
    let mut body = chat_body("What is the capital of France?", greedy);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = c.post("/v1/chat/completions", Some(ALICE), &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let events = sse_events(&r.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, text);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], reason);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"].as_array().unwrap().len(), 0);
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap(),
        comp
    );
    assert_eq!(usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap(), p);
    // Without include_usage no usage chunk is sent.
    let mut body = chat_body("Hi", json!({"max_tokens": 3, "stream": true}));
    body["temperature"] = json!(0);
    let r = c.post("/v1/chat/completions", Some(ALICE), &body).await;
    let events = sse_events(&r.body);
    assert!(events
        .iter()
        .filter(|e| *e != "[DONE]")
        .all(|e| !e.contains("\"usage\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_length_and_stop_sequences() {
    let server = Server::start();
    let mut c = server.client().await;
    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &completion_body("1, 2, 3, 4,", json!({"temperature": 0, "max_tokens": 12})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let full = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert!(full.chars().count() > 4, "{full:?}");

    // Pick a stop string from the middle of the greedy output: the reply must end right
    // before it, without it, with finish_reason "stop".
    let chars: Vec<char> = full.chars().collect();
    let start = chars.len() / 2;
    let stop: String = chars[start..(start + 2).min(chars.len())].iter().collect();
    let expected_end = full.find(&stop).unwrap();
    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &completion_body(
                "1, 2, 3, 4,",
                json!({"temperature": 0, "max_tokens": 12, "stop": [stop.clone(), "@@never@@"]}),
            ),
        )
        .await;
    let v = r.json();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, &full[..expected_end], "stop {stop:?} in {full:?}");
    assert!(!text.contains(&stop));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Streaming completions carry the same text.
    let r = c
        .post(
            "/v1/completions",
            Some(ALICE),
            &completion_body(
                "1, 2, 3, 4,",
                json!({"temperature": 0, "max_tokens": 12, "stream": true}),
            ),
        )
        .await;
    let events = sse_events(&r.body);
    let streamed: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, full);
}

/// The repetition penalties reach sampling on the real model (the engine applies them
/// itself since issue 30): a counting prompt, greedy, repeats its separators; with a
/// frequency penalty the answer must differ, and the same request gives the same text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalties_change_a_greedy_answer() {
    let server = Server::start();
    let mut c = server.client().await;
    let plain = completion_body("1, 2, 3, 4,", json!({"temperature": 0, "max_tokens": 24}));
    let penalized = completion_body(
        "1, 2, 3, 4,",
        json!({"temperature": 0, "max_tokens": 24,
               "frequency_penalty": 2.0, "presence_penalty": 1.0}),
    );
    let mut answers = Vec::new();
    for body in [&plain, &penalized, &penalized] {
        let r = c.post("/v1/completions", Some(ALICE), body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        answers.push(r.json()["choices"][0]["text"].as_str().unwrap().to_string());
    }
    assert_ne!(answers[0], answers[1], "{answers:?}");
    assert_eq!(answers[1], answers[2], "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_text() {
    let server = Server::start();
    let mut c = server.client().await;
    let body = chat_body(
        "Write a short poem about the sea.",
        json!({"temperature": 1.0, "seed": 1234, "max_tokens": 20}),
    );
    let a = c
        .post("/v1/chat/completions", Some(ALICE), &body)
        .await
        .json();
    let b = c
        .post("/v1/chat/completions", Some(ALICE), &body)
        .await
        .json();
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert!(!a["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_401_and_limits_are_429() {
    let server = Server::start();
    let mut c = server.client().await;
    let v = assert_openai_error(
        &c.get("/v1/models", None).await,
        401,
        "authentication_error",
    );
    assert_eq!(v["error"]["code"], "missing_api_key");
    let wrong = c.get("/v1/models", Some("alice:not-the-secret")).await;
    let v = assert_openai_error(&wrong, 401, "authentication_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    // SECURITY: the presented secret is never echoed.
    assert!(!String::from_utf8_lossy(&wrong.body).contains("not-the-secret"));
    assert_openai_error(
        &c.get("/v1/models", Some("mallory:alice-secret-0123456789"))
            .await,
        401,
        "authentication_error",
    );
    assert_openai_error(
        &c.get("/v1/models", Some("no-colon-here")).await,
        401,
        "authentication_error",
    );
    let v = assert_openai_error(
        &c.get("/v1/models", Some(EXPIRED)).await,
        401,
        "authentication_error",
    );
    assert_eq!(v["error"]["code"], "expired_api_key");

    // HTTP Basic with user = key_id, password = api_key.
    let basic = <base64ct::Base64 as base64ct::Encoding>::encode_string(ALICE.as_bytes());
    let req = hyper::Request::builder()
        .uri("/v1/models")
        .header("host", "localhost")
        .header("authorization", format!("Basic {basic}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(c.send(req).await.status, 200);

    // `limited` allows 3 requests per minute.
    for i in 0..3 {
        let r = c.get("/v1/models", Some(LIMITED)).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("x-ratelimit-limit-requests").as_deref(), Some("3"));
    }
    let r = c.get("/v1/models", Some(LIMITED)).await;
    let v = assert_openai_error(&r, 429, "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    // Another key is unaffected.
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);

    // Nothing secret reached the log.
    let log = server.log_text();
    for s in [
        "alice-secret",
        "not-the-secret",
        "limited-secret",
        "$argon2id$",
    ] {
        assert!(!log.contains(s), "log leaked {s}");
    }
    assert!(
        log.contains("key_id=alice"),
        "the key id is attached to the request span"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_openai_errors_and_the_server_keeps_serving() {
    let server = Server::start_with(Options {
        extra_toml: "[limits]\nmax_body_bytes = 4096\nmax_prompt_bytes = 4096\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;
    assert_openai_error(
        &c.get("/v1/nothing", Some(ALICE)).await,
        404,
        "invalid_request_error",
    );
    assert_openai_error(&c.get("/", None).await, 404, "invalid_request_error");
    let r = c.get("/v1/chat/completions", Some(ALICE)).await;
    assert_openai_error(&r, 405, "invalid_request_error");
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    assert_openai_error(
        &c.send(request("DELETE", "/v1/models", Some(ALICE), None))
            .await,
        405,
        "invalid_request_error",
    );

    let bad_json = c
        .send(request(
            "POST",
            "/v1/chat/completions",
            Some(ALICE),
            Some("{\"model\":".into()),
        ))
        .await;
    assert_openai_error(&bad_json, 400, "invalid_request_error");

    let mut req = request(
        "POST",
        "/v1/chat/completions",
        Some(ALICE),
        Some(chat_body("hi", json!({})).to_string()),
    );
    req.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    assert_openai_error(&c.send(req).await, 415, "invalid_request_error");

    let huge = chat_body(&"x".repeat(10_000), json!({}));
    assert_openai_error(
        &c.post("/v1/chat/completions", Some(ALICE), &huge).await,
        413,
        "invalid_request_error",
    );

    let r = chat(&mut c, "hi", json!({"temperature": -1})).await;
    let v = assert_openai_error(&r, 400, "invalid_request_error");
    assert_eq!(v["error"]["param"], "temperature");
    let r = chat(&mut c, "hi", json!({"frobnicate": true})).await;
    assert_eq!(
        assert_openai_error(&r, 400, "invalid_request_error")["error"]["param"],
        "frobnicate"
    );
    let r = chat(&mut c, "hi", json!({"max_tokens": 0})).await;
    assert_eq!(
        assert_openai_error(&r, 400, "invalid_request_error")["error"]["param"],
        "max_tokens"
    );
    let mut other_model = chat_body("hi", json!({}));
    other_model["model"] = json!("gpt-4o");
    let v = assert_openai_error(
        &c.post("/v1/chat/completions", Some(ALICE), &other_model)
            .await,
        404,
        "invalid_request_error",
    );
    assert_eq!(v["error"]["code"], "model_not_found");

    // Unauthenticated requests are refused before the body is looked at.
    assert_openai_error(
        &c.post("/v1/chat/completions", None, &chat_body("hi", json!({})))
            .await,
        401,
        "authentication_error",
    );

    // Garbage instead of a TLS handshake, and garbage inside TLS, end only those
    // connections: each is closed by the server (read to the end within the deadline,
    // not left open), with no HTTP answer on the plain one and at most a 400 inside TLS.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn read_until_closed(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
            let mut buf = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
            assert!(closed.is_ok(), "the server left the connection open");
            buf
        }
        let mut raw = tokio::net::TcpStream::connect(server.api).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let reply = read_until_closed(&mut raw).await;
        assert!(
            !reply.starts_with(b"HTTP/"),
            "plain HTTP on the TLS port got an HTTP answer: {}",
            String::from_utf8_lossy(&reply)
        );
        let mut tls = tls_connector(&server.ca_pem())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tokio::net::TcpStream::connect(server.api).await.unwrap(),
            )
            .await
            .unwrap();
        tls.write_all(b"\x00\x01\x02 NOT HTTP \xff\r\n\r\n")
            .await
            .unwrap();
        let buf = read_until_closed(&mut tls).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
    }

    // After all that, a real request on a fresh connection still works.
    assert_serves(&mut server.client().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_longer_than_the_context_is_a_400() {
    let server = Server::start_with(Options {
        model_section: "context = 256\nthreads = 2\n".into(),
        extra_toml: "[limits]\nmax_tokens = 64\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;
    let long = "word ".repeat(400);
    let r = chat(&mut c, &long, json!({})).await;
    let v = assert_openai_error(&r, 400, "invalid_request_error");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // A prompt that fits plus a max_tokens that does not is also refused, not truncated.
    let r = chat(&mut c, &"word ".repeat(200), json!({"max_tokens": 64})).await;
    assert_openai_error(&r, 400, "invalid_request_error");
    // And the engine is fine afterwards.
    assert_serves(&mut c).await;
}

/// A long greedy count keeps the engine busy well past the checks below.
fn long_generation() -> Value {
    completion_body(
        "1, 2, 3, 4, 5,",
        json!({"temperature": 0, "max_tokens": 400, "stream": true}),
    )
}

/// Start a long streaming generation, read its first chunk, and check the engine is busy.
/// Returns the connection and the body still being streamed.
async fn start_long_generation(server: &Server) -> (Client, hyper::body::Incoming) {
    let mut c = server.client().await;
    let req = request(
        "POST",
        "/v1/completions",
        Some(ALICE),
        Some(long_generation().to_string()),
    );
    let resp = c.send_raw(req).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(
        server.metric("lgi_active_requests"),
        1,
        "generation is running"
    );
    (c, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_generating_and_disconnect_cancels() {
    // Slow steps (test hook): the 400-token stream is still running when the checks
    // below look, however fast the build is.
    let server = Server::start_with(slow_steps());
    let (c, body) = start_long_generation(&server).await;

    // The health port answers, and says ready, while the engine is generating.
    for _ in 0..20 {
        assert_eq!(
            health_get(server.health, "/health"),
            (200, "{\"status\":\"ok\"}".into())
        );
        assert_eq!(health_get(server.health, "/ready").0, 200);
    }
    assert_eq!(
        server.metric("lgi_active_requests"),
        1,
        "still generating during the health checks"
    );
    assert_eq!(
        health_get(server.health, "/v1/models").0,
        404,
        "health port serves no API"
    );

    // The client goes away mid-stream: the engine notices and stops that generation.
    drop(body);
    drop(c);
    server.wait_for(
        "the cancelled generation to be counted",
        Duration::from_secs(30),
        || server.metric("lgi_requests_cancelled_total") == 1,
    );
    assert_eq!(server.metric("lgi_active_requests"), 0);
    let generated = server.metric("lgi_completion_tokens_total");
    assert!(generated < 400, "stopped early: {generated} of 400 tokens");

    // The next request is served.
    assert_serves(&mut server.client().await).await;
    assert!(server
        .log_text()
        .contains("generation cancelled: client went away"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_503_with_retry_after() {
    // One sequence: the running generation holds it, so the next request must queue.
    let server = Server::start_with(Options {
        extra_toml: "[limits]\nqueue_depth = 1\n".into(),
        model_section: "context = 1024\nthreads = 2\nparallel = 1\n".into(),
        ..slow_steps()
    });
    let (running, running_body) = start_long_generation(&server).await;

    // One request fits in the queue behind it...
    let queued_client = server.client().await;
    let queued = tokio::spawn(async move {
        let mut c = queued_client;
        c.post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat_body("Hi", json!({"max_tokens": 2})),
        )
        .await
    });
    server.wait_for(
        "the second request to queue",
        Duration::from_secs(30),
        || server.metric("lgi_queue_depth") == 1,
    );

    // ...the next one is refused at once with 503 and Retry-After.
    let mut c = server.client().await;
    let r = chat(&mut c, "Hi", json!({"max_tokens": 2})).await;
    let v = assert_openai_error(&r, 503, "server_error");
    assert_eq!(v["error"]["code"], "overloaded");
    assert!(r.header("retry-after").is_some());

    // Freeing the engine lets the queued request finish normally.
    drop(running_body);
    drop(running);
    let r = queued.await.unwrap();
    assert_eq!(r.status, 200);
}
