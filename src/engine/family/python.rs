//! Calls written as Python (`[get_weather(city='Paris'), add(a=1)]`, LFM2.5 and Llama
//! 3.2's pythonic form): the list of calls read into names and JSON arguments. Only
//! literals are read — strings, numbers, True/False/None, lists and dicts of them —
//! never evaluated.
//!
//! SECURITY / robustness: pure Rust over model output, never panics (fuzzed with the
//! other families: `tool_calls`); nesting is bounded (`MAX_DEPTH`).

use serde_json::{Map, Number, Value};

/// Deepest nesting of lists and dicts read in one value.
const MAX_DEPTH: usize = 16;

/// One call as far as the text goes: its name, the arguments read whole (in order), and
/// the length of the call once its `)` came.
pub struct PyCall {
    pub name: String,
    pub args: Args,
    pub end: Option<usize>,
}

/// How far a list or a call's arguments went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Closed: its length.
    Closed(usize),
    /// The text ends inside it.
    Open,
    /// Something that is not a call list follows what was read.
    Malformed,
}

/// The calls of a `[…]` list (`text` from its `[`): the calls begun (what was read of
/// each, also when a malformed part follows), and how far the list went.
pub fn calls(text: &str) -> (Vec<PyCall>, End) {
    let mut out = Vec::new();
    let Some(mut i) = text.strip_prefix('[').map(|_| 1) else {
        return (out, End::Malformed);
    };
    loop {
        i = skip(text, i);
        let Some(rest) = text.get(i..).filter(|r| !r.is_empty()) else {
            return (out, End::Open);
        };
        if rest.starts_with(']') {
            return (out, End::Closed(i + 1));
        }
        if let Some(r) = rest.strip_prefix(',') {
            i = text.len() - r.len();
            continue;
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        let Some(after) = rest.get(name_len..).filter(|a| !a.is_empty()) else {
            return (out, End::Open);
        };
        if name.is_empty() || !after.starts_with('(') {
            return (out, End::Malformed);
        }
        let (args, end) = call_args(&after[1..]);
        let closed = match end {
            End::Closed(n) => Some(i + name_len + 1 + n),
            End::Open | End::Malformed => None,
        };
        out.push(PyCall {
            name: name.to_string(),
            args,
            end: closed,
        });
        match (closed, end) {
            (Some(e), _) => i = e,
            (None, end) => return (out, end),
        }
    }
}

/// A call's arguments read whole, in order.
type Args = Vec<(String, Value)>;

/// `key=value, …)` (`text` after the `(`): the arguments read whole, and how far the
/// call went (closed: the length up to and with its `)`).
fn call_args(text: &str) -> (Args, End) {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        i = skip(text, i);
        let Some(rest) = text.get(i..).filter(|r| !r.is_empty()) else {
            return (args, End::Open);
        };
        if rest.starts_with(')') {
            return (args, End::Closed(i + 1));
        }
        if let Some(r) = rest.strip_prefix(',') {
            i = text.len() - r.len();
            continue;
        }
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after_key = skip(rest, key_len);
        let Some(after) = rest.get(after_key..).filter(|a| !a.is_empty()) else {
            return (args, End::Open);
        };
        if key_len == 0 || !after.starts_with('=') {
            return (args, End::Malformed);
        }
        let v_at = skip(rest, after_key + 1);
        match value(rest.get(v_at..).unwrap_or(""), 0) {
            Ok((v, n)) => {
                args.push((rest[..key_len].to_string(), v));
                i += v_at + n;
            }
            Err(true) => return (args, End::Open),
            Err(false) => return (args, End::Malformed),
        }
    }
}

fn skip(text: &str, mut i: usize) -> usize {
    while text
        .get(i..)
        .is_some_and(|r| r.starts_with(char::is_whitespace))
    {
        i += text[i..].chars().next().map_or(1, char::len_utf8);
    }
    i
}

/// One Python literal at the start of `text`, as JSON, and its length; Err(true) when
/// the text ends inside it.
fn value(text: &str, depth: usize) -> Result<(Value, usize), bool> {
    if depth > MAX_DEPTH {
        return Err(false);
    }
    let c = text.chars().next().ok_or(true)?;
    match c {
        '\'' | '"' => string(text, c),
        '[' | '{' => container(text, c, depth),
        _ => {
            let len = text
                .find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
                .ok_or(true)?;
            let word = &text[..len];
            let v = match word {
                "True" => Value::Bool(true),
                "False" => Value::Bool(false),
                "None" => Value::Null,
                _ => match serde_json::from_str::<Number>(word) {
                    Ok(n) => Value::Number(n),
                    Err(_) => return Err(false),
                },
            };
            Ok((v, len))
        }
    }
}

fn string(text: &str, quote: char) -> Result<(Value, usize), bool> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, e) = chars.next().ok_or(true)?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                });
            }
            c if c == quote => return Ok((Value::String(out), at + 1)),
            c => out.push(c),
        }
    }
    Err(true)
}

fn container(text: &str, open: char, depth: usize) -> Result<(Value, usize), bool> {
    let close = if open == '[' { ']' } else { '}' };
    let (mut list, mut map) = (Vec::new(), Map::new());
    let mut i = 1;
    loop {
        i = skip(text, i);
        let rest = text.get(i..).filter(|r| !r.is_empty()).ok_or(true)?;
        if rest.starts_with(close) {
            let v = match open {
                '[' => Value::Array(list),
                _ => Value::Object(map),
            };
            return Ok((v, i + 1));
        }
        if let Some(r) = rest.strip_prefix(',') {
            i = text.len() - r.len();
            continue;
        }
        let (v, n) = value(rest, depth + 1)?;
        i += n;
        if open == '[' {
            list.push(v);
            continue;
        }
        let Value::String(key) = v else {
            return Err(false);
        };
        i = skip(text, i);
        let r = text.get(i..).ok_or(true)?;
        if r.is_empty() {
            return Err(true);
        }
        let r = r.strip_prefix(':').ok_or(false)?;
        i = skip(text, text.len() - r.len());
        let (v, n) = value(text.get(i..).unwrap_or(""), depth + 1)?;
        map.insert(key, v);
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<(String, String, bool)>, End) {
        let (calls, end) = calls(text);
        let calls = calls
            .into_iter()
            .map(|c| {
                let args: Map<String, Value> = c.args.into_iter().collect();
                (c.name, Value::Object(args).to_string(), c.end.is_some())
            })
            .collect();
        (calls, end)
    }

    #[test]
    fn python_literals_become_json() {
        let text = r#"[get_weather(city='New York', units="metric"), add(a=1, b=-2.5, c=True, d=None, e=[1, 'x'], f={'k': False})]"#;
        let (calls, end) = read(text);
        assert_eq!(end, End::Closed(text.len()));
        assert_eq!(
            calls,
            vec![
                (
                    "get_weather".into(),
                    r#"{"city":"New York","units":"metric"}"#.into(),
                    true
                ),
                (
                    "add".into(),
                    r#"{"a":1,"b":-2.5,"c":true,"d":null,"e":[1,"x"],"f":{"k":false}}"#.into(),
                    true
                ),
            ]
        );
        assert_eq!(read(r"[f(s='it\'s\n')]").0[0].1, r#"{"s":"it's\n"}"#);
    }

    #[test]
    fn a_cut_list_keeps_what_is_whole() {
        let (begun, end) = read("[get_weather(city='Paris'), add(a=1, b=");
        assert_eq!(end, End::Open);
        assert_eq!(
            begun[0],
            ("get_weather".into(), r#"{"city":"Paris"}"#.into(), true)
        );
        assert_eq!(begun[1], ("add".into(), r#"{"a":1}"#.into(), false));
        assert_eq!(calls("get_weather(city='x')").1, End::Malformed);
        assert_eq!(calls("[get weather]").1, End::Malformed);
        // What was read before a malformed part stays read (a stream sent it).
        let (begun, end) = read("[f(a=1, b=import os)]");
        assert_eq!((begun[0].1.as_str(), end), (r#"{"a":1}"#, End::Malformed));
        let deep = format!("[f(a={}{})]", "[".repeat(40), "]".repeat(40));
        assert_eq!(calls(&deep).1, End::Malformed);
    }
}
