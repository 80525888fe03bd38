//! Reading the config: size cap, UTF-8, TOML into the typed structs (unknown keys are
//! errors), every serde error turned into an issue that names its `section.key`, and
//! relative paths resolved against the file's folder.

use super::{Config, ConfigError, ConfigIssue};
use std::path::{Path, PathBuf};

/// Largest config file we will read. A real one is a few KiB.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Read, parse and validate a config file. Relative paths inside it are resolved
    /// against the file's directory, so a config moves together with its keys file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            issues: vec![ConfigIssue {
                key: key.into(),
                message,
            }],
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| fail("(file)", format!("cannot read the config file: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(fail(
                "(file)",
                format!("larger than {MAX_CONFIG_BYTES} bytes; is this the right file?"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(
                "(file)",
                format!("cannot read the config file as UTF-8: {e}"),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, base).map_err(|issues| ConfigError {
            file: path.to_path_buf(),
            issues,
        })?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parse and validate TOML text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| vec![toml_issue(&e, text)])?;
        cfg.resolve_paths(base);
        let issues = cfg.validate();
        if issues.is_empty() {
            Ok(cfg)
        } else {
            Err(issues)
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.auth.keys_file);
        fix(&mut self.model.path);
        if let Some(p) = self.model.chat_template_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.cert.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.key.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.self_signed_dir.as_mut() {
            fix(p);
        }
        for p in self.sandbox.extra_read_paths.iter_mut() {
            fix(p);
        }
        if let Some(p) = self.logging.user_tag_key_file.as_mut() {
            fix(p);
        }
    }
}

/// `section.key` of the `key = value` line holding byte `at`, for value errors (a wrong
/// enum variant, a string where a number belongs) that serde reports without a key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    if name.is_empty() {
        return None;
    }
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|s| !s.is_empty());
    Some(match section {
        Some(sec) => format!("{sec}.{name}"),
        None => name.to_string(),
    })
}

/// Turn a TOML/serde error into an issue that names the key where possible.
fn toml_issue(e: &toml::de::Error, text: &str) -> ConfigIssue {
    let message = e.message().to_string();
    let key = if let Some(rest) = message.strip_prefix("unknown field `") {
        rest.split('`').next().unwrap_or("(unknown)").to_string()
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        rest.split('`').next().unwrap_or("(unknown)").to_string()
    } else {
        e.span()
            .and_then(|s| key_at(text, s.start))
            .unwrap_or_else(|| "(syntax)".to_string())
    };
    // A key spelled `""` is still a key: name it visibly.
    let key = if key.is_empty() {
        "\"\"".to_string()
    } else {
        key
    };
    let at = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    let hint = if message.starts_with("unknown field") {
        "; remove it or fix its spelling (see config/reference.toml)"
    } else if message.starts_with("missing field") {
        "; this key is required (see config/reference.toml)"
    } else {
        ""
    };
    ConfigIssue {
        key,
        message: format!("{message}{at}{hint}"),
    }
}
