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
