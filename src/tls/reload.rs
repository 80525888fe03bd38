//! The certificate in use, and replacing it on SIGHUP without a restart.
//!
//! SECURITY: a pair is put in use only when all of it checks (`check_pair`): the key
//! parses and matches the leaf certificate's public key, every certificate of the chain
//! parses, and, on reload, the leaf is valid now. Anything else leaves the pair in use as
//! it is and says why (paths and reasons, never key material). The switch is one
//! `Arc` behind a lock that is held only to clone or replace it: a handshake takes the
//! pair current when its ClientHello arrives, and a connection already established keeps
//! the keys it negotiated, so open streams finish on the old certificate.

use super::validity::{validity, Validity};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// A pair that passed `check_pair`.
#[derive(Debug, Clone)]
pub struct Checked {
    pub key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf, as clients pin it.
    pub fingerprint: String,
    pub validity: Validity,
}

impl Checked {
    /// Why the leaf cannot be served at `now`, if it cannot.
    pub fn not_valid_at(&self, now: OffsetDateTime) -> Option<String> {
        let v = self.validity;
        if now > v.not_after {
            Some(format!(
                "the certificate expired at {}",
                rfc3339(v.not_after)
            ))
        } else if now < v.not_before {
            Some(format!(
                "the certificate is not valid before {}",
                rfc3339(v.not_before)
            ))
        } else {
            None
        }
    }
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// Check a chain and key as a whole (module header).
pub fn check_pair(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<Checked, String> {
    let leaf = chain
        .first()
        .cloned()
        .ok_or("tls.cert holds no certificate")?;
    for (i, c) in chain.iter().enumerate().skip(1) {
        webpki::anchor_from_trusted_cert(c).map_err(|e| {
            format!(
                "tls.cert: certificate {} of the chain does not parse: {e}",
                i + 1
            )
        })?;
    }
    let validity = validity(leaf.as_ref()).map_err(|e| format!("tls.cert: {e}"))?;
    let signer = provider.key_provider.load_private_key(key).map_err(|_| {
        "tls.key: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519, PEM)".to_string()
    })?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(
                "tls.key does not belong to tls.cert (its public key is not the certificate's)"
                    .into(),
            )
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err("tls.key: cannot check that it belongs to tls.cert".into())
        }
        Err(e) => {
            return Err(format!(
                "tls.cert: the first certificate does not parse: {e}"
            ))
        }
    }
    Ok(Checked {
        key: Arc::new(key),
        fingerprint: super::fingerprint_of(leaf.as_ref()),
        validity,
    })
}

/// The pair new handshakes get; replaced whole by `set`.
#[derive(Debug)]
pub struct CertSwitch {
    current: RwLock<Checked>,
}

impl CertSwitch {
    pub fn new(first: Checked) -> CertSwitch {
        CertSwitch {
            current: RwLock::new(first),
        }
    }

    pub fn current(&self) -> Checked {
        // A poisoned lock still holds a whole pair: `set` only assigns.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put `next` in use; returns the pair it replaced.
    pub fn set(&self, next: Checked) -> Checked {
        let mut slot = match self.current.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *slot, next)
    }
}

impl ResolvesServerCert for CertSwitch {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

/// What SIGHUP re-reads: the configured `tls.cert` and `tls.key` (a self-signed
/// certificate is not reloaded).
#[derive(Debug, Clone)]
pub struct Reload {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub switch: Arc<CertSwitch>,
}

/// A reload that was applied.
#[derive(Debug)]
pub struct Reloaded {
    pub previous: String,
    pub current: Checked,
}

impl Reload {
    /// Re-read both files, check them whole and valid at `now`, and put them in use.
    pub fn run(&self, now: OffsetDateTime) -> Result<Reloaded, String> {
        let chain = super::read_chain(&self.cert)?;
        let key = super::read_key(&self.key)?;
        let checked = check_pair(chain, key, &rustls::crypto::ring::default_provider())?;
        if let Some(why) = checked.not_valid_at(now) {
            return Err(format!("tls.cert {}: {why}", self.cert.display()));
        }
        let previous = self.switch.set(checked.clone());
        Ok(Reloaded {
            previous: previous.fingerprint,
            current: checked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for localhost, valid from `from_days` to `to_days` around now,
    /// as PEM files in `dir` named NAME.crt / NAME.key.
    fn pair(dir: &std::path::Path, name: &str, from_days: i64, to_days: i64) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn reload_of(cert: &std::path::Path, key: &std::path::Path) -> Reload {
        let chain = crate::tls::read_chain(cert).unwrap();
        let k = crate::tls::read_key(key).unwrap();
        let first = check_pair(chain, k, &rustls::crypto::ring::default_provider()).unwrap();
        Reload {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            switch: Arc::new(CertSwitch::new(first)),
        }
    }

    #[test]
    fn a_good_pair_replaces_the_current_one_and_bad_ones_never_do() {
        let d = tempfile::tempdir().unwrap();
        let (a_crt, a_key) = pair(d.path(), "a", -1, 90);
        let (b_crt, b_key) = pair(d.path(), "b", -1, 90);
        let (old_crt, old_key) = pair(d.path(), "old", -30, -1);
        let (new_crt, new_key) = pair(d.path(), "soon", 2, 90);
        let live_crt = d.path().join("live.crt");
        let live_key = d.path().join("live.key");
        let put = |c: &PathBuf, k: &PathBuf| {
            std::fs::copy(c, &live_crt).unwrap();
            std::fs::copy(k, &live_key).unwrap();
        };
        put(&a_crt, &a_key);
        let r = reload_of(&live_crt, &live_key);
        let a = r.switch.current().fingerprint;
        let now = OffsetDateTime::now_utc();

        put(&b_crt, &b_key);
        let done = r.run(now).unwrap();
        assert_eq!(done.previous, a);
        let b = r.switch.current().fingerprint;
        assert_ne!(a, b);
        assert_eq!(done.current.fingerprint, b);

        // Each refusal names its reason, and the pair in use stays b.
        let refused = |c: &PathBuf, k: &PathBuf| {
            put(c, k);
            let e = r.run(now).unwrap_err();
            assert_eq!(r.switch.current().fingerprint, b, "{e}");
            e
        };
        let e = refused(&a_crt, &b_key);
        assert!(e.contains("does not belong"), "{e}");
        let e = refused(&old_crt, &old_key);
        assert!(e.contains("expired"), "{e}");
        let e = refused(&new_crt, &new_key);
        assert!(e.contains("not valid before"), "{e}");
        std::fs::write(
            d.path().join("junk"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = refused(&d.path().join("junk"), &a_key);
        assert!(e.starts_with("tls.cert"), "{e}");
        let e = refused(&a_crt, &a_crt);
        assert!(e.starts_with("tls.key"), "{e}");
        // SECURITY: no refusal carries key material.
        let key_pem = std::fs::read_to_string(&b_key).unwrap();
        let body = key_pem.lines().nth(1).unwrap();
        assert!(!e.contains(body));
    }

    #[test]
    fn a_chain_with_an_unparseable_intermediate_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = pair(d.path(), "a", -1, 30);
        let mut chain = crate::tls::read_chain(&c).unwrap();
        chain.push(CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]));
        let key = crate::tls::read_key(&k).unwrap();
        let e = check_pair(chain, key, &rustls::crypto::ring::default_provider()).unwrap_err();
        assert!(e.contains("certificate 2 of the chain"), "{e}");
    }
}
