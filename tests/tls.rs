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
    let file = server.dir.path().join("served.der");
    std::fs::write(&file, served.as_ref()).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap().to_uppercase();
    assert_eq!(hex.len(), 64, "{hex}");
    let expected: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
    let expected = expected.join(":");
    assert!(
        server.log_text().contains(&format!("sha256={expected}")),
        "{}",
        server.log_text()
    );
}
