//! The schema walk's tests: every refused contradiction names its path.

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
        (json!({"type": "string", "minimum": 1}), "s.minimum"),
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
fn contradictions_are_named_before_anything_compiles() {
    for (schema, param) in [
        // The cases of issue 15 (each aborted or froze llama.cpp's GBNF path).
        (
            json!({"type": "integer", "minimum": 5, "maximum": 3}),
            "s.minimum",
        ),
        (
            json!({"type": "string", "minLength": 5, "maxLength": 2}),
            "s.minLength",
        ),
        (
            json!({"type": "array", "minItems": 5, "maxItems": 2}),
            "s.minItems",
        ),
        (
            json!({"type": "string", "pattern": "^a{5,2}$"}),
            "s.pattern",
        ),
        // Variants: exclusive bounds, ranges without an integer, property counts.
        (
            json!({"type": "number", "exclusiveMinimum": 3, "maximum": 3}),
            "s.exclusiveMinimum",
        ),
        (
            json!({"type": "number", "minimum": 3, "exclusiveMaximum": 3}),
            "s.minimum",
        ),
        (
            json!({"type": "integer", "minimum": 2.1, "maximum": 2.9}),
            "s.minimum",
        ),
        (
            json!({"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 3}),
            "s.exclusiveMinimum",
        ),
        (
            json!({"type": "object", "minProperties": 3, "maxProperties": 1}),
            "s.minProperties",
        ),
        (json!({"type": "string", "pattern": "x{2000}"}), "s.pattern"),
        (
            json!({"type": "string", "pattern": "(ab){3,1}c"}),
            "s.pattern",
        ),
        // Values outside the type, impossible objects, types that cannot meet.
        (json!({"type": "string", "const": 3}), "s.const"),
        (json!({"type": "integer", "enum": ["a", 1.5]}), "s.enum"),
        (
            json!({"type": "object", "properties": {"a": {}}, "required": ["a", "b"], "additionalProperties": false}),
            "s.required[1]",
        ),
        (
            json!({"allOf": [{"type": "string"}, {"type": "integer"}]}),
            "s.allOf",
        ),
        (
            json!({"type": "object", "allOf": [{"type": ["string", "null"]}]}),
            "s.allOf",
        ),
        // A type list with a repeated entry (exponential in some converters).
        (json!({"type": ["string", "string"]}), "s.type"),
        (
            json!({"properties": {"a": {"type": "integer", "maximum": 1, "minimum": 2}}}),
            "s.properties.a.minimum",
        ),
    ] {
        let e = check(&schema, "s").unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{schema}: {}", e.message);
        assert_eq!(e.code, Some("invalid_json_schema"));
    }
    // What is consistent stays accepted.
    for ok in [
        json!({"type": "integer", "minimum": 3, "maximum": 3}),
        json!({"type": "integer", "minimum": 2.5, "maximum": 3}),
        json!({"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}),
        json!({"type": "string", "pattern": "^[a-z]{2,5}\\{x\\}[{]$"}),
        json!({"type": ["integer", "null"], "enum": [1, null]}),
        json!({"type": "number", "const": 2}),
        json!({"allOf": [{"type": "number"}, {"type": "integer"}]}),
        json!({"type": "object", "properties": {"a": {}}, "required": ["a"], "additionalProperties": false}),
    ] {
        check(&ok, "s").unwrap_or_else(|e| panic!("{ok}: {}", e.message));
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

/// Issue 31: a `$ref` cycle that never reaches a value, and integer bounds the
/// constraint compiler cannot build, are 400s naming the path, in our words.
#[test]
fn reference_cycles_and_out_of_range_integer_bounds_are_named() {
    for (schema, param, says) in [
        (
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            "s.$ref",
            "cycle of references (#/$defs/a → #/$defs/b → #/$defs/a)",
        ),
        (
            json!({"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "required": ["x"],
                   "$defs": {"a": {"$ref": "#/$defs/a"}}}),
            "s.properties.x.$ref",
            "never reaches a schema describing a value",
        ),
        (
            json!({"properties": {"x": {"$ref": "#/$defs/missing"}}, "$defs": {}}),
            "s.properties.x.$ref",
            "names no definition",
        ),
        (
            json!({"type": "integer", "maximum": i64::MIN}),
            "s.maximum",
            "between -9007199254740991 and 9007199254740991",
        ),
        (
            json!({"type": "integer", "exclusiveMinimum": 1e300}),
            "s.exclusiveMinimum",
            "2^53 - 1",
        ),
    ] {
        let e = check(&schema, "s").unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{schema}: {}", e.message);
        assert!(e.message.contains(says), "{schema}: {}", e.message);
    }
    // Recursion through a value is fine: a tree whose children are trees.
    let tree = json!({"$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node"});
    check(&tree, "s").unwrap();
    // Bounds within 2^53 - 1, and large bounds on plain numbers, pass.
    check(
        &json!({"type": "integer", "minimum": -9007199254740991i64}),
        "s",
    )
    .unwrap();
    check(&json!({"type": "number", "maximum": 1e300}), "s").unwrap();
}
