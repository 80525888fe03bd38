//! Calls as they are written: for a stream, the calls an unfinished answer has begun —
//! each one's function name once it is whole, and the part of its arguments written so
//! far — so a client gets the name first and then the arguments piece by piece, as
//! OpenAI's, vLLM's and llama-server's streams give them. Every family's body shape and
//! the generic envelope (`{"tool_calls": […]}`).
//!
//! The arguments are JSON text: the model's own, without the whitespace outside strings
//! (so the pieces joined are the whole arguments, valid JSON once the call is complete);
//! for XML-like arguments, the JSON object built one whole parameter at a time.
//!
//! SECURITY / robustness: pure Rust over model output, never panics (fuzzed with the
//! parser: `tool_calls`); bounded by `MAX_CALLS` calls.

use super::{name_then, Body, Family, ParamTypes, ToolSyntax, MAX_CALLS};
use serde_json::Value;

/// One call begun in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallProgress {
    pub name: String,
    /// The arguments written so far (a prefix of the whole arguments' text).
    pub args: String,
    /// The call is whole.
    pub done: bool,
}

/// The calls begun in `text`, an answer in `syntax` (None: the generic envelope) that
/// may still grow. A call appears once its function's name is whole.
pub fn progress(
    syntax: Option<ToolSyntax>,
    text: &str,
    types: &dyn ParamTypes,
) -> Vec<CallProgress> {
    let mut calls = Vec::new();
    match syntax {
        None => {
            // `{"tool_calls":[…` (the constraint writes compact JSON, the key first).
            let t = text.trim_start();
            if let Some(list) = t
                .strip_prefix('{')
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix("\"tool_calls\""))
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('['))
            {
                list_progress(list, "name", "arguments", &mut calls);
            }
        }
        Some(s) => family_progress(s.0, text, types, &mut calls),
    }
    calls.truncate(MAX_CALLS as usize);
    calls
}

fn family_progress(f: &Family, text: &str, types: &dyn ParamTypes, calls: &mut Vec<CallProgress>) {
    let lead = text.len() - text.trim_start().len();
    let mut rest = text;
    let mut at_start = f.json_at_start && text[lead..].starts_with('{');
    while calls.len() < MAX_CALLS as usize {
        let opened = match at_start {
            true => Some(lead),
            false => super::find_open(f, rest).map(|(_, body)| body),
        };
        at_start = false;
        let Some(body_at) = opened else {
            return;
        };
        let body = &rest[body_at..];
        let used = match f.body {
            Body::Object {
                name,
                args,
                list: false,
                ..
            } => objects_progress(body, name, args, calls),
            Body::Object {
                name,
                args,
                list: true,
                ..
            } => {
                let t = body.trim_start();
                match t.strip_prefix('[') {
                    Some(list) => {
                        list_progress(list, name, args, calls).map(|n| body.len() - t.len() + 1 + n)
                    }
                    None => None,
                }
            }
            Body::Keyed => {
                let t = body.trim_start();
                match t.strip_prefix('[') {
                    Some(list) => {
                        keyed_list_progress(list, calls).map(|n| body.len() - t.len() + 1 + n)
                    }
                    None => None,
                }
            }
            Body::Pythonic => {
                let t = body.trim_start();
                let (begun, end) = super::python::calls(t);
                for c in begun {
                    let items: Vec<String> = c
                        .args
                        .iter()
                        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                        .collect();
                    let mut args = format!("{{{}", items.join(","));
                    if c.end.is_some() {
                        args.push('}');
                    }
                    calls.push(CallProgress {
                        name: c.name,
                        args,
                        done: c.end.is_some(),
                    });
                }
                match end {
                    super::python::End::Closed(n) => Some(body.len() - t.len() + n),
                    _ => None,
                }
            }
            Body::Braced { quote } => {
                let Some((function, after)) = name_then(body, "{") else {
                    return;
                };
                let start = body.len() - after.len() - 1;
                let (json, end) =
                    super::braced_json(&body[start..], quote).unwrap_or_else(|read| (read, None));
                let args = compact(&json);
                // Whole only as a JSON object (bare values the reader copies may not be).
                let whole = end.is_some()
                    && serde_json::from_str::<Value>(&args).is_ok_and(|v| v.is_object());
                calls.push(CallProgress {
                    name: function,
                    done: whole,
                    args,
                });
                end.filter(|_| whole).map(|n| start + n)
            }
            Body::Named { pre, sep } => {
                let named = match pre {
                    Some(p) => match body.find(p.find) {
                        Some(at) => &body[at + p.find.len()..],
                        None => return,
                    },
                    None => body,
                };
                let Some((function, after)) = name_then(named, sep.find) else {
                    return;
                };
                let lead = after.len() - after.trim_start().len();
                let value = &after[lead..];
                // Arguments are an object: anything else is no call (parsed as text).
                let (args, end) = match value.starts_with('{') {
                    true => json_prefix(value),
                    false => (String::new(), None),
                };
                calls.push(CallProgress {
                    name: function,
                    args,
                    done: end.is_some(),
                });
                end.map(|n| body.len() - after.len() + lead + n)
            }
            Body::Params { sep, .. } => {
                let Some((function, rest)) = name_then(body, sep.find) else {
                    return;
                };
                let (read, end) = super::read_params(&f.body, &function, rest, types);
                let items: Vec<String> = read
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                    .collect();
                let done = match end {
                    super::ParamsEnd::Closed(n) => Some(body.len() - rest.len() + n),
                    _ => None,
                };
                let mut args = format!("{{{}", items.join(","));
                if done.is_some() {
                    args.push('}');
                }
                calls.push(CallProgress {
                    name: function,
                    args,
                    done: done.is_some(),
                });
                done
            }
        };
        match used {
            Some(n) => rest = &body[n..],
            None => return,
        }
    }
}

/// Where in `text` the family's first call opener starts (a call may be begun there
/// whose name is not whole yet).
pub fn first_opener(syntax: ToolSyntax, text: &str) -> Option<usize> {
    super::find_open(syntax.0, text).map(|(at, _)| at)
}

/// Call objects one after another (a Hermes block may hold several): the bytes they
/// took when the last one is whole.
fn objects_progress(
    body: &str,
    name: &str,
    args: &str,
    calls: &mut Vec<CallProgress>,
) -> Option<usize> {
    let mut used = 0;
    loop {
        let rest = &body[used..];
        let lead = rest.len() - rest.trim_start().len();
        if !rest[lead..].starts_with('{') {
            return (used > 0).then_some(used);
        }
        let (call, end) = object_progress(&rest[lead..], name, args);
        calls.extend(call);
        used += lead + end?;
    }
}

/// A JSON list's elements (`list` follows its `[`), each read by `element` (the bytes
/// it took once whole, None while it is not): the bytes up to the list's `]` once it
/// is closed.
fn walk_list(list: &str, mut element: impl FnMut(&str) -> Option<usize>) -> Option<usize> {
    let mut i = 0;
    loop {
        let rest = list.get(i..)?;
        let t = rest.trim_start();
        i += rest.len() - t.len();
        if let Some(after) = t.strip_prefix(',') {
            i += t.len() - after.len();
            continue;
        }
        if t.starts_with(']') {
            return Some(i + 1);
        }
        i += element(t)?;
    }
}

/// A JSON list of call objects (`list` follows its `[`).
fn list_progress(
    list: &str,
    name: &str,
    args: &str,
    calls: &mut Vec<CallProgress>,
) -> Option<usize> {
    walk_list(list, |t| {
        if !t.starts_with('{') {
            return None;
        }
        let (call, end) = object_progress(t, name, args);
        calls.extend(call);
        end
    })
}

/// A JSON list of `{NAME: {…}}` objects (`list` follows its `[`).
fn keyed_list_progress(list: &str, calls: &mut Vec<CallProgress>) -> Option<usize> {
    walk_list(list, |t| {
        let inner = t.strip_prefix('{')?.trim_start();
        let Ok((Value::String(name), n)) = super::json_value(inner) else {
            return None;
        };
        let value = inner[n..].trim_start().strip_prefix(':')?.trim_start();
        if !value.starts_with('{') {
            return None;
        }
        let (args, end) = json_prefix(value);
        let closed = end.and_then(|n| {
            let after = &value[n..];
            let close = after.trim_start().strip_prefix('}')?;
            Some(t.len() - close.len())
        });
        calls.push(CallProgress {
            name,
            args,
            done: closed.is_some(),
        });
        closed
    })
}

/// One call object at the start of `obj`: the call once its name is whole, and the
/// object's length once it is closed.
fn object_progress(
    obj: &str,
    name_key: &str,
    args_key: &str,
) -> (Option<CallProgress>, Option<usize>) {
    let mut name = None;
    let mut args = (String::new(), false);
    let mut i = 1;
    // After a member only `,` or `}` may come (a key there is no JSON object).
    let mut after_member = false;
    let closed = loop {
        let Some(rest) = obj.get(i..) else {
            break None;
        };
        let t = rest.trim_start();
        i += rest.len() - t.len();
        if t.is_empty() {
            break None;
        }
        if t.starts_with('}') {
            break Some(i + 1);
        }
        if t.starts_with(',') && after_member {
            i += 1;
            after_member = false;
            continue;
        }
        if after_member {
            break None;
        }
        after_member = true;
        let Ok((Value::String(key), n)) = super::json_value(t) else {
            break None;
        };
        let after_key = &t[n..];
        let Some(v) = after_key.trim_start().strip_prefix(':') else {
            break None;
        };
        let v_lead = v.len() - v.trim_start().len();
        let value = &v[v_lead..];
        i += t.len() - value.len();
        if key == args_key && value.starts_with('{') {
            let (prefix, end) = json_prefix(value);
            args = (prefix, end.is_some());
            match end {
                Some(n) => i += n,
                None => break None,
            }
            continue;
        }
        match super::json_value(value) {
            Ok((v, n)) => {
                if key == name_key && name.is_none() {
                    name = v.as_str().map(str::to_string);
                }
                if key == args_key {
                    // Arguments as a JSON string holding an object: whole only once the
                    // string is (anything else is no call's arguments).
                    if let Some(o) = v
                        .as_str()
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        .filter(Value::is_object)
                    {
                        args = (o.to_string(), true);
                    }
                }
                i += n;
            }
            Err(_) => break None,
        }
    };
    let call = name.map(|name| CallProgress {
        name,
        done: closed.is_some() && args.1,
        args: args.0,
    });
    (call, closed)
}

/// The JSON value at the start of `text` as written so far, without whitespace outside
/// strings, and its length in `text` once it is whole.
fn json_prefix(text: &str) -> (String, Option<usize>) {
    match super::json_value(text) {
        Ok((_, n)) => (compact(&text[..n]), Some(n)),
        Err(_) => (compact(text), None),
    }
}

/// JSON text without the whitespace outside its strings.
pub fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::family::Untyped;

    fn calls(syntax: Option<ToolSyntax>, text: &str) -> Vec<(String, String, bool)> {
        progress(syntax, text, &Untyped)
            .into_iter()
            .map(|c| (c.name, c.args, c.done))
            .collect()
    }

    fn c(name: &str, args: &str, done: bool) -> (String, String, bool) {
        (name.into(), args.into(), done)
    }

    /// Every prefix of a whole answer gives calls whose arguments are prefixes of the
    /// next ones' (what was streamed stays true), ending with the whole calls.
    fn grows(syntax: Option<ToolSyntax>, text: &str, whole: &[(String, String, bool)]) {
        let mut last: Vec<(String, String, bool)> = Vec::new();
        for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
            let now = calls(syntax, &text[..end]);
            assert!(now.len() >= last.len(), "{:?}", &text[..end]);
            for (old, new) in last.iter().zip(&now) {
                assert_eq!(old.0, new.0, "{:?}", &text[..end]);
                assert!(new.1.starts_with(&old.1), "{old:?} then {new:?}");
            }
            last = now;
        }
        assert_eq!(last, whole);
    }

    #[test]
    fn the_generic_envelope_names_each_call_then_grows_its_arguments() {
        let text = r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"add","arguments":{"a":1}}]}"#;
        grows(
            None,
            text,
            &[
                c("get_weather", r#"{"city":"Paris"}"#, true),
                c("add", r#"{"a":1}"#, true),
            ],
        );
        assert_eq!(calls(None, r#"{"tool_calls":[{"name":"get_wea"#), vec![]);
        assert_eq!(
            calls(
                None,
                r#"{"tool_calls":[{"name":"get_weather","arguments":{"ci"#
            ),
            vec![c("get_weather", r#"{"ci"#, false)]
        );
        assert_eq!(calls(None, r#"{"content":"hi"}"#), vec![]);
    }

    #[test]
    fn every_body_shape_streams() {
        let hermes = Some(ToolSyntax::HERMES);
        grows(
            hermes,
            "Let me see.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"New York\"}}\n</tool_call>",
            &[c("get_weather", r#"{"city":"New York"}"#, true)],
        );
        let mistral = Some(ToolSyntax::MISTRAL);
        grows(
            mistral,
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": [1, 2]}}, {\"name\": \"b\", \"arguments\": {}}]",
            &[c("a", r#"{"x":[1,2]}"#, true), c("b", "{}", true)],
        );
        let named = ToolSyntax::named("kimi-k2");
        grows(
            named,
            "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"a b\"}<|tool_call_end|>",
            &[c("get_weather", r#"{"city":"a b"}"#, true)],
        );
        let xml = ToolSyntax::named("qwen3-coder");
        grows(
            xml,
            "<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n<parameter=b>\n2\n</parameter>\n</function>\n</tool_call>",
            &[c("add", r#"{"a":1,"b":2}"#, true)],
        );
        let gemma = ToolSyntax::named("gemma4");
        grows(
            gemma,
            "<|tool_call>call:get_weather{city:<|\"|>Rome, \"IT\"<|\"|>,days:3}<tool_call|>",
            &[c(
                "get_weather",
                r#"{"city":"Rome, \"IT\"","days":3}"#,
                true,
            )],
        );
        let keyed = ToolSyntax::named("apertus");
        grows(
            keyed,
            "<|tools_prefix|>[{\"add\": {\"a\": 1}}, {\"get_weather\": {\"city\": \"x\"}}]<|tools_suffix|>",
            &[c("add", r#"{"a":1}"#, true), c("get_weather", r#"{"city":"x"}"#, true)],
        );
        let llama = Some(ToolSyntax::LLAMA3);
        grows(
            llama,
            "{\"name\": \"add\", \"parameters\": {\"a\": 3}}",
            &[c("add", r#"{"a":3}"#, true)],
        );
    }

    #[test]
    fn whitespace_inside_strings_is_kept() {
        assert_eq!(
            compact("{ \"a b\" : \" x\\\" y \" }"),
            "{\"a b\":\" x\\\" y \"}"
        );
    }
}
