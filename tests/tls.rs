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
    let expected = llama_gguf_inference::tls::fingerprint_of(der.as_ref());
    let served = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served.as_ref(), der.as_ref());
    assert!(
        server.log_text().contains(&format!("sha256={expected}")),
        "{}",
        server.log_text()
    );
}
