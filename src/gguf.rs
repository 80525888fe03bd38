//! GGUF header check in safe Rust, before llama.cpp ever parses the file.
//!
//! SECURITY: llama.cpp's GGUF parser is C++ and has had memory-safety bugs on crafted
//! files. This walk reads the whole header (magic, version, every metadata key/value and
//! every tensor descriptor) and refuses counts, lengths, nesting or offsets that do not
//! fit inside the file, so a truncated, corrupted or hostile file is rejected with a clear
//! message before it reaches C++. It allocates only for short keys and the two values
//! it reports (and the chat template); everything else is skipped by length.

use std::fmt;
use std::io::{BufReader, Read};
use std::path::Path;

/// Versions this appliance accepts (v1 used 32-bit counts and is long obsolete).
const VERSIONS: [u32; 2] = [2, 3];
/// Longest metadata key (names like `tokenizer.ggml.tokens`).
const MAX_KEY_LEN: u64 = 65_536;
/// Longest string value we keep in memory (the chat template).
const MAX_KEPT_STRING: u64 = 1024 * 1024;
/// Array nesting allowed in metadata values.
const MAX_ARRAY_DEPTH: u32 = 2;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Tensor type ids are small enum values in ggml.
const MAX_TENSOR_TYPE: u32 = 128;
/// Smallest possible encodings, to bound counts by the file size before looping.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
const MIN_TENSOR_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// What the header says, for logs and `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSummary {
    pub version: u32,
    pub tensor_count: u64,
    pub kv_count: u64,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub has_chat_template: bool,
    /// `tokenizer.chat_template` (at most `MAX_KEPT_STRING` bytes), for `check-config`
    /// and the `template` command.
    pub chat_template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufError {
    Io(String),
    BadMagic,
    UnsupportedVersion(u32),
    Truncated(&'static str),
    TooLarge(&'static str, u64),
    BadValueType(u32),
    TooDeep,
    BadTensor(&'static str),
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io(e) => write!(f, "cannot read the model file: {e}"),
            GgufError::BadMagic => write!(f, "not a GGUF file (magic bytes are not \"GGUF\")"),
            GgufError::UnsupportedVersion(v) => {
                write!(f, "GGUF version {v} is not supported (only 2 and 3)")
            }
            GgufError::Truncated(what) => write!(f, "file ends inside the {what}; truncated?"),
            GgufError::TooLarge(what, n) => {
                write!(
                    f,
                    "{what} ({n}) does not fit in the file; corrupted or hostile file"
                )
            }
            GgufError::BadValueType(t) => write!(f, "unknown metadata value type {t}"),
            GgufError::TooDeep => {
                write!(f, "metadata arrays nested more than {MAX_ARRAY_DEPTH} deep")
            }
            GgufError::BadTensor(what) => write!(f, "invalid tensor descriptor: {what}"),
        }
    }
}

impl std::error::Error for GgufError {}

/// Check the header of the file at `path`.
pub fn check_file(path: &Path) -> Result<GgufSummary, GgufError> {
    let file = std::fs::File::open(path).map_err(|e| GgufError::Io(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| GgufError::Io(e.to_string()))?
        .len();
    check(BufReader::with_capacity(256 * 1024, file), len)
}

/// Check a GGUF header read from `r`, where the whole file is `file_len` bytes.
pub fn check<R: Read>(r: R, file_len: u64) -> Result<GgufSummary, GgufError> {
    let mut c = Cursor {
        r,
        pos: 0,
        len: file_len,
    };
    let mut magic = [0u8; 4];
    c.bytes(&mut magic, "magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic);
    }
    let version = c.u32("version")?;
    if !VERSIONS.contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    c.fits(
        tensor_count.saturating_mul(MIN_TENSOR_BYTES),
        "tensor count",
    )?;
    c.fits(kv_count.saturating_mul(MIN_KV_BYTES), "metadata count")?;

    let mut summary = GgufSummary {
        version,
        tensor_count,
        kv_count,
        architecture: None,
        name: None,
        has_chat_template: false,
        chat_template: None,
    };
    for _ in 0..kv_count {
        let key_len = c.u64("metadata key")?;
        if key_len > MAX_KEY_LEN {
            return Err(GgufError::TooLarge("metadata key length", key_len));
        }
        let key = c.string(key_len, "metadata key")?;
        let vtype = c.u32("metadata value type")?;
        let keep = matches!(
            key.as_str(),
            "general.architecture" | "general.name" | "tokenizer.chat_template"
        );
        if key == "tokenizer.chat_template" {
            summary.has_chat_template = vtype == 8;
        }
        if keep && vtype == 8 {
            let n = c.u64("metadata string")?;
            if n > MAX_KEPT_STRING {
                return Err(GgufError::TooLarge("metadata string length", n));
            }
            let v = c.string(n, "metadata string")?;
            match key.as_str() {
                "general.architecture" => summary.architecture = Some(v),
                "general.name" => summary.name = Some(v),
                _ => summary.chat_template = Some(v),
            }
        } else {
            c.skip_value(vtype, 0)?;
        }
    }
    for _ in 0..tensor_count {
        let name_len = c.u64("tensor name")?;
        if name_len > MAX_KEY_LEN {
            return Err(GgufError::TooLarge("tensor name length", name_len));
        }
        c.skip(name_len, "tensor name")?;
        let n_dims = c.u32("tensor dimensions")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadTensor("dimension count outside 1..=4"));
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let d = c.u64("tensor shape")?;
            if d == 0 {
                return Err(GgufError::BadTensor("zero-sized dimension"));
            }
            elements = elements
                .checked_mul(d)
                .ok_or(GgufError::BadTensor("element count overflows"))?;
        }
        // Every ggml type stores at least one bit per element (ternary types ~1.6).
        if elements / 8 > file_len {
            return Err(GgufError::TooLarge("tensor element count", elements));
        }
        let ttype = c.u32("tensor type")?;
        if ttype >= MAX_TENSOR_TYPE {
            return Err(GgufError::BadTensor("unknown tensor type"));
        }
        let offset = c.u64("tensor offset")?;
        if offset >= file_len {
            return Err(GgufError::TooLarge("tensor data offset", offset));
        }
    }
    Ok(summary)
}

struct Cursor<R> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Cursor<R> {
    fn fits(&self, n: u64, what: &'static str) -> Result<(), GgufError> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(GgufError::TooLarge(what, n));
        }
        Ok(())
    }

    fn bytes(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), GgufError> {
        self.fits(buf.len() as u64, what)?;
        self.r
            .read_exact(buf)
            .map_err(|_| GgufError::Truncated(what))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        let mut b = [0u8; 4];
        self.bytes(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        let mut b = [0u8; 8];
        self.bytes(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn skip(&mut self, n: u64, what: &'static str) -> Result<(), GgufError> {
        self.fits(n, what)?;
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| GgufError::Io(e.to_string()))?;
        if copied != n {
            return Err(GgufError::Truncated(what));
        }
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, n: u64, what: &'static str) -> Result<String, GgufError> {
        self.fits(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.bytes(&mut buf, what)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn skip_value(&mut self, vtype: u32, depth: u32) -> Result<(), GgufError> {
        if let Some(size) = scalar_size(vtype) {
            return self.skip(size, "metadata value");
        }
        match vtype {
            8 => {
                let n = self.u64("metadata string")?;
                self.skip(n, "metadata string")
            }
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep);
                }
                let elem = self.u32("array element type")?;
                let n = self.u64("array length")?;
                match scalar_size(elem) {
                    Some(size) => {
                        let total = n
                            .checked_mul(size)
                            .ok_or(GgufError::TooLarge("array length", n))?;
                        self.skip(total, "metadata array")
                    }
                    None if elem == 8 || elem == 9 => {
                        // Each string is at least its 8-byte length; each array 12 bytes.
                        self.fits(n.saturating_mul(8), "array length")?;
                        for _ in 0..n {
                            self.skip_value(elem, depth + 1)?;
                        }
                        Ok(())
                    }
                    None => Err(GgufError::BadValueType(elem)),
                }
            }
            other => Err(GgufError::BadValueType(other)),
        }
    }
}

fn scalar_size(vtype: u32) -> Option<u64> {
    match vtype {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// OpenAI's `system_fingerprint`: changes when the model file, the chat template from
/// `model.chat_template_file` (`template`) or the build changes. Derived from the file's
/// size and GGUF header summary plus this build's version (not a hash of the weights:
/// reading gigabytes at every start would delay it by minutes).
pub fn system_fingerprint(model: &Path, g: &GgufSummary, template: Option<&str>) -> String {
    let size = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    let mut identity = format!(
        "{size}|{}|{}|{}|{:?}|{:?}|{}|{}",
        g.version,
        g.tensor_count,
        g.kv_count,
        g.architecture,
        g.name,
        env!("CARGO_PKG_VERSION"),
        if cfg!(feature = "cuda") {
            "cuda"
        } else {
            "cpu"
        },
    );
    if let Some(t) = template {
        identity.push_str(&format!("|template {}", t.len()));
        identity.push_str(t);
    }
    let d = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    let hex: String = d
        .as_ref()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("fp_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny valid GGUF: one string KV, one u32 array KV, one tensor.
    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"GGUF");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes()); // tensors
        v.extend_from_slice(&2u64.to_le_bytes()); // kvs
        let key = b"general.architecture";
        v.extend_from_slice(&(key.len() as u64).to_le_bytes());
        v.extend_from_slice(key);
        v.extend_from_slice(&8u32.to_le_bytes());
        v.extend_from_slice(&5u64.to_le_bytes());
        v.extend_from_slice(b"llama");
        let key = b"some.array";
        v.extend_from_slice(&(key.len() as u64).to_le_bytes());
        v.extend_from_slice(key);
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&3u64.to_le_bytes());
        for i in 0..3u32 {
            v.extend_from_slice(&i.to_le_bytes());
        }
        let name = b"tok_embd";
        v.extend_from_slice(&(name.len() as u64).to_le_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&4u64.to_le_bytes());
        v.extend_from_slice(&4u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&[0u8; 64]); // tensor data
        v
    }

    fn run(bytes: &[u8]) -> Result<GgufSummary, GgufError> {
        check(bytes, bytes.len() as u64)
    }

    #[test]
    fn accepts_a_valid_header() {
        let s = run(&sample()).unwrap();
        assert_eq!(s.version, 3);
        assert_eq!(s.tensor_count, 1);
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        assert!(!s.has_chat_template);
    }

    #[test]
    fn every_truncation_is_refused() {
        let full = sample();
        let header_len = full.len() - 64;
        for cut in 0..header_len {
            assert!(run(&full[..cut]).is_err(), "accepted a file cut at {cut}");
        }
    }

    #[test]
    fn rejects_magic_version_and_huge_counts() {
        let mut b = sample();
        b[0] = b'X';
        assert_eq!(run(&b), Err(GgufError::BadMagic));
        let mut b = sample();
        b[4] = 1;
        assert_eq!(run(&b), Err(GgufError::UnsupportedVersion(1)));
        let mut b = sample();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            run(&b),
            Err(GgufError::TooLarge("tensor count", _))
        ));
        let mut b = sample();
        // the string value's length of the first KV
        let at = 4 + 4 + 8 + 8 + 8 + 20 + 4;
        b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(run(&b), Err(GgufError::TooLarge(..))));
    }

    #[test]
    fn real_model_header_passes_when_present() {
        // The demo model is fetched by the setup script; without it this test checks nothing
        // beyond the synthetic ones above, and says so.
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !p.exists() {
            eprintln!("skipping: {} not fetched", p.display());
            return;
        }
        let s = check_file(&p).unwrap();
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        assert!(s.has_chat_template);
        // The template text is kept (ChatML markers of the SmolLM2 family).
        let t = s.chat_template.expect("the template text");
        assert!(t.contains("<|im_start|>"), "{t}");
        assert!(s.tensor_count > 10);
    }

    #[test]
    fn the_fingerprint_follows_the_configured_template() {
        let g = GgufSummary {
            version: 3,
            tensor_count: 1,
            kv_count: 1,
            architecture: Some("llama".into()),
            name: None,
            has_chat_template: false,
            chat_template: None,
        };
        let p = Path::new("/nonexistent.gguf");
        let plain = system_fingerprint(p, &g, None);
        assert!(plain.starts_with("fp_"), "{plain}");
        assert_eq!(plain, system_fingerprint(p, &g, None), "stable");
        let a = system_fingerprint(p, &g, Some("A"));
        assert_ne!(a, plain);
        assert_ne!(a, system_fingerprint(p, &g, Some("B")));
        assert_eq!(a, system_fingerprint(p, &g, Some("A")));
    }
}
