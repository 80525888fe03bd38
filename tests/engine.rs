//! The engine seen from outside, over real TLS with the real model: continuous batching,
//! prefix reuse and its per-key scope, fair admission across keys, queued requests of
//! departed clients dropped before they cost compute. Assertions are about order and
//! counts, never about speed (the benchmark measures speed).

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn model_section(parallel: u32, extra: &str) -> String {
    format!("context = 1024\nthreads = 2\nparallel = {parallel}\n{extra}")
}

fn counting(max_tokens: u32, stream: bool) -> Value {
    json!({"model": MODEL_ID, "prompt": "1, 2, 3, 4, 5,", "max_tokens": max_tokens,
           "temperature": 0, "stream": stream})
}

/// Stream a completion; returns when its first text arrived and when it ended.
async fn timed_stream(server: &Server, body: Value) -> (Instant, Instant) {
    let mut c = server.client().await;
    let resp = c
        .send_raw(request(
            "POST",
            "/v1/completions",
            Some(ALICE),
            Some(body.to_string()),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut first = None;
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        if first.is_none() && data.windows(8).any(|w| w == b"\"text\":\"") {
            first = Some(Instant::now());
        }
        all.extend_from_slice(&data);
    }
    assert!(sse_events(&all).last().is_some_and(|e| e == "[DONE]"));
    (first.expect("a text chunk"), Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_batched_not_queued() {
    let server = Server::start_with(Options {
        model_section: model_section(4, ""),
        ..Options::default()
    });
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let s = &server;
            async move { timed_stream(s, counting(160, true)).await }
        })
        .collect();
    let times = futures_join_all(runs).await;
    let last_first_token = times.iter().map(|t| t.0).max().unwrap();
    let first_end = times.iter().map(|t| t.1).min().unwrap();
    // A serial engine starts the 2nd stream only after the 1st ended.
    assert!(
        last_first_token < first_end,
        "every stream produced text before any finished"
    );
    assert_eq!(server.metric("lgi_requests_completed_total"), 4);
    assert_eq!(server.metric("lgi_active_requests"), 0);
}

/// Run futures concurrently on this task (no extra crate for join_all).
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_greedy_output_equals_the_output_alone() {
    let server = Server::start_with(Options {
        model_section: model_section(4, ""),
        ..Options::default()
    });
    let mut c = server.client().await;
    let body = |prompt: &str| json!({"model": MODEL_ID, "prompt": prompt, "max_tokens": 24, "temperature": 0});
    let alone = c
        .post("/v1/completions", Some(ALICE), &body("1, 2, 3,"))
        .await;
    assert_eq!(alone.status, 200);
    let alone = alone.json()["choices"][0]["text"].clone();

    let prompts = [
        "The capital of France is",
        "1, 2, 3,",
        "Once upon a time",
        "a b c d",
    ];
    let mut clients = Vec::new();
    for _ in prompts {
        clients.push(server.client().await);
    }
    let bodies: Vec<Value> = prompts.iter().map(|p| body(p)).collect();
    let runs: Vec<_> = clients
        .iter_mut()
        .zip(&bodies)
        .map(|(c, b)| c.post("/v1/completions", Some(ALICE), b))
        .collect::<Vec<_>>();
    let replies = futures_join_all(runs).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(replies[1].json()["choices"][0]["text"], alone);
}

fn chat_turns(turns: &[(&str, &str)]) -> Value {
    let mut messages = vec![json!({"role": "system", "content":
        "You are a terse assistant for a test suite. Answer in a few words."})];
    for (role, content) in turns {
        messages.push(json!({"role": role, "content": content}));
    }
    json!({"model": MODEL_ID, "messages": messages, "max_tokens": 12, "temperature": 0})
}

fn cached(reply: &Reply) -> u64 {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("usage.prompt_tokens_details.cached_tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_chat_reuses_the_cached_prefix_of_the_same_key_only() {
    // One slot, so every request lands on the same cache.
    let server = Server::start_with(Options {
        model_section: model_section(1, ""),
        ..Options::default()
    });
    let mut c = server.client().await;
    let first = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat_turns(&[("user", "Name a colour.")]),
        )
        .await;
    assert_eq!(cached(&first), 0, "nothing cached yet");
    let first_prompt = first.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    let answer = first.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    // The next turn repeats the conversation: its shared beginning is not recomputed.
    let second = c
        .post(
            "/v1/chat/completions",
            Some(ALICE),
            &chat_turns(&[
                ("user", "Name a colour."),
                ("assistant", &answer),
                ("user", "Another one."),
            ]),
        )
        .await;
    let hit = cached(&second);
    assert!(
        hit >= first_prompt / 2 && hit < second.json()["usage"]["prompt_tokens"].as_u64().unwrap(),
        "cached {hit} of the first prompt's {first_prompt} tokens"
    );
    // The log line is read from the server's stderr by another thread: wait for it.
    server.wait_for("the log line with the hit", Duration::from_secs(10), || {
        server.log_text().contains(&format!("cached_tokens={hit}"))
    });
    assert!(server.metric("lgi_prompt_tokens_cached_total") >= hit);

    // Another key with the very same conversation gets nothing from alice's cache.
    let other = c
        .post(
            "/v1/chat/completions",
            Some(LIMITED),
            &chat_turns(&[("user", "Name a colour.")]),
        )
        .await;
    assert_eq!(cached(&other), 0, "per-key scope: no cross-key reuse");

    // Streaming usage carries the same field.
    let body = {
        let mut b = chat_turns(&[("user", "Name a colour.")]);
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
        b
    };
    let r = c.post("/v1/chat/completions", Some(LIMITED), &body).await;
    let events = sse_events(&r.body);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_prefix_cache_reuses_across_keys_and_off_never_reuses() {
    for (policy, expect_hit) in [("shared", true), ("off", false)] {
        let server = Server::start_with(Options {
            model_section: model_section(1, &format!("prefix_cache = \"{policy}\"\n")),
            ..Options::default()
        });
        let mut c = server.client().await;
        let body = chat_turns(&[("user", "Name a colour.")]);
        let a = c.post("/v1/chat/completions", Some(ALICE), &body).await;
        assert_eq!(cached(&a), 0);
        let b = c.post("/v1/chat/completions", Some(LIMITED), &body).await;
        assert_eq!(cached(&b) > 0, expect_hit, "prefix_cache = {policy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_key_does_not_starve_another() {
    // One sequence: requests are served one after another, in the queue's order.
    let server = Server::start_with(Options {
        model_section: model_section(1, ""),
        ..Options::default()
    });
    let body = json!({"model": MODEL_ID, "prompt": "1, 2, 3,", "max_tokens": 40, "temperature": 0});
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    // alice fills her four generation slots: one runs, three wait.
    for i in 0..4 {
        let mut c = server.client().await;
        let (b, tx) = (body.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r = c.post("/v1/completions", Some(ALICE), &b).await;
            assert_eq!(r.status, 200);
            tx.send(format!("alice-{i}")).unwrap();
        });
    }
    server.wait_for("alice's requests to queue", Duration::from_secs(30), || {
        server.metric("lgi_queue_depth") == 3
    });
    // Then another key asks once.
    let mut c = server.client().await;
    let tx = done_tx.clone();
    let b = body.clone();
    tokio::spawn(async move {
        let r = c.post("/v1/completions", Some(LIMITED), &b).await;
        assert_eq!(r.status, 200);
        tx.send("limited".to_string()).unwrap();
    });
    let mut order = Vec::new();
    while order.len() < 5 {
        order.push(done_rx.recv().await.unwrap());
    }
    let position = order.iter().position(|o| o == "limited").unwrap();
    // FIFO would serve it last (position 4). Round-robin: after the running request and
    // at most the one whose turn came first.
    assert!(position <= 2, "served order: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_whose_client_left_costs_nothing() {
    let server = Server::start_with(Options {
        model_section: model_section(1, ""),
        ..Options::default()
    });
    // A long generation holds the only sequence.
    let mut running = server.client().await;
    let resp = running
        .send_raw(request(
            "POST",
            "/v1/completions",
            Some(ALICE),
            Some(counting(400, true).to_string()),
        ))
        .await;
    let mut running_body = resp.into_body();
    running_body.frame().await.unwrap().unwrap();

    // A second request queues behind it; then its client disconnects.
    let c = server.client().await;
    let waiting = tokio::spawn(async move {
        let mut c = c;
        c.post("/v1/completions", Some(ALICE), &counting(400, false))
            .await
    });
    server.wait_for(
        "the second request to queue",
        Duration::from_secs(30),
        || server.metric("lgi_queue_depth") == 1,
    );
    waiting.abort();
    let _ = waiting.await;
    server.wait_for(
        "the departed request to leave the queue",
        Duration::from_secs(30),
        || {
            server.metric("lgi_queue_depth") == 0
                && server.metric("lgi_requests_cancelled_total") == 1
        },
    );
    // Dropped while the first still runs: it never reached a sequence.
    assert_eq!(server.metric("lgi_active_requests"), 1);
    let prompt_before = server.metric("lgi_prompt_tokens_total");
    drop(running_body);
    drop(running);
    server.wait_for("the engine to go idle", Duration::from_secs(30), || {
        server.metric("lgi_active_requests") == 0
    });
    assert_eq!(server.metric("lgi_requests_completed_total"), 0);
    assert_eq!(server.metric("lgi_prompt_tokens_total"), prompt_before);
    assert_eq!(server.metric("lgi_requests_cancelled_total"), 2);
}

#[test]
fn batch_smaller_than_parallel_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &Options {
            model_section: "parallel = 8\nbatch = 4\n".into(),
            ..Options::default()
        },
    );
    let (code, _, err) = run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("model.batch") && err.contains("model.parallel"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_prefilled_in_chunks_between_other_streams_tokens() {
    // Steps of at most 32 tokens: an ~800-token prompt needs ~25 of them.
    let server = Server::start_with(Options {
        model_section: model_section(2, "batch = 32\n"),
        ..Options::default()
    });
    let stamps = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let mut a = server.client().await;
    let resp = a
        .send_raw(request(
            "POST",
            "/v1/completions",
            Some(ALICE),
            Some(counting(600, true).to_string()),
        ))
        .await;
    let mut a_body = resp.into_body();
    a_body.frame().await.unwrap().unwrap();
    let reader = tokio::spawn({
        let stamps = stamps.clone();
        async move {
            while let Some(Ok(frame)) = a_body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let events = data.windows(6).filter(|w| w == b"data: ").count();
                    let now = Instant::now();
                    stamps
                        .lock()
                        .unwrap()
                        .extend(std::iter::repeat_n(now, events));
                }
            }
        }
    });

    // While A generates, B arrives with a long prompt.
    let long_prompt = "word ".repeat(800);
    let body = json!({"model": MODEL_ID, "prompt": long_prompt, "max_tokens": 1, "stream": true});
    let sent = Instant::now();
    let (b_first, _) = timed_stream(&server, body).await;
    let during = stamps
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > sent && **t < b_first)
        .count();
    reader.abort();
    // Prefilling all of B before A's next token would allow at most one or two here.
    assert!(
        during >= 10,
        "A received {during} tokens while B's prompt was prefilled"
    );
}
