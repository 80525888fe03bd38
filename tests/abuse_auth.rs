//! Credential brute force over real TLS: an address out of failed-attempt budget gets
//! 429 without any argon2 work, other clients and already-verified keys keep working.

mod common;

use common::*;

#[tokio::test]
async fn brute_force_from_one_address_is_throttled_without_hashing() {
    let server = Server::start_with(Options {
        auth_extra: "failed_auth_per_minute_per_address = 5\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;
    // A legitimate client proves its key once.
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);

    for i in 0..5 {
        let r = c.get("/v1/models", Some(&format!("alice:guess-{i}"))).await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let hashed = server.metric("lgi_argon2_verifications_total");
    for cred in ["alice:guess-x", "mallory:whatever", "bob:x"] {
        let r = c.get("/v1/models", Some(cred)).await;
        assert_eq!(r.status, 429, "{cred}");
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    assert_eq!(
        server.metric("lgi_argon2_verifications_total"),
        hashed,
        "throttled attempts must not run argon2"
    );
    assert_eq!(server.metric("lgi_auth_address_throttled_total"), 3);
    // The verified key still works from the same address (HMAC cache, no argon2).
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
    assert_eq!(server.metric("lgi_argon2_verifications_total"), hashed);
}

#[tokio::test]
async fn tokens_per_minute_are_charged_as_prompt_plus_max_tokens() {
    let server = Server::start_with(Options {
        auth_extra: "default_tokens_per_minute = 100\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;
    let body = serde_json::json!({"model": MODEL_ID, "prompt": "Hello there", "max_tokens": 60});
    let r = c.post("/v1/completions", Some(ALICE), &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-tokens").as_deref(), Some("100"));
    let prompt = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    let remaining: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    // 100 - (prompt + 60), give or take the refill during the request.
    assert!(
        remaining.abs_diff(100 - prompt - 60) <= 2,
        "remaining {remaining}, prompt {prompt}"
    );
    // Still some budget left: admitted, and the charge goes into debt.
    assert_eq!(
        c.post("/v1/completions", Some(ALICE), &body).await.status,
        200
    );
    // In debt now: refused until it refills.
    let r = c.post("/v1/completions", Some(ALICE), &body).await;
    assert_eq!(r.status, 429);
    let v = r.json();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100 tokens per minute"),
        "{v}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((5..=60).contains(&retry), "{retry}");
    // Other endpoints are not token-limited.
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_hold_more_generations_than_its_slots() {
    use http_body_util::BodyExt;
    let server = Server::start_with(Options {
        auth_extra: "max_concurrent_generations_per_key = 1\n".into(),
        model_section: "context = 4096\nthreads = 2\n".into(),
        extra_toml: "[limits]\nmax_tokens = 3000\n".into(),
        ..Options::default()
    });
    // A long streamed generation holds alice's only slot while its body is open.
    let mut c = server.client().await;
    let long = serde_json::json!({"model": MODEL_ID, "prompt": "1, 2, 3, 4,", "max_tokens": 3000,
        "temperature": 0, "stream": true});
    let resp = c
        .send_raw(request(
            "POST",
            "/v1/completions",
            Some(ALICE),
            Some(long.to_string()),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();

    let short = serde_json::json!({"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2});
    let mut other = server.client().await;
    let r = other.post("/v1/completions", Some(ALICE), &short).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent requests for this key (limit 1)"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Listing models needs no slot.
    assert_eq!(other.get("/v1/models", Some(ALICE)).await.status, 200);

    // The client leaves: the slot comes back.
    drop(stream);
    drop(c);
    let mut ok = false;
    for _ in 0..100 {
        let r = other.post("/v1/completions", Some(ALICE), &short).await;
        if r.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(r.status, 429);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot was not released after the stream was dropped");
}
