//! Benchmark (not a test: `#[ignore]`, run by `make bench`). Numbers are printed, never
//! asserted. Measures, for the demo model on this machine, over real TLS:
//! - single-stream generation speed and time to first token (streaming completions);
//! - latency of an authenticated GET /v1/models on a kept-alive connection (auth cache hit).

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_core() {
    let server = Server::start_with(Options {
        model_section: "context = 2048\nthreads = 2\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;

    // Warm-up: first argon2 verification and first generation.
    c.get("/v1/models", Some(ALICE)).await;
    let body =
        json!({"model": MODEL_ID, "prompt": "1, 2, 3, 4,", "max_tokens": 8, "temperature": 0});
    c.post("/v1/completions", Some(ALICE), &body).await;

    // Single-stream generation.
    const RUNS: usize = 5;
    const MAX_TOKENS: u64 = 256;
    let mut ttft = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let body = json!({"model": MODEL_ID, "prompt": "1, 2, 3, 4, 5,", "max_tokens": MAX_TOKENS,
                          "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
        let start = Instant::now();
        let resp = c
            .send_raw(request(
                "POST",
                "/v1/completions",
                Some(ALICE),
                Some(body.to_string()),
            ))
            .await;
        let mut body = resp.into_body();
        let mut first = None;
        let mut last = start;
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            if first.is_none() {
                first = Some(start.elapsed());
            }
            last = Instant::now();
            text.extend_from_slice(&data);
        }
        let events = sse_events(&text);
        let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        let n = usage["usage"]["completion_tokens"].as_u64().unwrap();
        let gen_time = last.duration_since(start) - first.unwrap();
        ttft.push(first.unwrap());
        rates.push((n.saturating_sub(1)) as f64 / gen_time.as_secs_f64());
    }
    ttft.sort();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "single-stream decode: median {:.1} tokens/s (runs: {:?}); time to first token p50 {:?}",
        rates[RUNS / 2],
        rates.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>(),
        percentile(&ttft, 0.5)
    );

    // Authenticated GET /v1/models on one kept-alive TLS connection.
    const N: usize = 500;
    let mut lat = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let r = c.get("/v1/models", Some(ALICE)).await;
        lat.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    lat.sort();
    println!(
        "GET /v1/models (auth cache hit, kept-alive TLS, {N} requests): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[N - 1]
    );
}

/// p50/p99 of `n` authenticated GET /v1/models: on one kept-alive connection, and each on
/// a fresh TLS connection (handshake included).
async fn sample_latency(server: &Server, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut c = server.client().await;
    c.get("/v1/models", Some(ALICE)).await;
    let mut kept = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
        kept.push(t.elapsed());
    }
    let mut fresh = Vec::with_capacity(n / 4);
    for _ in 0..n / 4 {
        let t = Instant::now();
        let mut c = server.client().await;
        assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
        fresh.push(t.elapsed());
    }
    kept.sort();
    fresh.sort();
    (kept, fresh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_latency_with_500_idle_and_slow_connections() {
    use tokio::io::AsyncWriteExt;
    // 500 connections from one test process stand in for 500 clients: lift the
    // per-address cap, and keep the header timeout longer than the measurement.
    let server = Server::start_with(Options {
        server_extra: "max_connections_per_address = 1000\nheader_read_timeout_secs = 120\n".into(),
        ..Options::default()
    });
    const N: usize = 400;
    let (idle_kept, idle_fresh) = sample_latency(&server, N).await;

    // 250 silent connections (TLS done, no request) and 250 trickling a request head.
    let mut silent = Vec::new();
    let mut slow = Vec::new();
    for i in 0..500 {
        let mut s = tls_connect(&server, &[b"http/1.1"]).await.unwrap();
        if i % 2 == 0 {
            silent.push(s);
        } else {
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(s);
        }
    }
    let trickle = tokio::spawn(async move {
        loop {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"X").await;
                let _ = s.flush().await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let (busy_kept, busy_fresh) = sample_latency(&server, N).await;
    trickle.abort();
    drop(silent);

    let p = |v: &[Duration], q| percentile(v, q);
    println!(
        "GET /v1/models, kept-alive: idle server p50 {:?} p99 {:?}; with 500 idle/slow connections p50 {:?} p99 {:?}; p50 ratio {:.2}",
        p(&idle_kept, 0.5),
        p(&idle_kept, 0.99),
        p(&busy_kept, 0.5),
        p(&busy_kept, 0.99),
        p(&busy_kept, 0.5).as_secs_f64() / p(&idle_kept, 0.5).as_secs_f64()
    );
    println!(
        "GET /v1/models, new TLS connection each: idle server p50 {:?} p99 {:?}; with 500 idle/slow connections p50 {:?} p99 {:?}; p50 ratio {:.2}",
        p(&idle_fresh, 0.5),
        p(&idle_fresh, 0.99),
        p(&busy_fresh, 0.5),
        p(&busy_fresh, 0.99),
        p(&busy_fresh, 0.5).as_secs_f64() / p(&idle_fresh, 0.5).as_secs_f64()
    );
}
