//! JSON Schema for structured output and tool parameters: checked in Rust, before it is
//! compiled (`engine::constraint`, llguidance), against the subset this server enforces
//! and for consistency.
//!
//! SECURITY / correctness:
//! - A keyword the constraint would not enforce means output that does not validate
//!   against the caller's schema, so every keyword outside the supported set is a 400
//!   naming it (and its path).
//! - Sizes that turn into grammar (repetition bounds, pattern length and quantifiers,
//!   sub-schema count, nesting) are capped, so a small schema cannot expand into a huge
//!   grammar.
//! - Consistency: every empty or contradictory range is a 400 naming its path — min above
//!   max (numbers with exclusive bounds too, integer ranges holding no integer, lengths,
//!   item and property counts), pattern quantifiers `{m,n}` with m > n, `type` lists that
//!   repeat a type, `const`/`enum` values outside `type`, `required` properties that
//!   `additionalProperties: false` forbids, and `allOf` branches whose types cannot meet.
//!   What this walk cannot see, llguidance's compiler checks again, and a compiled
//!   constraint must still allow a first token; so any schema either becomes a
//!   constraint that accepts some output, or is refused.

use super::error::ApiError;
use crate::sanitize::shown;
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
    "minProperties",
    "maxProperties",
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

/// Largest repetition bound (minItems/maxItems/minLength/maxLength/min-maxProperties and
/// pattern quantifiers): each unit becomes grammar.
pub const MAX_REPEAT: u64 = 1024;
/// Longest `pattern`; the converter compiles it into grammar rules.
pub const MAX_PATTERN: usize = 256;
/// Most sub-schemas in one schema (properties, items, alternatives, definitions).
pub const MAX_NODES: usize = 512;
/// Deepest sub-schema nesting.
pub const MAX_DEPTH: usize = 16;
/// Largest integer bound (2^53 − 1): beyond it JSON numbers are not exact in most
/// parsers (RFC 7493), and the constraint compiler cannot build integer ranges near the
/// ends of 64 bits (−2^63 overflowed inside it).
pub const MAX_INTEGER_BOUND: f64 = 9_007_199_254_740_991.0;

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Check `schema` (at request path `param`); Ok means llama.cpp's converter enforces all of it.
pub fn check(schema: &Value, param: &str) -> Result<(), ApiError> {
    let mut nodes = 0usize;
    walk(schema, param, 0, &mut nodes)?;
    check_ref_cycles(schema, schema, param, 0)
}

/// Every `$ref` (at `path` in `v`, `root` holding the definitions) must lead, through the
/// references it names, to a schema that describes a value: a chain that only refers on
/// (`a` → `b` → `a`) describes nothing and is a 400 naming where it starts.
fn check_ref_cycles(root: &Value, v: &Value, path: &str, depth: usize) -> Result<(), ApiError> {
    let Some(obj) = v.as_object() else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Ok(()); // `walk` refused deeper schemas already
    }
    if let Some(first) = obj.get("$ref").and_then(Value::as_str) {
        let mut seen: Vec<&str> = Vec::new();
        let mut at = Some(first);
        while let Some(r) = at {
            if seen.contains(&r) {
                seen.push(r);
                return Err(fail(
                    format!(
                        "`$ref` leads through a cycle of references ({}) that never reaches a schema describing a value",
                        seen.iter().map(|r| shown(r, KEY_SHOWN)).collect::<Vec<_>>().join(" → ")
                    ),
                    &format!("{path}.$ref"),
                ));
            }
            seen.push(r);
            at = match resolve(root, r) {
                Some(def) => def.get("$ref").and_then(Value::as_str),
                // A pointer deeper into a definition is left to the compiler.
                None if r.matches('/').count() > 2 => None,
                None => {
                    return Err(fail(
                        format!(
                        "`$ref` {} names no definition in the schema's `$defs` or `definitions`",
                        shown(r, KEY_SHOWN)
                    ),
                        &format!("{path}.$ref"),
                    ))
                }
            };
        }
    }
    for (key, value) in obj {
        let here = format!("{path}.{}", shown(key, KEY_SHOWN));
        match value {
            Value::Object(m) if matches!(key.as_str(), "properties" | "$defs" | "definitions") => {
                for (k, sub) in m {
                    let sub_path = format!("{here}.{}", shown(k, KEY_SHOWN));
                    check_ref_cycles(root, sub, &sub_path, depth + 1)?;
                }
            }
            Value::Object(_) => check_ref_cycles(root, value, &here, depth + 1)?,
            Value::Array(items) => {
                for (i, sub) in items.iter().enumerate() {
                    check_ref_cycles(root, sub, &format!("{here}[{i}]"), depth + 1)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The definition `#/$defs/NAME` or `#/definitions/NAME` names, if it exists.
fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let (table, name) = r
        .strip_prefix("#/$defs/")
        .map(|n| ("$defs", n))
        .or_else(|| r.strip_prefix("#/definitions/").map(|n| ("definitions", n)))?;
    root.get(table)?.get(name)
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
        let here = format!("{path}.{}", shown(key, KEY_SHOWN));
        if ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if !ENFORCED.contains(&key.as_str()) {
            return Err(fail(
                format!(
                    "JSON Schema keyword `{}` is not supported by this server's grammar-constrained sampling",
                    shown(key, KEY_SHOWN)
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
                    walk(
                        sub,
                        &format!("{here}.{}", shown(name, KEY_SHOWN)),
                        depth + 1,
                        nodes,
                    )?;
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
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" => match value.as_u64() {
                Some(n) if n <= MAX_REPEAT => {}
                _ => {
                    return Err(fail(
                        format!("`{key}` must be an integer from 0 to {MAX_REPEAT}"),
                        &here,
                    ))
                }
            },
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if !numeric_type(obj) || !value.is_number() =>
            {
                return Err(fail(
                    format!("`{key}` is supported on `\"type\": \"integer\"` or `\"number\"` with a numeric bound only"),
                    &here,
                ));
            }
            "enum" if value.as_array().is_none_or(|l| l.is_empty()) => {
                return Err(fail("`enum` must be a non-empty array".into(), &here));
            }
            "pattern" => match value.as_str() {
                Some(p) if p.len() <= MAX_PATTERN => {
                    check_quantifiers(p).map_err(|m| fail(m, &here))?
                }
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
    consistent(obj, path)
}

/// Does the node declare only numeric types (where numeric bounds mean something)?
fn numeric_type(obj: &serde_json::Map<String, Value>) -> bool {
    let numeric = |t: &Value| matches!(t.as_str(), Some("integer" | "number"));
    match obj.get("type") {
        Some(Value::Array(list)) => !list.is_empty() && list.iter().all(numeric),
        Some(t) => numeric(t),
        None => false,
    }
}

/// The node's keywords, taken together, must leave some value valid.
fn consistent(obj: &serde_json::Map<String, Value>, path: &str) -> Result<(), ApiError> {
    let here = |k: &str| format!("{path}.{k}");
    for (lo, hi) in [
        ("minLength", "maxLength"),
        ("minItems", "maxItems"),
        ("minProperties", "maxProperties"),
    ] {
        if let (Some(a), Some(b)) = (
            obj.get(lo).and_then(Value::as_u64),
            obj.get(hi).and_then(Value::as_u64),
        ) {
            if a > b {
                return Err(fail(
                    format!("`{lo}` ({a}) is greater than `{hi}` ({b}): no value fits"),
                    &here(lo),
                ));
            }
        }
    }
    check_numeric_range(obj).map_err(|(k, m)| fail(m, &here(k)))?;
    check_integer_bounds(obj).map_err(|(k, m)| fail(m, &here(k)))?;
    let types = declared_types(obj);
    if let Some(types) = &types {
        if let Some(c) = obj.get("const") {
            if !types.iter().any(|t| has_type(c, t)) {
                return Err(fail(
                    "`const` is not of the declared `type`".into(),
                    &here("const"),
                ));
            }
        }
        if let Some(Value::Array(values)) = obj.get("enum") {
            if !values.iter().any(|v| types.iter().any(|t| has_type(v, t))) {
                return Err(fail(
                    "No `enum` value is of the declared `type`".into(),
                    &here("enum"),
                ));
            }
        }
    }
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        let declared = obj.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = obj.get("required") {
            for (i, name) in required.iter().enumerate() {
                let name = name.as_str().unwrap_or_default();
                if !declared.is_some_and(|p| p.contains_key(name)) {
                    return Err(fail(
                        "A `required` property is not in `properties` and `additionalProperties` is false: no object fits".into(),
                        &format!("{path}.required[{i}]"),
                    ));
                }
            }
        }
    }
    if let Some(Value::Array(branches)) = obj.get("allOf") {
        // The types every branch (and the node itself) allows must share one.
        let mut common: Option<Vec<&str>> = types.clone();
        for b in branches {
            let Some(t) = b.as_object().and_then(declared_types) else {
                continue;
            };
            common = Some(match common {
                None => t,
                Some(c) => c
                    .into_iter()
                    .filter(|x| t.iter().any(|y| meets(x, y)))
                    .collect(),
            });
        }
        if common.is_some_and(|c| c.is_empty()) {
            return Err(fail(
                "The `allOf` branches allow no common `type`: no value fits".into(),
                &here("allOf"),
            ));
        }
    }
    Ok(())
}

/// The node's `type` as a list (None when absent). Duplicates were refused already.
fn declared_types(obj: &serde_json::Map<String, Value>) -> Option<Vec<&str>> {
    match obj.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(list) => Some(list.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// Can a value be of both JSON Schema types (integer is a kind of number)?
fn meets(a: &str, b: &str) -> bool {
    a == b || matches!((a, b), ("integer", "number") | ("number", "integer"))
}

/// Is `v` of JSON Schema type `t`?
fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// Numeric bounds (inclusive and exclusive) must leave a number — for `integer`, an
/// integer — between them. Returns the keyword to name and why.
fn check_numeric_range(obj: &serde_json::Map<String, Value>) -> Result<(), (&'static str, String)> {
    let get = |k: &str| obj.get(k).and_then(Value::as_f64);
    // (bound, exclusive, keyword) for each side, the tighter one where both are given.
    let lower = [("minimum", false), ("exclusiveMinimum", true)]
        .into_iter()
        .filter_map(|(k, ex)| get(k).map(|v| (v, ex, k)))
        .fold(None, |best: Option<(f64, bool, &str)>, b| match best {
            Some(a) if a.0 > b.0 || (a.0 == b.0 && a.1) => Some(a),
            _ => Some(b),
        });
    let upper = [("maximum", false), ("exclusiveMaximum", true)]
        .into_iter()
        .filter_map(|(k, ex)| get(k).map(|v| (v, ex, k)))
        .fold(None, |best: Option<(f64, bool, &str)>, b| match best {
            Some(a) if a.0 < b.0 || (a.0 == b.0 && a.1) => Some(a),
            _ => Some(b),
        });
    let (Some((lo, lo_ex, lo_key)), Some((hi, hi_ex, _))) = (lower, upper) else {
        return Ok(());
    };
    let integer_only = declared_types(obj).is_some_and(|t| t == ["integer"]);
    let empty = if integer_only {
        let first = if lo_ex { lo.floor() + 1.0 } else { lo.ceil() };
        let last = if hi_ex { hi.ceil() - 1.0 } else { hi.floor() };
        first > last
    } else {
        lo > hi || (lo == hi && (lo_ex || hi_ex))
    };
    if empty {
        let what = if integer_only { "integer" } else { "number" };
        return Err((
            lo_key,
            format!("The bounds leave no {what} between them: no value fits"),
        ));
    }
    Ok(())
}

/// An integer schema's bounds lie within ±`MAX_INTEGER_BOUND`.
fn check_integer_bounds(
    obj: &serde_json::Map<String, Value>,
) -> Result<(), (&'static str, String)> {
    if !declared_types(obj).is_some_and(|t| t.contains(&"integer")) {
        return Ok(());
    }
    for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] {
        if let Some(v) = obj.get(key).and_then(Value::as_f64) {
            if v.abs() > MAX_INTEGER_BOUND {
                return Err((
                    key,
                    format!(
                        "Integer bounds must lie between -{0} and {0} (2^53 - 1, the integers JSON numbers carry exactly)",
                        MAX_INTEGER_BOUND as u64
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Regex quantifiers `{m}`, `{m,}`, `{m,n}` in a pattern: each bound at most MAX_REPEAT
/// and never m > n. Escaped braces and braces inside character classes are literal.
fn check_quantifiers(pattern: &str) -> Result<(), String> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\\' => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'{' if !in_class => {
                let rest = bytes.get(i + 1..).unwrap_or_default();
                let len = rest.iter().position(|&b| b == b'}').unwrap_or(rest.len());
                let body = std::str::from_utf8(rest.get(..len).unwrap_or_default()).unwrap_or("");
                let (m, n) = match body.split_once(',') {
                    Some((m, n)) => (m, Some(n)),
                    None => (body, None),
                };
                let num = |t: &str| -> Option<u64> {
                    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                        None
                    } else {
                        Some(t.parse().unwrap_or(u64::MAX))
                    }
                };
                // Not a quantifier (`{` as a literal, `{,n}`): leave it to the regex parser.
                if let Some(m) = num(m) {
                    let n = match n {
                        None => Some(m),
                        Some("") => None,
                        Some(t) => match num(t) {
                            Some(v) => Some(v),
                            None => {
                                i += 1;
                                continue;
                            }
                        },
                    };
                    if m > MAX_REPEAT || n.is_some_and(|n| n > MAX_REPEAT) {
                        return Err(format!(
                            "`pattern` repeats more than {MAX_REPEAT} times in one quantifier"
                        ));
                    }
                    if n.is_some_and(|n| m > n) {
                        return Err(format!(
                            "`pattern` has a quantifier {{{m},{}}} whose minimum is above its maximum",
                            n.unwrap_or_default()
                        ));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn check_type(v: &Value, path: &str) -> Result<(), ApiError> {
    let ok = |t: &Value| t.as_str().is_some_and(|s| TYPES.contains(&s));
    let valid = match v {
        Value::Array(list) => {
            // SECURITY: a repeated entry makes some converters rebuild the subtree once
            // per entry (exponential in nesting); a list names each type once.
            let distinct = list
                .iter()
                .enumerate()
                .all(|(i, t)| !list.iter().take(i).any(|u| u == t));
            !list.is_empty() && list.iter().all(ok) && distinct
        }
        t => ok(t),
    };
    if valid {
        Ok(())
    } else {
        Err(fail(
            format!(
                "`type` must be one of {} (or a list naming each at most once)",
                TYPES.join(", ")
            ),
            path,
        ))
    }
}

/// SECURITY: schema keys come from the client: at most this many characters of one are
/// echoed in a `param` path (`sanitize::shown`).
const KEY_SHOWN: usize = 32;

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
#[path = "schema_tests.rs"]
mod tests;
