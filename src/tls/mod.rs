//! TLS termination material: the rustls server config, from PEM files or a self-signed
//! rcgen certificate. `reload.rs` holds the pair in use and replaces it on SIGHUP;
//! `validity.rs` reads a certificate's validity period.
//!
//! SECURITY: TLS 1.2 and 1.3 only, rustls's default (AEAD, forward-secret) suites, the
//! ring provider for both rustls and rcgen, ALPN `h2` and `http/1.1`. rustls has no
//! renegotiation and no TLS compression. The certificate's SHA-256 fingerprint is logged
//! so clients of a self-signed deployment can pin it.

// PEM parsing from rustls-pki-types (the archived rustls-pemfile crate is RUSTSEC-2025-0134).
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::TlsConfig;

mod reload;
mod validity;

pub use reload::{check_pair, rfc3339, CertSwitch, Checked, Reload, Reloaded};

/// Largest PEM file read (a long chain is a few tens of KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Validity of a generated certificate, in days.
const SELF_SIGNED_DAYS: i64 = 825;

/// Where the certificate came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    Files,
    SelfSignedNew,
    SelfSignedStored,
    SelfSignedEphemeral,
}

pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub source: CertSource,
}

/// SHA-256 of a certificate, as colon-separated upper-case hex (as clients pin it).
pub fn fingerprint_of(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Load the configured certificate, or the stored / a new self-signed one.
pub fn load_material(cfg: &TlsConfig) -> Result<TlsMaterial, String> {
    match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => Ok(TlsMaterial {
            chain: read_chain(cert)?,
            key: read_key(key)?,
            source: CertSource::Files,
        }),
        _ => match &cfg.self_signed_dir {
            Some(dir) => stored_or_new(dir, &cfg.self_signed_names),
            None => {
                let (chain, key) = generate(&cfg.self_signed_names)?;
                Ok(TlsMaterial {
                    chain,
                    key,
                    source: CertSource::SelfSignedEphemeral,
                })
            }
        },
    }
}

/// Paths of a stored self-signed pair.
pub fn stored_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn stored_or_new(dir: &Path, names: &[String]) -> Result<TlsMaterial, String> {
    let (cert_path, key_path) = stored_paths(dir);
    if cert_path.exists() && key_path.exists() {
        return Ok(TlsMaterial {
            chain: read_chain(&cert_path)?,
            key: read_key(&key_path)?,
            source: CertSource::SelfSignedStored,
        });
    }
    let key_pair = rcgen::KeyPair::generate().map_err(|e| format!("key generation failed: {e}"))?;
    let cert = self_signed(names, &key_pair)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("tls.self_signed_dir: cannot create {}: {e}", dir.display()))?;
    write_private(&key_path, key_pair.serialize_pem().as_bytes()).map_err(|e| {
        format!(
            "tls.self_signed_dir: cannot write {}: {e}",
            key_path.display()
        )
    })?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| {
        format!(
            "tls.self_signed_dir: cannot write {}: {e}",
            cert_path.display()
        )
    })?;
    Ok(TlsMaterial {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
        source: CertSource::SelfSignedNew,
    })
}

/// SECURITY: the private key file is created 0600, never world-readable even briefly.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn self_signed(names: &[String], key_pair: &rcgen::KeyPair) -> Result<rcgen::Certificate, String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("tls.self_signed_names: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    dn.push(
        rcgen::DnType::OrganizationName,
        "llama-gguf-inference (self-signed)",
    );
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    params
        .self_signed(key_pair)
        .map_err(|e| format!("self-signed certificate generation failed: {e}"))
}

fn generate(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let key_pair = rcgen::KeyPair::generate().map_err(|e| format!("key generation failed: {e}"))?;
    let cert = self_signed(names, &key_pair)?;
    Ok((
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
    ))
}

fn read_limited(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let failed = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the file's permissions, or on a reload the sandbox: `policy` lists what it \
             may read; a file in a shared folder must be renewed in place, not by mv)"
        } else {
            ""
        };
        format!("{what}: cannot read {}: {e}{hint}", path.display())
    };
    let meta = std::fs::metadata(path).map_err(failed)?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{what}: {} is larger than {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read(path).map_err(failed)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_limited(path, "tls.cert")?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert: {} is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert: {} holds no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_limited(path, "tls.key")?;
    // SECURITY: the error never includes key material, only the path.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("tls.key: {} holds no PRIVATE KEY block", path.display())
        }
        _ => format!("tls.key: {} is not valid PEM", path.display()),
    })
}

/// The rustls server config: TLS 1.2/1.3, ring, ALPN h2 + http/1.1, serving the pair in
/// the returned switch (which a reload replaces).
pub fn server_config(
    material: &TlsMaterial,
    enable_h2: bool,
) -> Result<(Arc<ServerConfig>, Arc<CertSwitch>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let checked = check_pair(material.chain.clone(), material.key.clone_key(), &provider)?;
    let switch = Arc::new(CertSwitch::new(checked));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(switch.clone());
    config.alpn_protocols = if enable_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // SECURITY: stateless tickets would need key rotation we do not run; TLS 1.3 resumption
    // uses the bounded in-memory session cache instead.
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), switch))
}

/// The `Reload` SIGHUP runs: for `tls.cert` + `tls.key` only (a self-signed certificate
/// stays until its files are deleted and the server restarts).
pub fn reload_for(cfg: &TlsConfig, switch: &Arc<CertSwitch>) -> Option<Reload> {
    match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => Some(Reload {
            cert: cert.clone(),
            key: key.clone(),
            switch: switch.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_persisted_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            self_signed_dir: Some(dir.path().join("tls")),
            ..TlsConfig::default()
        };
        let first = load_material(&cfg).unwrap();
        assert_eq!(first.source, CertSource::SelfSignedNew);
        let second = load_material(&cfg).unwrap();
        assert_eq!(second.source, CertSource::SelfSignedStored);
        let leaf = |m: &TlsMaterial| fingerprint_of(m.chain[0].as_ref());
        assert_eq!(leaf(&first), leaf(&second));
        assert_eq!(leaf(&first).len(), 32 * 3 - 1);
        let (_, key_path) = stored_paths(&dir.path().join("tls"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, switch) = server_config(&second, true).unwrap();
        assert_eq!(switch.current().fingerprint, leaf(&second));
    }

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let cfg = TlsConfig {
            cert: Some(cert),
            key: Some(key),
            ..TlsConfig::default()
        };
        let err = load_material(&cfg).err().unwrap();
        assert!(err.starts_with("tls.cert:"), "{err}");
    }
}
