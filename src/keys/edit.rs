//! The `keys` commands' edits of the hashed keys file, as pure functions over its text:
//! list the keys, add one, remove one, rotate one's secret. (`replace.rs` reads and
//! writes the file itself.)
//!
//! SECURITY: an edit keeps every other line byte for byte, comments included, and its
//! result is parsed whole (`parse_keys`, the server's own reader) before it is returned,
//! so a command can never write a file the server would refuse on SIGHUP. Nothing here
//! returns a hash: `list` gives the argon2 parameters only.

use super::{check_key_id, parse_keys, render_line, split_fields, KeysError};
use argon2::Params;
use time::{Duration, OffsetDateTime};

/// Longest relative expiry `keys add --expires` takes: 100 years is "no expiry" anyway.
const MAX_RELATIVE_DAYS: i64 = 36_500;

/// One key as `keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// None: `auth.default_requests_per_minute` applies; 0: unlimited.
    pub requests_per_minute: Option<u32>,
    pub expires: Option<OffsetDateTime>,
    pub expired: bool,
    /// argon2 memory (KiB), passes, lanes.
    pub argon2: (u32, u32, u32),
}

/// Every key of the file, in file order; a file with any problem is reported whole.
pub fn list(text: &str, now: OffsetDateTime) -> Result<Vec<Listed>, Vec<KeysError>> {
    let keys = parse_keys(text)?;
    Ok(keys
        .into_iter()
        .map(|k| {
            let argon2 = Params::try_from(&k.hash.password_hash())
                .map(|p| (p.m_cost(), p.t_cost(), p.p_cost()))
                // `parse_keys` already checked these parameters, so this is never hit.
                .unwrap_or((0, 0, 0));
            Listed {
                expired: k.expires.is_some_and(|e| e <= now),
                id: k.id,
                requests_per_minute: k.requests_per_minute,
                expires: k.expires,
                argon2,
            }
        })
        .collect())
}

/// `text` with the line `id:hash[:rpm][:expiry]` added at the end. `text` may be empty
/// (a new file).
pub fn add(
    text: &str,
    id: &str,
    hash: &str,
    rpm: Option<u32>,
    expires: Option<OffsetDateTime>,
) -> Result<String, String> {
    check_key_id(id)?;
    if find(text, id).is_some() {
        return Err(format!(
            "key id {id:?} is already in the keys file: `keys rotate {id}` gives it a new secret"
        ));
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&render_line(id, hash, rpm, expires)?);
    out.push('\n');
    checked(out)
}

/// `text` without the line of `id`.
pub fn remove(text: &str, id: &str) -> Result<String, String> {
    let at = find(text, id).ok_or_else(|| missing(id))?;
    let out: String = lines(text)
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, l)| l)
        .collect();
    if parse_keys(&out).is_err_and(|e| e.iter().any(|e| e.line == 0)) {
        return Err(format!(
            "{id:?} is the only key: the server refuses a keys file without keys; add the next key first"
        ));
    }
    checked(out)
}

/// `text` with `id`'s hash replaced by `hash`; its requests per minute and expiry stay.
pub fn rotate(text: &str, id: &str, hash: &str) -> Result<String, String> {
    let at = find(text, id).ok_or_else(|| missing(id))?;
    let mut out = String::with_capacity(text.len() + hash.len());
    for (i, l) in lines(text).enumerate() {
        if i != at {
            out.push_str(l);
            continue;
        }
        let body = l.trim();
        let f = split_fields(body).map_err(|e| format!("the line of {id:?}: {e}"))?;
        out.push_str(&render_line(id, hash, f.rpm, f.expires)?);
        out.push('\n');
    }
    checked(out)
}

/// `--expires`: `30d`, `12h`, `2w` from `now`, or an absolute time in any form `hash-keys`
/// reads (RFC 3339; no offset means UTC). Must lie in the future.
pub fn parse_expires(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    const FORMS: &str = "--expires takes 30d, 12h, 2w, or a time like 2027-01-31T00:00:00Z";
    let at = match text.char_indices().last() {
        Some((i, unit @ ('d' | 'h' | 'w'))) => {
            let n: i64 = text
                .get(..i)
                .unwrap_or_default()
                .parse()
                .map_err(|_| FORMS.to_string())?;
            let days = match unit {
                'w' => n.saturating_mul(7),
                'h' => n / 24,
                _ => n,
            };
            if n <= 0 || days > MAX_RELATIVE_DAYS {
                return Err(format!(
                    "--expires: {text} is outside 1h..{MAX_RELATIVE_DAYS}d"
                ));
            }
            let span = match unit {
                'h' => Duration::hours(n),
                _ => Duration::days(days),
            };
            now.replace_nanosecond(0).unwrap_or(now) + span
        }
        _ => {
            super::parse_old_expiry(text)
                .map_err(|_| FORMS.to_string())?
                .0
        }
    };
    if at <= now {
        return Err(format!("--expires: {text} is not in the future"));
    }
    Ok(at)
}

/// The file's lines, each with its newline.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

/// The index of the (first) key line whose id is `id`; comments and blank lines are not
/// key lines.
fn find(text: &str, id: &str) -> Option<usize> {
    lines(text).position(|l| {
        let l = l.trim();
        !l.starts_with('#') && l.split(':').next() == Some(id)
    })
}

fn missing(id: &str) -> String {
    format!("there is no key {id:?} in the keys file (`keys list` shows the ids)")
}

/// `out` if the server would accept it, else every problem.
fn checked(out: String) -> Result<String, String> {
    match parse_keys(&out) {
        Ok(_) => Ok(out),
        Err(errors) => {
            let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            Err(format!(
                "the keys file would not load after this change, so it was not made: {}",
                why.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hash_secret;

    fn cheap() -> Params {
        Params::new(7 * 1024, 1, 1, None).unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse(
            "2026-12-04T10:00:00.5Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    }

    #[test]
    fn add_remove_rotate_keep_every_other_line() {
        let h1 = hash_secret(b"one", cheap()).unwrap();
        let h2 = hash_secret(b"two", cheap()).unwrap();
        let text = format!("# team keys\nalice:{h1}:30:2027-01-01T00:00:00Z\n\n# ops\nbob:{h1}\n");
        let added = add(&text, "carol", &h2, Some(5), None).unwrap();
        assert_eq!(added, format!("{text}carol:{h2}:5\n"));
        let rotated = rotate(&added, "alice", &h2).unwrap();
        assert_eq!(
            rotated,
            format!("# team keys\nalice:{h2}:30:2027-01-01T00:00:00Z\n\n# ops\nbob:{h1}\ncarol:{h2}:5\n")
        );
        let removed = remove(&rotated, "bob").unwrap();
        assert_eq!(
            removed,
            format!("# team keys\nalice:{h2}:30:2027-01-01T00:00:00Z\n\n# ops\ncarol:{h2}:5\n")
        );
    }

    #[test]
    fn add_to_an_empty_file_and_one_without_a_final_newline() {
        let h = hash_secret(b"s", cheap()).unwrap();
        assert_eq!(add("", "a", &h, None, None).unwrap(), format!("a:{h}\n"));
        let two = add(&format!("a:{h}"), "b", &h, None, Some(now())).unwrap();
        assert_eq!(two, format!("a:{h}\nb:{h}::2026-12-04T10:00:00.5Z\n"));
    }

    #[test]
    fn refusals_name_the_problem_and_never_a_hash() {
        let h = hash_secret(b"s", cheap()).unwrap();
        let text = format!("a:{h}\n");
        let dup = add(&text, "a", &h, None, None).unwrap_err();
        assert!(dup.contains("already") && dup.contains("rotate"), "{dup}");
        assert!(add(&text, "bad id", &h, None, None).is_err());
        assert!(remove(&text, "zed").unwrap_err().contains("no key \"zed\""));
        assert!(rotate(&text, "zed", &h).unwrap_err().contains("no key"));
        let last = remove(&text, "a").unwrap_err();
        assert!(last.contains("only key"), "{last}");
        // A file that is already broken stays refused, with the server's own message.
        let broken = format!("a:{h}\nb:not-a-hash\n");
        let e = add(&broken, "c", &h, None, None).unwrap_err();
        assert!(e.contains("line 2") && e.contains("argon2id"), "{e}");
        // ... but removing the broken line repairs it.
        assert_eq!(remove(&broken, "b").unwrap(), text);
        for e in [dup, last, e] {
            assert!(!e.contains(&h), "{e}");
        }
    }

    #[test]
    fn list_shows_limits_expiry_and_parameters() {
        let h = hash_secret(b"s", cheap()).unwrap();
        let text = format!("a:{h}\nb:{h}:0:2026-12-01T00:00:00Z\nc:{h}:9:2027-12-01T00:00:00Z\n");
        let keys = list(&text, now()).unwrap();
        let row = |i: usize| {
            let k: &Listed = &keys[i];
            (
                k.id.as_str(),
                k.requests_per_minute,
                k.expires.is_some(),
                k.expired,
            )
        };
        assert_eq!(row(0), ("a", None, false, false));
        assert_eq!(row(1), ("b", Some(0), true, true));
        assert_eq!(row(2), ("c", Some(9), true, false));
        assert_eq!(keys[0].argon2, (7 * 1024, 1, 1));
    }

    #[test]
    fn expires_relative_and_absolute() {
        let at = |t: &str| {
            parse_expires(t, now())
                .map(|a| {
                    a.format(&time::format_description::well_known::Rfc3339)
                        .unwrap()
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(at("30d").unwrap(), "2027-01-03T10:00:00Z");
        assert_eq!(at("2w").unwrap(), "2026-12-18T10:00:00Z");
        assert_eq!(at("12h").unwrap(), "2026-12-04T22:00:00Z");
        assert_eq!(at("2027-06-01T12:30:00").unwrap(), "2027-06-01T12:30:00Z");
        assert_eq!(at("2027-03-15").unwrap(), "2027-03-15T00:00:00Z");
        for bad in ["0d", "-3d", "36501d", "d", "3x", "tomorrow", "2026-01-01"] {
            assert!(at(bad).is_err(), "{bad}");
        }
        assert!(at("2026-01-01").unwrap_err().contains("not in the future"));
    }
}
