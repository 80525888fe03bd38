//! The keys file: `key_id:<argon2id PHC>[:requests_per_minute][:expiry RFC 3339]` per line.
//! Its reader and its one line writer are here; the `keys` commands' edits are in
//! `edit.rs`, the atomic file replacement in `replace.rs`, the command line in
//! `command.rs`.
//!
//! SECURITY: only argon2id hashes with parameters inside sane bounds are accepted, so a
//! weak or mistyped hash (argon2i/d, 1 KiB of memory, or a plaintext secret pasted by
//! mistake) stops start-up instead of quietly weakening authentication. Error messages
//! name the line and the field, never the hash or secret itself.

pub mod command;
mod edit;
mod replace;

use argon2::password_hash::{PasswordHash, PasswordHashString, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use time::OffsetDateTime;

/// Largest keys file read: 100k keys at ~120 bytes each.
const MAX_KEYS_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest key id; ids appear in logs, so keep them short and printable.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Argon2 memory bounds in KiB. Below 7 MiB is weaker than OWASP's floor; above 1 GiB a
/// handful of concurrent verifications could exhaust the host.
const MIN_M_COST: u32 = 7 * 1024;
const MAX_M_COST: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

/// OWASP's recommended argon2id setting (19 MiB, 2 passes, 1 lane): ~20 ms per check.
pub fn default_params() -> Params {
    // These constants are valid, so this cannot fail.
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// One key from the keys file.
#[derive(Clone)]
pub struct KeyEntry {
    pub id: String,
    pub hash: PasswordHashString,
    /// None: the config's default applies.
    pub requests_per_minute: Option<u32>,
    pub expires: Option<OffsetDateTime>,
}

impl fmt::Debug for KeyEntry {
    // SECURITY: never print the hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A keys-file problem, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// Read and check the whole keys file; every problem is reported.
pub fn load_keys_file(path: &Path) -> Result<Vec<KeyEntry>, Vec<KeysError>> {
    let whole = |message: String| vec![KeysError { line: 0, message }];
    let meta = std::fs::metadata(path)
        .map_err(|e| whole(format!("cannot read keys file {}: {e}", path.display())))?;
    if meta.len() > MAX_KEYS_FILE_BYTES {
        return Err(whole(format!(
            "keys file {} is larger than {MAX_KEYS_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        whole(format!(
            "cannot read keys file {} as UTF-8: {e}",
            path.display()
        ))
    })?;
    parse_keys(&text)
}

/// Parse keys-file text. Blank lines and `#` comments are skipped.
pub fn parse_keys(text: &str) -> Result<Vec<KeyEntry>, Vec<KeysError>> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_hashed_line(line) {
            Ok(entry) => {
                if let Some(first) = seen.insert(entry.id.clone(), line_no) {
                    errors.push(KeysError {
                        line: line_no,
                        message: format!(
                            "key id {:?} already defined on line {first}; ids must be unique",
                            entry.id
                        ),
                    });
                } else {
                    keys.push(entry);
                }
            }
            Err(message) => errors.push(KeysError {
                line: line_no,
                message,
            }),
        }
    }
    if keys.is_empty() && errors.is_empty() {
        errors.push(KeysError {
            line: 0,
            message:
                "the keys file holds no keys; add one with `llama-gguf-inference gen-key KEY_ID`"
                    .into(),
        });
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

/// The fields shared by the hashed and the plaintext formats.
struct Fields<'a> {
    id: &'a str,
    secret_or_hash: &'a str,
    rpm: Option<u32>,
    expires: Option<OffsetDateTime>,
}

/// How an expiry field is read: the hashed keys file takes RFC 3339 only; the old
/// gateway's plaintext file also takes what its tool wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryForms {
    Rfc3339,
    /// RFC 3339, or ISO 8601 without an offset (read as UTC), with or without fractional
    /// seconds, or a date alone (midnight UTC).
    OldGateway,
}

/// Split `id:second[:rpm][:expiry]`; the expiry may itself contain colons.
fn split_fields(line: &str) -> Result<Fields<'_>, String> {
    split_fields_with(line, ExpiryForms::Rfc3339).map(|(f, _)| f)
}

/// `split_fields`, reading the expiry in `forms`; also says whether the expiry had no
/// offset (and was read as UTC).
fn split_fields_with(line: &str, forms: ExpiryForms) -> Result<(Fields<'_>, bool), String> {
    let mut parts = line.splitn(4, ':');
    let id = parts.next().unwrap_or("");
    let second = parts
        .next()
        .ok_or("expected key_id:hash[:requests_per_minute][:expiry]")?;
    let rpm_text = parts.next().unwrap_or("");
    let expiry_text = parts.next().unwrap_or("");
    check_key_id(id)?;
    let rpm = if rpm_text.is_empty() {
        None
    } else {
        Some(rpm_text.parse::<u32>().map_err(|_| {
            "requests_per_minute (third field) must be a whole number, 0 for unlimited".to_string()
        })?)
    };
    let (expires, naive) = match (expiry_text.is_empty(), forms) {
        (true, _) => (None, false),
        (false, ExpiryForms::Rfc3339) => (Some(parse_expiry(expiry_text)?), false),
        (false, ExpiryForms::OldGateway) => {
            let (at, naive) = parse_old_expiry(expiry_text)?;
            (Some(at), naive)
        }
    };
    let fields = Fields {
        id,
        secret_or_hash: second,
        rpm,
        expires,
    };
    Ok((fields, naive))
}

/// Key ids: 1-64 of `A-Z a-z 0-9 - _ .`.
pub fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
        return Err(format!("key_id must be 1-{MAX_KEY_ID_LEN} characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("key_id may only use A-Z a-z 0-9 - _ .".into());
    }
    Ok(())
}

fn parse_expiry(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| "expiry (fourth field) must be RFC 3339, e.g. 2027-01-31T00:00:00Z".into())
}

/// The old gateway's expiry forms: RFC 3339 (offset kept), `2027-01-01T00:00:00` and
/// `2027-06-01T12:30:00.123456` (no offset: UTC; `T` or a space), `2027-01-01` (midnight
/// UTC). True when there was no offset.
fn parse_old_expiry(text: &str) -> Result<(OffsetDateTime, bool), String> {
    use time::format_description::{parse_borrowed, well_known::Rfc3339};
    const REFUSED: &str = "expiry (fourth field) must be a date and time, e.g. 2027-01-31T00:00:00Z, 2027-01-31T00:00:00 (read as UTC) or 2027-01-31";
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((at, false));
    }
    let t = text.replacen(' ', "T", 1);
    for form in [
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]",
        "[year]-[month]-[day]T[hour]:[minute]:[second]",
        "[year]-[month]-[day]T[hour]:[minute]",
    ] {
        let form = parse_borrowed::<1>(form).map_err(|_| REFUSED.to_string())?;
        if let Ok(at) = time::PrimitiveDateTime::parse(&t, &form) {
            return Ok((at.assume_utc(), true));
        }
    }
    let day = parse_borrowed::<1>("[year]-[month]-[day]").map_err(|_| REFUSED.to_string())?;
    match time::Date::parse(&t, &day) {
        Ok(d) => Ok((d.midnight().assume_utc(), true)),
        Err(_) => Err(REFUSED.into()),
    }
}

fn parse_hashed_line(line: &str) -> Result<KeyEntry, String> {
    let f = split_fields(line)?;
    let hash = check_hash(f.secret_or_hash)?;
    Ok(KeyEntry {
        id: f.id.to_string(),
        hash,
        requests_per_minute: f.rpm,
        expires: f.expires,
    })
}

/// One hashed keys-file line, `id:hash[:rpm][:expiry]`, the expiry as RFC 3339: the one
/// writer of the format `parse_hashed_line` reads.
pub fn render_line(
    id: &str,
    hash: &str,
    rpm: Option<u32>,
    expires: Option<OffsetDateTime>,
) -> Result<String, String> {
    let mut l = format!("{id}:{hash}");
    if rpm.is_some() || expires.is_some() {
        l.push(':');
        if let Some(r) = rpm {
            l.push_str(&r.to_string());
        }
    }
    if let Some(e) = expires {
        l.push(':');
        l.push_str(
            &e.format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("expiry cannot be written as RFC 3339: {e}"))?,
        );
    }
    Ok(l)
}

/// Accept only argon2id PHC strings with bounded parameters.
pub fn check_hash(text: &str) -> Result<PasswordHashString, String> {
    if !text.starts_with("$argon2id$") {
        return Err(
            "second field must be an argon2id hash ($argon2id$...); hash the key with `llama-gguf-inference hash-key`"
                .into(),
        );
    }
    let parsed = PasswordHash::new(text).map_err(|e| format!("malformed argon2id hash: {e}"))?;
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if parsed.version != Some(Version::V0x13 as u32) {
        return Err("argon2 version must be v=19".into());
    }
    if !(MIN_M_COST..=MAX_M_COST).contains(&params.m_cost()) {
        return Err(format!(
            "argon2 memory m={} KiB is outside {MIN_M_COST}..={MAX_M_COST}",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_T_COST {
        return Err(format!(
            "argon2 passes t={} above {MAX_T_COST}",
            params.t_cost()
        ));
    }
    if params.p_cost() > MAX_P_COST {
        return Err(format!(
            "argon2 lanes p={} above {MAX_P_COST}",
            params.p_cost()
        ));
    }
    if parsed.hash.map(|h| h.len()).unwrap_or(0) < 16 || parsed.salt.is_none() {
        return Err("argon2 hash must carry a salt and at least 16 bytes of output".into());
    }
    Ok(parsed.serialize())
}

/// Hash a secret with argon2id and a fresh 16-byte salt from the system CSPRNG.
pub fn hash_secret(secret: &[u8], params: Params) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system random source failed".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    argon
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// A fresh API secret: 32 random bytes, base64url without padding (43 characters, no ':').
pub fn generate_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(base64ct::Base64UrlUnpadded::encode_string(&bytes))
}

use base64ct::Encoding;

/// A converted plaintext keys file.
#[derive(Debug)]
pub struct Converted {
    /// The hashed keys file.
    pub text: String,
    /// Each migrated key's id and the credential its clients must now send
    /// (`key_id:api_key`: the old gateway took the bare api_key).
    pub credentials: Vec<(String, String)>,
    /// Expiries without an offset, read as UTC.
    pub naive_expiries: usize,
}

/// Convert the old gateway's plaintext `key_id:api_key[:rpm][:expiry]` file into hashed
/// lines. Comments and blank lines are kept; errors name the line, never the secret.
/// Expiries may be in the old tool's forms (`parse_old_expiry`); they are written back as
/// RFC 3339.
pub fn convert_plaintext(text: &str, params: Params) -> Result<Converted, Vec<KeysError>> {
    let mut out = String::new();
    let mut credentials = Vec::new();
    let mut naive_expiries = 0;
    let mut errors = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            out.push_str(raw);
            out.push('\n');
            continue;
        }
        let converted = split_fields_with(line, ExpiryForms::OldGateway).and_then(|(f, naive)| {
            if f.secret_or_hash.is_empty() {
                return Err("the api_key (second field) is empty".to_string());
            }
            if f.secret_or_hash.starts_with("$argon2") {
                return Err("this line is already hashed".to_string());
            }
            let hash = hash_secret(f.secret_or_hash.as_bytes(), params.clone())?;
            let l = render_line(f.id, &hash, f.rpm, f.expires)?;
            let credential = format!("{}:{}", f.id, f.secret_or_hash);
            Ok((l, (f.id.to_string(), credential), naive))
        });
        match converted {
            Ok((l, credential, naive)) => {
                out.push_str(&l);
                out.push('\n');
                credentials.push(credential);
                naive_expiries += usize::from(naive);
            }
            Err(message) => errors.push(KeysError {
                line: idx + 1,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(Converted {
            text: out,
            credentials,
            naive_expiries,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(MIN_M_COST, 1, 1, None).unwrap()
    }

    #[test]
    fn parses_all_fields_including_expiry_with_colons() {
        let h = hash_secret(b"s3cret", cheap()).unwrap();
        let text = format!(
            "# comment\n\nalice:{h}\nbob:{h}:30\ncarol:{h}::2027-01-31T12:00:00Z\ndave:{h}:5:2027-01-31T12:00:00+02:00\n"
        );
        let keys = parse_keys(&text).unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0].id, "alice");
        assert_eq!(keys[0].requests_per_minute, None);
        assert_eq!(keys[1].requests_per_minute, Some(30));
        assert_eq!(keys[2].expires.unwrap().hour(), 12);
        assert_eq!(keys[3].requests_per_minute, Some(5));
        assert_eq!(keys[3].expires.unwrap().offset().whole_hours(), 2);
    }

    #[test]
    fn rejects_weak_or_wrong_hashes_and_names_the_line() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"x", &SaltString::encode_b64(&[7u8; 16]).unwrap())
        .unwrap()
        .to_string();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, cheap())
            .hash_password(b"x", &SaltString::encode_b64(&[7u8; 16]).unwrap())
            .unwrap()
            .to_string();
        let text = format!("a:{weak}\nb:plaintext-secret\nc:{argon2i}\nbad id:{weak}\n");
        let errors = parse_keys(&text).unwrap_err();
        assert_eq!(errors.len(), 4);
        assert_eq!(errors[0].line, 1);
        assert!(
            errors[0].message.contains("memory"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[1].line, 2);
        assert!(errors[1].message.contains("argon2id"));
        // SECURITY: the rejected plaintext never appears in the message.
        assert!(!errors[1].to_string().contains("plaintext-secret"));
        assert_eq!(errors[2].line, 3);
        assert_eq!(errors[3].line, 4);
        assert!(errors[3].message.contains("key_id"));
    }

    #[test]
    fn duplicate_ids_and_bad_numbers_are_errors() {
        let h = hash_secret(b"s", cheap()).unwrap();
        let text = format!("a:{h}\na:{h}\nb:{h}:many\nc:{h}:1:tomorrow\n");
        let errors = parse_keys(&text).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert!(errors[0].message.contains("already defined on line 1"));
        assert!(errors[1].message.contains("requests_per_minute"));
        assert!(errors[2].message.contains("RFC 3339"));
    }

    #[test]
    fn shipped_example_keys_file_parses() {
        let keys = parse_keys(include_str!("../../config/keys.example")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].requests_per_minute, Some(600));
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(parse_keys("# nothing\n").is_err());
    }

    #[test]
    fn converts_plaintext_file_and_result_verifies() {
        let text = "# old gateway\nalice:secret-one\nbob:secret-two:10:2030-01-01T00:00:00Z\n";
        let converted = convert_plaintext(text, cheap()).unwrap();
        let out = converted.text;
        assert!(!out.contains("secret-one") && !out.contains("secret-two"));
        assert_eq!(
            converted.credentials,
            [
                ("alice".to_string(), "alice:secret-one".to_string()),
                ("bob".to_string(), "bob:secret-two".to_string())
            ]
        );
        assert_eq!(converted.naive_expiries, 0);
        let keys = parse_keys(&out).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].requests_per_minute, Some(10));
        assert!(keys[1].expires.is_some());
        let parsed = keys[0].hash.password_hash();
        use argon2::PasswordVerifier;
        assert!(Argon2::default()
            .verify_password(b"secret-one", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"secret-two", &parsed)
            .is_err());
    }

    #[test]
    fn the_old_gateways_expiry_forms_convert_to_rfc_3339() {
        // As the old key_mgmt.py writes them: naive ISO 8601 (with and without fractional
        // seconds), a date alone, and an explicit offset.
        let text = "a:s1:60:2027-01-01T00:00:00\nb:s2::2027-06-01T12:30:00.123456\nc:s3:0:2027-03-15\nd:s4::2027-01-01T00:00:00+02:00\ne:s5::2027-01-01 08:00:00\n";
        let converted = convert_plaintext(text, cheap()).unwrap();
        assert_eq!(converted.naive_expiries, 4);
        let keys = parse_keys(&converted.text).unwrap();
        let rfc = |k: &KeyEntry| {
            k.expires
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert_eq!(rfc(&keys[0]), "2027-01-01T00:00:00Z");
        assert_eq!(keys[0].requests_per_minute, Some(60));
        assert_eq!(rfc(&keys[1]), "2027-06-01T12:30:00.123456Z");
        assert_eq!(rfc(&keys[2]), "2027-03-15T00:00:00Z");
        assert_eq!(rfc(&keys[3]), "2027-01-01T00:00:00+02:00");
        assert_eq!(rfc(&keys[4]), "2027-01-01T08:00:00Z");
        // What cannot be read is refused with its line, as before.
        let e = convert_plaintext("ok:s\nbad:s::next tuesday\n", cheap()).unwrap_err();
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("2027-01-31"), "{}", e[0].message);
        // The hashed file itself stays strict.
        let hashed = converted
            .text
            .lines()
            .next()
            .unwrap()
            .replace("2027-01-01T00:00:00Z", "2027-01-01T00:00:00");
        assert!(parse_keys(&hashed).is_err());
    }

    #[test]
    fn generated_secrets_are_distinct_and_colon_free() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(!a.contains(':'));
    }
}
