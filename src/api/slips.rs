//! Calls a model wrote without its family's opener. Small and quantised models of a
//! tag-based family slip: they write the call as a bare JSON object, wrap it in a code
//! fence, or put a sentence before it. In an answer where the family's parser found no
//! call, such an object is taken for a call only when it names a declared function and
//! its arguments fit that function's parameters (`fits`), so that an ordinary JSON answer
//! never turns into a call.
//!
//! SECURITY / robustness: pure Rust over the model's text; at most one object is read,
//! and only from the answer's first `{` (bounded work: one JSON parse of the answer).

use crate::engine::family::required_keys;
use serde_json::{Map, Value};

/// A slipped call in `text` to one of `functions` (name, parameters schema): the text
/// before it and the call (name, arguments as JSON text). None when the text holds no
/// object, or one that is not a whole call of a declared function with fitting
/// arguments, or holds anything but whitespace or a closing fence after it.
pub fn slipped_call(
    text: &str,
    functions: &[(String, Value)],
) -> Option<(String, (String, String))> {
    let at = text.find('{')?;
    let before = text[..at].trim_end();
    // A code fence around the call: ```json or ``` before, ``` after.
    let (before, fenced) = match before
        .strip_suffix("```json")
        .or_else(|| before.strip_suffix("```"))
    {
        Some(b) => (b.trim_end(), true),
        None => (before, false),
    };
    let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<Value>();
    let call = values.next()?.ok()?;
    let after = text[at + values.byte_offset()..].trim();
    let after = match fenced {
        true => after.strip_prefix("```")?.trim(),
        false => after,
    };
    if !after.is_empty() {
        return None;
    }
    let name = call.get("name")?.as_str()?;
    let args = call.get("arguments").or_else(|| call.get("parameters"))?;
    let args = match args {
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?,
        v => v.clone(),
    };
    let (_, schema) = functions.iter().find(|(f, _)| f == name)?;
    if !fits(&args, schema) {
        return None;
    }
    Some((before.to_string(), (name.to_string(), args.to_string())))
}

/// The arguments fit a parameters schema: an object holding every required property, no
/// property the schema does not declare (the server enforces closed objects), and each
/// declared property of the declared JSON type. Nested schemas are not walked: the
/// check tells a call from an ordinary JSON answer, it is not a validator.
pub fn fits(args: &Value, schema: &Value) -> bool {
    let Value::Object(args) = args else {
        return false;
    };
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let has_required = required_keys(schema)
        .into_iter()
        .all(|k| args.contains_key(k));
    has_required
        && args.iter().all(|(k, v)| {
            props
                .get(k)
                .is_some_and(|p| match p.get("type").and_then(Value::as_str) {
                    Some("string") => v.is_string(),
                    Some("integer") => v.is_i64() || v.is_u64(),
                    Some("number") => v.is_number(),
                    Some("boolean") => v.is_boolean(),
                    Some("array") => v.is_array(),
                    Some("object") => v.is_object(),
                    Some("null") => v.is_null(),
                    _ => true,
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn functions() -> Vec<(String, Value)> {
        vec![(
            "get_weather".into(),
            json!({"type": "object", "properties": {"city": {"type": "string"},
                "days": {"type": "integer"}}, "required": ["city"]}),
        )]
    }

    fn call(text: &str) -> Option<(String, (String, String))> {
        slipped_call(text, &functions())
    }

    #[test]
    fn a_bare_call_of_a_declared_tool_is_a_call() {
        let want = Some((
            String::new(),
            ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string()),
        ));
        assert_eq!(
            call(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#),
            want
        );
        // Fenced, with `parameters`, with a sentence before it.
        assert_eq!(
            call(
                "```json\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n```"
            ),
            want
        );
        let (before, c) = call("Let me check.\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}").unwrap();
        assert_eq!(before, "Let me check.");
        assert_eq!(c.1, r#"{"city":"Paris","days":2}"#);
        // Arguments as a JSON string.
        assert!(call(r#"{"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}"#).is_some());
    }

    #[test]
    fn an_ordinary_json_answer_stays_an_answer() {
        for text in [
            r#"{"city": "Paris", "temp": 21}"#,
            r#"{"name": "Paris", "arguments": {"city": "x"}}"#,
            r#"{"name": "get_weather", "arguments": {"town": "Paris"}}"#,
            r#"{"name": "get_weather", "arguments": {}}"#,
            r#"{"name": "get_weather", "arguments": {"city": 5}}"#,
            r#"{"name": "get_weather", "arguments": {"city": "Paris", "days": 1.5}}"#,
            r#"{"name": "get_weather", "arguments": {"city": "Paris"}} and more text"#,
            r#"{"name": "get_weather", "arguments": {"city": "Par"#,
            "It is sunny.",
        ] {
            assert_eq!(call(text), None, "{text}");
        }
    }
}
