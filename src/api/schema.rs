//! JSON Schema for structured output and tool parameters: checked against the subset
//! llama.cpp's converter (`json_schema_to_grammar`) enforces, before any engine work.
//!
//! SECURITY / correctness: a keyword the converter would silently ignore means output that
//! does not validate against the caller's schema, so every keyword outside the supported
//! set is a 400 naming it (and its path). Sizes that turn into grammar rules (repetition
//! bounds, pattern length, property counts, nesting) are capped, so a small schema cannot
//! expand into a huge grammar on the engine thread.

use super::error::ApiError;
use serde_json::Value;

/// Keywords with an effect the converter enforces.
const ENFORCED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

/// Annotations without effect on what is valid; accepted and ignored, as the spec allows.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// `format` values the converter turns into grammar rules.
const FORMATS: &[&str] = &["date", "time", "date-time", "uuid"];

/// Largest repetition bound (minItems/maxItems/minLength/maxLength): each unit becomes a
/// grammar rule.
pub const MAX_REPEAT: u64 = 1024;
/// Longest `pattern`; the converter compiles it into grammar rules.
pub const MAX_PATTERN: usize = 256;
/// Most sub-schemas in one schema (properties, items, alternatives, definitions).
pub const MAX_NODES: usize = 512;
/// Deepest sub-schema nesting.
pub const MAX_DEPTH: usize = 16;

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Check `schema` (at request path `param`); Ok means llama.cpp's converter enforces all of it.
pub fn check(schema: &Value, param: &str) -> Result<(), ApiError> {
    let mut nodes = 0usize;
    walk(schema, param, 0, &mut nodes)
}

fn fail(message: String, param: &str) -> ApiError {
    ApiError::invalid(message, param).with_code("invalid_json_schema")
}

fn walk(v: &Value, path: &str, depth: usize, nodes: &mut usize) -> Result<(), ApiError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(fail(
            format!("The schema has more than {MAX_NODES} sub-schemas"),
            path,
        ));
    }
    if depth > MAX_DEPTH {
        return Err(fail(
            format!("The schema nests deeper than {MAX_DEPTH} levels"),
            path,
        ));
    }
    let obj = match v {
        Value::Bool(true) => return Ok(()),
        Value::Object(o) => o,
        _ => return Err(fail("A schema must be an object (or `true`)".into(), path)),
    };
    for (key, value) in obj {
        let here = format!("{path}.{}", bounded(key));
        if ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if !ENFORCED.contains(&key.as_str()) {
            return Err(fail(
                format!(
                    "JSON Schema keyword `{}` is not supported by this server's grammar-constrained sampling",
                    bounded(key)
                ),
                &here,
            ));
        }
        match key.as_str() {
            "type" => check_type(value, &here)?,
            "properties" | "$defs" | "definitions" => {
                let Value::Object(map) = value else {
                    return Err(fail(format!("`{key}` must be an object"), &here));
                };
                for (name, sub) in map {
                    walk(sub, &format!("{here}.{}", bounded(name)), depth + 1, nodes)?;
                }
            }
            "additionalProperties" => match value {
                Value::Bool(_) => {}
                sub => walk(sub, &here, depth + 1, nodes)?,
            },
            "items" => walk(value, &here, depth + 1, nodes)?,
            "prefixItems" | "anyOf" | "oneOf" | "allOf" => {
                let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
                    fail(
                        format!("`{key}` must be a non-empty array of schemas"),
                        &here,
                    )
                })?;
                for (i, sub) in list.iter().enumerate() {
                    walk(sub, &format!("{here}[{i}]"), depth + 1, nodes)?;
                }
            }
            "required" => {
                let ok = value
                    .as_array()
                    .is_some_and(|l| l.iter().all(Value::is_string));
                if !ok {
                    return Err(fail("`required` must be an array of strings".into(), &here));
                }
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" => match value.as_u64() {
                Some(n) if n <= MAX_REPEAT => {}
                _ => {
                    return Err(fail(
                        format!("`{key}` must be an integer from 0 to {MAX_REPEAT}"),
                        &here,
                    ))
                }
            },
            // The converter bounds integers only; a bound on a `number` would be ignored.
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if obj.get("type").and_then(Value::as_str) != Some("integer")
                    || !value.is_i64() =>
            {
                return Err(fail(
                    format!("`{key}` is supported on `\"type\": \"integer\"` with an integer bound only"),
                    &here,
                ));
            }
            "enum" if value.as_array().is_none_or(|l| l.is_empty()) => {
                return Err(fail("`enum` must be a non-empty array".into(), &here));
            }
            "pattern" => match value.as_str() {
                Some(p) if p.len() <= MAX_PATTERN => {}
                _ => {
                    return Err(fail(
                        format!("`pattern` must be a string of at most {MAX_PATTERN} bytes"),
                        &here,
                    ))
                }
            },
            "format" if !value.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                return Err(fail(
                    format!("`format` must be one of {}", FORMATS.join(", ")),
                    &here,
                ));
            }
            "$ref" => {
                let ok = value
                    .as_str()
                    .is_some_and(|r| r.starts_with("#/$defs/") || r.starts_with("#/definitions/"));
                if !ok {
                    return Err(fail(
                        "`$ref` must point inside the schema (#/$defs/… or #/definitions/…)".into(),
                        &here,
                    ));
                }
            }
            _ => {} // const, and the checked cases above that passed
        }
    }
    Ok(())
}

fn check_type(v: &Value, path: &str) -> Result<(), ApiError> {
    let ok = |t: &Value| t.as_str().is_some_and(|s| TYPES.contains(&s));
    let valid = match v {
        Value::Array(list) => !list.is_empty() && list.iter().all(ok),
        t => ok(t),
    };
    if valid {
        Ok(())
    } else {
        Err(fail(
            format!(
                "`type` must be one of {} (or a list of them)",
                TYPES.join(", ")
            ),
            path,
        ))
    }
}

/// SECURITY: names come from the client; bound what is echoed.
fn bounded(s: &str) -> String {
    s.chars()
        .take(32)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Does `schema` use `$ref`/`$defs` anywhere (which only resolve at the schema's root)?
pub fn uses_refs(schema: &Value) -> bool {
    match schema {
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| k == "$ref" || k == "$defs" || k == "definitions" || uses_refs(v)),
        Value::Array(l) => l.iter().any(uses_refs),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn supported_subset_passes() {
        let s = json!({
            "type": "object",
            "title": "Person",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "age": {"type": "integer", "minimum": 0, "maximum": 150},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                "home": {"$ref": "#/$defs/City"},
                "nick": {"type": ["string", "null"]},
                "born": {"type": "string", "format": "date"}
            },
            "required": ["name", "age"],
            "additionalProperties": false,
            "$defs": {"City": {"anyOf": [{"const": "Paris"}, {"type": "string", "pattern": "^[A-Z][a-z]+$"}]}}
        });
        check(&s, "response_format.json_schema.schema").unwrap();
        assert!(uses_refs(&s));
    }

    #[test]
    fn unsupported_keywords_are_named() {
        for (schema, param) in [
            (
                json!({"type": "object", "patternProperties": {}}),
                "s.patternProperties",
            ),
            (
                json!({"properties": {"a": {"not": {}}}}),
                "s.properties.a.not",
            ),
            (json!({"type": "number", "minimum": 1}), "s.minimum"),
            (json!({"type": "string", "format": "email"}), "s.format"),
            (json!({"type": "array", "maxItems": 100000}), "s.maxItems"),
            (json!({"type": "strnig"}), "s.type"),
            (json!({"$ref": "https://example.com/s.json"}), "s.$ref"),
            (json!({"anyOf": []}), "s.anyOf"),
            (json!("object"), "s"),
        ] {
            let e = check(&schema, "s").unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{schema}: {}", e.message);
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let mut deep = json!({"type": "string"});
        for _ in 0..20 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(check(&deep, "s").unwrap_err().message.contains("deeper"));
        let props: serde_json::Map<String, Value> = (0..600)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        let wide = json!({"type": "object", "properties": props});
        assert!(check(&wide, "s")
            .unwrap_err()
            .message
            .contains("sub-schemas"));
    }
}
