//! TLS as clients see it: protocol versions, ALPN, and the logged certificate fingerprint.

mod common;

use common::*;

async fn connect(
    server: &Server,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tls_connector_with(&server.ca_pem(), versions, alpn);
    let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_alpn_and_fingerprint() {
    let server = Server::start();
    // TLS 1.3 with ALPN h2 preferred: the server picks h2.
    let s = connect(&server, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]).await;
    let (_, conn) = s.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

    // TLS 1.2 still works, with http/1.1.
    let s = connect(&server, &[&rustls::version::TLS12], &[b"http/1.1"]).await;
    let (_, conn) = s.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    // The fingerprint in the start-up log is the SHA-256 of the served certificate.
    let pem = std::fs::read(server.ca_pem()).unwrap();
    let der =
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
        .next()
        .unwrap()
        .unwrap();
    let served = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served.as_ref(), der.as_ref());
    // Computed here with coreutils' sha256sum over the certificate the handshake served,
    // not with the crate's own function, in the form clients pin (AA:BB:…, as OpenSSL's
    // `x509 -fingerprint -sha256` prints it).
    let expected = pinned(served.as_ref(), server.dir.path());
    assert_eq!(expected.len(), 32 * 3 - 1, "{expected}");
    assert!(
        server.log_text().contains(&format!("sha256={expected}")),
        "{}",
        server.log_text()
    );
}

/// A self-signed localhost pair valid from `from_days` to `to_days` around now: (cert
/// PEM, key PEM, cert DER, notAfter in unix seconds).
fn new_pair(from_days: i64, to_days: i64) -> (String, String, Vec<u8>, u64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let cert = params.self_signed(&key).unwrap();
    let not_after = params.not_after.unix_timestamp() as u64;
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().to_vec(),
        not_after,
    )
}

/// The fingerprint as clients pin it (AA:BB:…), computed by coreutils, not by the server.
fn pinned(der: &[u8], scratch: &std::path::Path) -> String {
    let file = scratch.join("pin.der");
    std::fs::write(&file, der).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap().to_uppercase();
    assert_eq!(hex.len(), 64, "{hex}");
    let pairs: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
    pairs.join(":")
}

/// certbot's renewal: new numbered files in archive/NAME, then each live/NAME link
/// replaced atomically (a new link renamed over the old).
fn renew(le: &std::path::Path, n: u32, cert: &str, key: &str) {
    let archive = le.join("archive/localhost");
    let live = le.join("live/localhost");
    std::fs::write(archive.join(format!("fullchain{n}.pem")), cert).unwrap();
    std::fs::write(archive.join(format!("privkey{n}.pem")), key).unwrap();
    for stem in ["fullchain", "privkey"] {
        let tmp = live.join(format!("{stem}.pem.new"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("../../archive/localhost/{stem}{n}.pem"), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(format!("{stem}.pem"))).unwrap();
    }
}

fn hup(server: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Connect trusting only the certificate(s) in `pem`; the served leaf's DER.
async fn handshake(server: &Server, pem: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(server.api).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let s = tls_connector(pem).connect(name, tcp).await?;
    Ok(s.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_under_load_and_keeps_it_on_a_bad_pair() {
    use http_body_util::BodyExt;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    // An ACME client's layout, readable by the sandbox user.
    let certs = tempfile::tempdir().unwrap();
    let le = certs.path().join("letsencrypt");
    std::fs::create_dir_all(le.join("archive/localhost")).unwrap();
    std::fs::create_dir_all(le.join("live/localhost")).unwrap();
    for d in [
        certs.path(),
        &le,
        &le.join("archive"),
        &le.join("live"),
        &le.join("archive/localhost"),
        &le.join("live/localhost"),
    ] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let pins = tempfile::tempdir().unwrap();
    let (a_cert, a_key, a_der, _) = new_pair(-1, 90);
    let (b_cert, b_key, b_der, b_not_after) = new_pair(-1, 120);
    let (pin_a, pin_b, pin_both) = (
        pins.path().join("a.pem"),
        pins.path().join("b.pem"),
        pins.path().join("ab.pem"),
    );
    std::fs::write(&pin_a, &a_cert).unwrap();
    std::fs::write(&pin_b, &b_cert).unwrap();
    std::fs::write(&pin_both, format!("{a_cert}{b_cert}")).unwrap();
    renew(&le, 1, &a_cert, &a_key);
    let live = le.join("live/localhost");
    let server = Server::start_with(Options {
        tls: format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            live.join("fullchain.pem").display(),
            live.join("privkey.pem").display()
        ),
        ..slow_steps()
    });
    assert_eq!(handshake(&server, &pin_a).await.unwrap(), a_der);

    // Load: two streams on connections made with the first certificate, and a loop of
    // fresh handshakes (trusting both) that records which certificate each one got.
    let body = json_stream();
    let mut streams = Vec::new();
    let mut keepalive = Client::connect(server.api, &pin_a).await;
    for cred in [ALICE, BOB] {
        let mut c = Client::connect(server.api, &pin_a).await;
        let resp = c
            .send_raw(request(
                "POST",
                "/v1/chat/completions",
                Some(cred),
                Some(body.clone()),
            ))
            .await;
        assert_eq!(resp.status(), 200);
        streams.push((c, resp));
    }
    server.wait_for("both streams generating", Duration::from_secs(30), || {
        server.metric("lgi_active_requests") == 2
    });
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let looper = {
        let (stop, served, api, pin) = (stop.clone(), served.clone(), server.api, pin_both.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let tcp = tokio::net::TcpStream::connect(api).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                match tls_connector(&pin).connect(name, tcp).await {
                    Ok(s) => served.lock().unwrap().push(
                        s.get_ref().1.peer_certificates().unwrap()[0]
                            .as_ref()
                            .to_vec(),
                    ),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    server.wait_for(
        "handshakes before the renewal",
        Duration::from_secs(30),
        || served.lock().unwrap().len() >= 3,
    );

    renew(&le, 2, &b_cert, &b_key);
    hup(&server);
    server.wait_for("the certificate reload", Duration::from_secs(30), || {
        server
            .log_text()
            .contains("SIGHUP: TLS certificate reloaded")
    });
    let seen = served.lock().unwrap().len();
    server.wait_for(
        "handshakes after the renewal",
        Duration::from_secs(30),
        || served.lock().unwrap().len() >= seen + 3,
    );
    stop.store(true, Ordering::Relaxed);
    let failures = looper.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let served = served.lock().unwrap().clone();
    let first_b = served
        .iter()
        .position(|d| *d == b_der)
        .expect("a handshake after the reload got B");
    assert!(first_b >= 3, "handshakes before the renewal got A");
    assert!(
        served[..first_b].iter().all(|d| *d == a_der)
            && served[first_b..].iter().all(|d| *d == b_der)
    );
    eprintln!(
        "handshakes: {} with A before the reload, {} with B after it",
        first_b,
        served.len() - first_b
    );

    // A client pinned to the new certificate connects; one pinned to the old no longer can.
    assert_eq!(handshake(&server, &pin_b).await.unwrap(), b_der);
    assert!(handshake(&server, &pin_a).await.is_err());
    let mut pinned_b = Client::connect(server.api, &pin_b).await;
    assert_eq!(pinned_b.get("/v1/models", Some(ALICE)).await.status, 200);
    let log = server.log_text();
    assert!(
        log.contains(&format!("sha256={}", pinned(&b_der, pins.path()))),
        "{log}"
    );
    assert!(
        log.contains(&format!("previous={}", pinned(&a_der, pins.path()))),
        "{log}"
    );

    // Connections made before the reload keep working, and no stream was dropped.
    assert_eq!(keepalive.get("/v1/models", Some(ALICE)).await.status, 200);
    for (_c, resp) in streams {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let events = sse_events(&body);
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
    }

    // Bad renewals are refused whole, each with its reason; B stays in use.
    let (c_cert, ..) = new_pair(-1, 90);
    let (d_cert, d_key, ..) = new_pair(-30, -1);
    let cases = [
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
            b_key.clone(),
            "tls.cert",
        ),
        (c_cert, b_key.clone(), "does not belong"),
        (d_cert, d_key, "expired"),
    ];
    for (i, (cert, key, why)) in cases.iter().enumerate() {
        renew(&le, 3 + i as u32, cert, key);
        hup(&server);
        server.wait_for("the refusal", Duration::from_secs(30), || {
            server
                .log_text()
                .matches("SIGHUP: TLS certificate refused")
                .count()
                == i + 1
        });
        let refusal = server
            .log_text()
            .lines()
            .rfind(|l| l.contains("SIGHUP: TLS certificate refused"))
            .unwrap()
            .to_string();
        assert!(refusal.contains(why), "{refusal}");
        assert_eq!(handshake(&server, &pin_b).await.unwrap(), b_der);
    }
    assert_eq!(server.metric("lgi_tls_reloads_total"), 1);
    assert_eq!(server.metric("lgi_tls_reload_failures_total"), 3);
    assert_eq!(
        server.metric("lgi_tls_certificate_expiry_timestamp_seconds"),
        b_not_after
    );
    // SECURITY: no key material in the log.
    let log = server.log_text();
    assert!(!log.contains("PRIVATE KEY") && !log.contains(b_key.lines().nth(1).unwrap()));
}

/// A long streamed chat (end-of-text banned) for the load.
fn json_stream() -> String {
    serde_json::json!({"model": MODEL_ID, "max_tokens": 80, "stream": true, "temperature": 0,
        "logit_bias": {"0": -100, "2": -100},
        "messages": [{"role": "user", "content": "Count from one to one hundred."}]})
    .to_string()
}
