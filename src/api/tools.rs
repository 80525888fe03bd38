//! Function calling: `tools`, `tool_choice`, `parallel_tool_calls`, tool history, and
//! parsing the model's answer into `tool_calls`.
//!
//! The answer format is llama.cpp's "generic" tool format, which its server uses for
//! models whose chat template has no tool syntax of its own (the test model's has none):
//! the tool list is described in a system message (templates that render tools also get
//! the tool objects and the call history in their own syntax, see `engine::template`),
//! and the answer is constrained by grammar to one JSON object — `{"tool_calls": [{"name", "arguments"}]}` or `{"content": "…"}`
//! (the latter only with `tool_choice: "auto"`). Because sampling is constrained, every
//! call the server returns names a declared function and its `arguments` validate
//! against that function's `parameters`.
//!
//! SECURITY: tool definitions are client data rendered into the prompt; they are size-
//! and count-capped and their schemas go through `schema::check` like response formats.

use super::check::NativeCall;
use super::check::{check_text, valid_name};
use super::error::ApiError;
use super::schema;
use crate::engine::family::Declared;
use crate::engine::tool_syntax::{self, ToolPlan, ToolSyntax, MAX_CALLS};
use serde::Deserialize;
use serde_json::{json, Value};

/// Most tools in one request (OpenAI allows 128; each adds prompt text and grammar).
pub const MAX_TOOLS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: RawFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Always enforced here (sampling is constrained); accepted for compatibility.
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawToolChoice {
    Mode(String),
    Named(NamedChoice),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFunction {
    pub name: String,
}

/// A tool call in an assistant message of the history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: RawCalledFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalledFunction {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Required,
    Named(String),
}

/// The validated tool settings of a request that may call tools.
#[derive(Debug, Clone)]
pub struct ToolSet {
    pub functions: Vec<Function>,
    pub choice: Choice,
    pub parallel: bool,
    /// Responses `max_tool_calls`: at most this many calls in the answer.
    pub max_tool_calls: Option<u32>,
}

/// What the model answered, once parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The calls (function name, arguments as JSON text), and any text the model wrote
    /// before them (a native syntax only; empty in the generic format).
    Calls(Vec<(String, String)>, String),
    Content(String),
}

/// Validate `tools`/`tool_choice`/`parallel_tool_calls`. None: no tool may be called
/// (no tools, or `tool_choice: "none"`).
pub fn validate(
    tools: Option<Vec<RawTool>>,
    choice: Option<RawToolChoice>,
    parallel: Option<bool>,
) -> Result<Option<ToolSet>, ApiError> {
    let Some(tools) = tools else {
        if choice.is_some() {
            return Err(ApiError::invalid(
                "`tool_choice` is only allowed when `tools` are specified",
                "tool_choice",
            ));
        }
        if parallel.is_some() {
            return Err(ApiError::invalid(
                "`parallel_tool_calls` is only allowed when `tools` are specified",
                "parallel_tool_calls",
            ));
        }
        return Ok(None);
    };
    if tools.is_empty() || tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            format!("`tools` must hold 1 to {MAX_TOOLS} tools"),
            "tools",
        ));
    }
    let mut functions = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::invalid(
                "Only tools of type `function` are supported",
                format!("tools[{i}].type"),
            ));
        }
        let f = t.function;
        if !valid_name(&f.name) {
            return Err(ApiError::invalid(
                "A function name must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
                format!("tools[{i}].function.name"),
            ));
        }
        if functions.iter().any(|g: &Function| g.name == f.name) {
            return Err(ApiError::invalid(
                "Function names must be unique",
                format!("tools[{i}].function.name"),
            ));
        }
        if let Some(d) = &f.description {
            check_text(d, &format!("tools[{i}].function.description"))?;
        }
        let parameters = f
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let param = format!("tools[{i}].function.parameters");
        schema::check(&parameters, &param)?;
        if schema::uses_refs(&parameters) {
            return Err(ApiError::invalid(
                "`$ref`/`$defs` are not supported in tool parameters; inline the definitions",
                param,
            )
            .with_code("invalid_json_schema"));
        }
        functions.push(Function {
            name: f.name,
            description: f.description,
            parameters,
        });
    }
    let choice = match choice {
        None => Choice::Auto,
        Some(RawToolChoice::Mode(m)) => match m.as_str() {
            "none" => return Ok(None),
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            _ => {
                return Err(ApiError::invalid(
                    "`tool_choice` must be none, auto, required or a named function",
                    "tool_choice",
                ))
            }
        },
        Some(RawToolChoice::Named(n)) => {
            if n.kind != "function" || !functions.iter().any(|f| f.name == n.function.name) {
                return Err(ApiError::invalid(
                    "`tool_choice` names a function that is not in `tools`",
                    "tool_choice",
                ));
            }
            Choice::Named(n.function.name)
        }
    };
    Ok(Some(ToolSet {
        functions,
        choice,
        parallel: parallel.unwrap_or(true),
        max_tool_calls: None,
    }))
}

impl ToolSet {
    /// The system text that tells the model which tools exist and how to answer.
    pub fn instructions(&self) -> String {
        let list: Vec<Value> = self
            .functions
            .iter()
            .map(|f| json!({"name": f.name, "description": f.description, "parameters": f.parameters}))
            .collect();
        let how = match &self.choice {
            Choice::Auto => "Respond in JSON only: either {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments object>}]} to call tools, or {\"content\": <your reply>} to answer the user directly.",
            Choice::Required => "Respond in JSON only: {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments object>}]}.",
            Choice::Named(_) => "Respond in JSON only: {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments object>}]} calling the tool named below.",
        };
        let mut text = format!("You can call these tools:\n{}\n{how}", Value::Array(list));
        if let Choice::Named(n) = &self.choice {
            text.push_str(&format!("\nCall the tool `{n}`."));
        }
        text
    }

    /// The tools as OpenAI tool objects, for chat templates that render tools.
    pub fn openai_objects(&self) -> Vec<Value> {
        self.functions
            .iter()
            .map(|f| {
                // The client's order (serde_json keeps it): templates print these with
                // `tojson`, so the prompt shows the tool as it was sent. No description
                // is no key, as in the client's object.
                let mut function = serde_json::Map::new();
                function.insert("name".into(), json!(f.name));
                if let Some(d) = &f.description {
                    function.insert("description".into(), json!(d));
                }
                function.insert("parameters".into(), f.parameters.clone());
                json!({"type": "function", "function": function})
            })
            .collect()
    }

    /// Calls one answer may make: one for a named function or without
    /// `parallel_tool_calls`, else up to `MAX_CALLS`, and never more than
    /// `max_tool_calls`.
    pub fn max_calls(&self) -> u32 {
        let one = matches!(self.choice, Choice::Named(_)) || !self.parallel;
        let max = if one { 1 } else { MAX_CALLS };
        self.max_tool_calls.map_or(max, |m| m.min(max))
    }

    /// How a native syntax runs this tool set: a required or named call is opened by
    /// the engine; at most `max_calls` calls.
    pub fn native_plan(&self, syntax: ToolSyntax) -> ToolPlan {
        ToolPlan {
            syntax,
            force: self.choice != Choice::Auto,
            max_calls: self.max_calls(),
        }
    }

    /// The functions the answer may call (all, or the named one).
    fn callable(&self) -> impl Iterator<Item = &Function> {
        self.functions.iter().filter(|f| match &self.choice {
            Choice::Named(n) => &f.name == n,
            _ => true,
        })
    }

    /// One call in a native syntax (what follows its opener): the functions it may
    /// call and how many calls one list may hold.
    pub fn native_call(&self, syntax: ToolSyntax) -> NativeCall {
        NativeCall {
            syntax,
            functions: std::sync::Arc::new(self.functions_and_parameters()),
            max_calls: self.native_plan(syntax).max_calls,
        }
    }

    /// (name, parameters schema) of each function the answer may call.
    fn functions_and_parameters(&self) -> Vec<(String, Value)> {
        self.callable()
            .map(|f| (f.name.clone(), f.parameters.clone()))
            .collect()
    }

    /// The JSON Schema the answer is constrained to.
    pub fn answer_schema(&self) -> Value {
        let calls: Vec<Value> = self
            .callable()
            .map(|f| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                    "required": ["name", "arguments"],
                    "additionalProperties": false
                })
            })
            .collect();
        let max = self.max_calls();
        let call_branch = json!({
            "type": "object",
            "properties": {"tool_calls": {
                "type": "array", "items": {"anyOf": calls}, "minItems": 1, "maxItems": max
            }},
            "required": ["tool_calls"],
            "additionalProperties": false
        });
        match self.choice {
            Choice::Auto => json!({"anyOf": [call_branch, {
                "type": "object",
                "properties": {"content": {"type": "string"}},
                "required": ["content"],
                "additionalProperties": false
            }]}),
            _ => call_branch,
        }
    }
}

/// Parse an answer, in the generic format (`api::envelope`: whole, or cut by
/// `max_tokens`, when the calls completed before the cut are kept) or the model family's
/// own syntax (argument values written as text read by `functions`' schemas; a call of
/// one of them written without the family's opener accepted, `slips`). None when the text is not in the generic format at all: the caller returns
/// it as content.
pub fn parse_answer(
    text: &str,
    syntax: Option<ToolSyntax>,
    functions: &[(String, Value)],
) -> Option<Answer> {
    let Some(s) = syntax else {
        return super::envelope::parse(text);
    };
    let parsed = tool_syntax::parse(s, text, &Declared(functions));
    if !parsed.calls.is_empty() {
        return Some(Answer::Calls(parsed.calls, parsed.content));
    }
    // No call in the family's syntax: a call written without its opener (`slips`).
    Some(
        match super::slips::slipped_call(&parsed.content, functions) {
            Some((before, call)) => Answer::Calls(vec![call], before),
            None => Answer::Content(parsed.content),
        },
    )
}

/// A tool-call id: `call_`, the response's random part (24 hex digits from the system
/// CSPRNG), the choice and the call's index.
pub fn call_id(random: &str, choice: usize, i: usize) -> String {
    format!("call_{random}_{choice}_{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(v: Value) -> Vec<RawTool> {
        serde_json::from_value(v).unwrap()
    }

    fn weather() -> Vec<RawTool> {
        tools(
            json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]),
        )
    }

    /// `parallel_tool_calls: false`, a named function and Responses' `max_tool_calls`
    /// each bound the calls, in the generic envelope and in every native family.
    #[test]
    fn calls_are_bounded_by_parallel_named_and_max_tool_calls() {
        let auto = validate(Some(weather()), None, None).unwrap().unwrap();
        assert_eq!(auto.max_calls(), MAX_CALLS);
        let single = validate(Some(weather()), None, Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(single.max_calls(), 1);
        assert_eq!(
            single.answer_schema()["anyOf"][0]["properties"]["tool_calls"]["maxItems"],
            1
        );
        let mut capped = validate(Some(weather()), None, None).unwrap().unwrap();
        capped.max_tool_calls = Some(3);
        assert_eq!(capped.max_calls(), 3);
        assert_eq!(
            capped.answer_schema()["anyOf"][0]["properties"]["tool_calls"]["maxItems"],
            3
        );
        for f in crate::engine::family::FAMILIES {
            let syntax = ToolSyntax(f);
            assert_eq!(single.native_plan(syntax).max_calls, 1, "{}", f.name);
            assert_eq!(single.native_call(syntax).max_calls, 1, "{}", f.name);
            assert_eq!(capped.native_plan(syntax).max_calls, 3, "{}", f.name);
        }
    }

    #[test]
    fn choices_and_errors() {
        assert!(validate(None, None, None).unwrap().is_none());
        let none = validate(
            Some(weather()),
            Some(RawToolChoice::Mode("none".into())),
            None,
        );
        assert!(none.unwrap().is_none());
        let t = validate(Some(weather()), None, None).unwrap().unwrap();
        assert_eq!(t.choice, Choice::Auto);
        let e = validate(None, Some(RawToolChoice::Mode("auto".into())), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let named = RawToolChoice::Named(NamedChoice {
            kind: "function".into(),
            function: NamedFunction {
                name: "nope".into(),
            },
        });
        let e = validate(Some(weather()), Some(named), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let bad = tools(json!([{"type": "function", "function": {"name": "a b"}}]));
        let e = validate(Some(bad), None, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        let bad = tools(json!([{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "not": {}}}}]));
        let e = validate(Some(bad), None, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.parameters.not"));
    }

    #[test]
    fn answer_schema_follows_the_choice() {
        let t = validate(
            Some(weather()),
            Some(RawToolChoice::Mode("required".into())),
            Some(false),
        )
        .unwrap()
        .unwrap();
        let s = t.answer_schema();
        assert_eq!(s["properties"]["tool_calls"]["maxItems"], 1);
        assert!(s.get("anyOf").is_none());
        schema::check(&s, "x").unwrap();
        let auto = validate(Some(weather()), None, None).unwrap().unwrap();
        assert_eq!(auto.answer_schema()["anyOf"].as_array().unwrap().len(), 2);
        assert!(auto.instructions().contains("get_weather"));
    }

    #[test]
    fn answers_parse() {
        assert_eq!(
            parse_answer(
                r#"{"tool_calls":[{"name":"f","arguments":{"a":1}}]}"#,
                None,
                &[]
            ),
            Some(Answer::Calls(
                vec![("f".into(), r#"{"a":1}"#.into())],
                String::new()
            ))
        );
        assert_eq!(
            parse_answer(r#" {"content":"hi"} "#, None, &[]),
            Some(Answer::Content("hi".into()))
        );
        // Cut inside its only call: no call, and no envelope as text either.
        assert_eq!(
            parse_answer(r#"{"tool_calls":[{"name":"f""#, None, &[]),
            Some(Answer::Content(String::new()))
        );
        // A native syntax: text before the call is kept beside it.
        let hermes = "Checking.<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>";
        assert_eq!(
            parse_answer(hermes, Some(ToolSyntax::HERMES), &[]),
            Some(Answer::Calls(
                vec![("f".into(), "{}".into())],
                "Checking.".into()
            ))
        );
        assert_eq!(
            parse_answer("Just text.", Some(ToolSyntax::HERMES), &[]),
            Some(Answer::Content("Just text.".into()))
        );
    }
}
