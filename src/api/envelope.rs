//! The generic tool format's answer (`{"tool_calls": [...]}` or `{"content": "..."}`,
//! constrained by `ToolSet::answer_schema`), parsed whole or cut short.
//!
//! SECURITY / correctness (issue 29): what the model wrote as a call is returned as a call
//! or not at all, never as text. An answer cut by `max_tokens` gives the calls completed
//! before the cut (the cut one is dropped) or the content written so far; the raw
//! envelope never reaches the client as content. Model output is semi-trusted (a client
//! shapes it through its prompt): this is pure Rust over a bounded text, fuzzed with the
//! other tool parsers (`fuzz_targets/tool_calls`).

use super::tools::Answer;
use crate::engine::tool_syntax::closed_elements;
use serde_json::Value;

const CALLS_OPEN: &str = r#"{"tool_calls":["#;
const CONTENT_OPEN: &str = r#"{"content":""#;

/// Parse an answer in the generic format. None when the text is not that format at all
/// (an unconstrained generation): the caller returns it as content.
pub fn parse(text: &str) -> Option<Answer> {
    let text = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return whole(&v);
    }
    if let Some(rest) = text.strip_prefix(CALLS_OPEN) {
        let calls = complete_calls(rest);
        // Cut before any call closed: an empty answer (the finish reason says why).
        return Some(match calls.is_empty() {
            true => Answer::Content(String::new()),
            false => Answer::Calls(calls, String::new()),
        });
    }
    if let Some(rest) = text.strip_prefix(CONTENT_OPEN) {
        return Some(Answer::Content(string_prefix(rest)));
    }
    // Cut inside an opener: nothing written yet.
    if !text.is_empty() && (CALLS_OPEN.starts_with(text) || CONTENT_OPEN.starts_with(text)) {
        return Some(Answer::Content(String::new()));
    }
    None
}

fn whole(v: &Value) -> Option<Answer> {
    if let Some(calls) = v.get("tool_calls").and_then(Value::as_array) {
        let calls = calls.iter().map(call).collect::<Option<Vec<_>>>()?;
        return Some(Answer::Calls(calls, String::new()));
    }
    v.get("content")
        .and_then(Value::as_str)
        .map(|s| Answer::Content(s.to_string()))
}

/// (name, arguments as JSON text) of one call object.
fn call(c: &Value) -> Option<(String, String)> {
    let name = c.get("name")?.as_str()?.to_string();
    let args = c.get("arguments")?.to_string();
    Some((name, args))
}

/// The calls of a cut `tool_calls` array (`rest` follows its `[`): every call that
/// closed before the cut.
fn complete_calls(rest: &str) -> Vec<(String, String)> {
    closed_elements(rest).iter().map_while(call).collect()
}

/// The text of a cut JSON string (`rest` follows its opening quote): every character
/// before the cut, an escape cut in the middle left out.
fn string_prefix(rest: &str) -> String {
    // The longest prefix that closes as a JSON string: at most the last escape (`\uXXXX`,
    // six bytes, or a surrogate pair's twelve) is incomplete.
    let end = rest.len();
    for back in 0..=12.min(end) {
        let Some(prefix) = rest.get(..end - back) else {
            continue;
        };
        if let Ok(s) = serde_json::from_str::<String>(&format!("\"{prefix}\"")) {
            return s;
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(text: &str) -> Vec<(String, String)> {
        match parse(text) {
            Some(Answer::Calls(c, before)) => {
                assert_eq!(before, "");
                c
            }
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn whole_answers_parse() {
        assert_eq!(
            calls(r#"{"tool_calls":[{"name":"f","arguments":{"a":1}}]}"#),
            [("f".to_string(), r#"{"a":1}"#.to_string())]
        );
        assert_eq!(
            parse(r#" {"content":"hi"} "#),
            Some(Answer::Content("hi".into()))
        );
        assert_eq!(parse("Just text."), None);
    }

    /// Issue 29: the answer the test model wrote when `max_tokens` cut its third call.
    #[test]
    fn a_cut_answer_gives_the_calls_before_the_cut() {
        let cut = r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":{"city":"Rome"}},{"name":"get_weather","argu"#;
        assert_eq!(
            calls(cut),
            [
                ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string()),
                ("get_weather".to_string(), r#"{"city":"Rome"}"#.to_string()),
            ]
        );
        // Cut inside the first call, or right after the opener: no call, no text.
        for cut in [
            r#"{"tool_calls":[{"name":"get_we"#,
            r#"{"tool_calls":["#,
            r#"{"too"#,
            r#"{"con"#,
        ] {
            assert_eq!(parse(cut), Some(Answer::Content(String::new())), "{cut}");
        }
        // Cut between calls, after a comma.
        assert_eq!(
            calls(r#"{"tool_calls":[{"name":"f","arguments":{}},"#).len(),
            1
        );
    }

    #[test]
    fn a_cut_content_gives_its_text_so_far() {
        assert_eq!(
            parse(r#"{"content":"It is sunny in Par"#),
            Some(Answer::Content("It is sunny in Par".into()))
        );
        // An escape cut in the middle is left out; complete ones are decoded.
        assert_eq!(
            parse(r#"{"content":"a\"b\u00e9\u00"#),
            Some(Answer::Content("a\"bé".into()))
        );
        assert_eq!(
            parse(r#"{"content":"x\"#),
            Some(Answer::Content("x".into()))
        );
    }
}
