//! JSON bodies: strict parsing into typed structs (`deny_unknown_fields`, duplicate
//! fields refused, nesting bounded before serde recurses), every error naming its field
//! in `param`, and no client string echoed back in a message.
//!
//! SECURITY: the depth check runs on the raw bytes first, so a deeply nested body never
//! reaches the recursive parser; error messages are cut to a short length and string
//! values inside them are redacted, so a 400 cannot reflect client content.

use super::error::ApiError;
use serde::Deserialize;

/// Deepest JSON nesting accepted. A valid request nests at most 5 levels (body →
/// messages → message → content parts → part); 32 leaves room for clients' extras while
/// keeping the parser's recursion far below serde_json's own limit of 128.
pub const MAX_JSON_DEPTH: usize = 32;

/// Parse a JSON body into `T`, naming the failing field in `param`.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("Request body is not valid UTF-8"));
    }
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request(format!(
            "The JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(e, ""))?;
    de.end()
        .map_err(|_| ApiError::bad_request("Unexpected data after the JSON body"))?;
    Ok(value)
}

/// Read a part of a body already parsed (e.g. one item of a list whose shape depends on
/// its `type`) into `T`, as strictly as `parse_json`; `at` is where it sits (`input[2]`),
/// so the error names the whole path.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    at: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| field_error(e, at))
}

/// A serde error as a 400 naming its field (below `at`).
fn field_error(e: serde_path_to_error::Error<serde_json::Error>, at: &str) -> ApiError {
    // SECURITY: a field name is client-chosen; bound what is echoed in `param`.
    let path = crate::sanitize::shown(&e.path().to_string(), 64);
    let inner = e.into_inner();
    let msg = describe_json_error(&inner);
    let join = |field: &str| match at {
        "" => field.to_string(),
        _ => format!("{at}.{field}"),
    };
    if path.is_empty() || path == "." {
        match unknown_field_name(&msg) {
            Some(p) => ApiError::invalid(msg.clone(), join(&p)),
            None if at.is_empty() => ApiError::bad_request(msg),
            None => ApiError::invalid(msg, at.to_string()),
        }
    } else {
        ApiError::invalid(msg, join(&path))
    }
}

/// Deepest `[`/`{` nesting in `body`, ignoring brackets inside strings. A linear scan
/// with no allocation, run before the recursive parser sees the body.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Longest parse-error message returned; serde messages can quote client input.
const MAX_ERROR_MESSAGE: usize = 200;

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    let msg = match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("We could not parse the JSON body of your request: {text}")
        }
        _ => {
            let cut = text.find(" at line ").unwrap_or(text.len());
            format!("Invalid request body: {}", redact_strings(&text[..cut]))
        }
    };
    // SECURITY: bounded, and never a quoted client string (it may be prompt text).
    crate::sanitize::shown(&msg, MAX_ERROR_MESSAGE)
}

/// Replace serde's quoted values (`string "..."`) with a placeholder.
fn redact_strings(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + "string \"".len()..];
        rest = match after.find("\", ") {
            Some(end) => &after[end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(crate::sanitize::shown(rest.split('`').next()?, 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::chat::ChatCompletionRequest;

    #[test]
    fn json_depth_counts_brackets_outside_strings_only() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{{\"]]]"}"#), 1);
        assert_eq!(json_depth(b"[]"), 1);
        assert_eq!(json_depth(b"42"), 0);
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let e = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested deeper than 32"), "{e:?}");
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parse_json::<serde_json::Value>(ok.as_bytes()).is_ok());
        // A body nested past serde_json's own limit gets the same clear answer.
        let very = "[".repeat(100_000);
        assert!(parse_json::<serde_json::Value>(very.as_bytes()).is_err());
    }

    #[test]
    fn malformed_json_and_trailing_data_are_400() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"model\":\"m\"} x",
            b"\xff\xfe",
            b"{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}",
        ] {
            let e = parse_json::<ChatCompletionRequest>(body).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn type_errors_do_not_echo_client_strings() {
        let e = parse_json::<ChatCompletionRequest>(
            br#"{"model":"m","messages":"my private prompt text, expected by nobody"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(!e.message.contains("private"), "{}", e.message);
        let long = format!(r#"{{"model":"m","messages":[],"{}":1}}"#, "k".repeat(5000));
        let e = parse_json::<ChatCompletionRequest>(long.as_bytes()).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_MESSAGE * 4,
            "{}",
            e.message.len()
        );
        assert!(e.param.unwrap().len() <= 64);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json::<ChatCompletionRequest>(body.as_bytes()).is_err());
    }
}
