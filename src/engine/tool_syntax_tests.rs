//! Native tool-call syntaxes: detection from the template, parsing realistic answers
//! (partial openers, several calls, text before a call, malformed JSON), call schemas, and
//! the trigger/opener/closer state machine.

use super::*;

fn calls(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect()
}

/// The families' own parser over untyped arguments (these tests declare no tools).
fn parse(syntax: ToolSyntax, text: &str) -> Parsed {
    super::parse(syntax, text, &crate::engine::family::Untyped)
}

#[test]
fn auto_finds_the_family_in_how_the_template_writes_a_call() {
    let d = ToolSyntax::detect;
    let hermes = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}";
    assert_eq!(d("", hermes), Some(ToolSyntax::HERMES));
    // Qwen3-Coder shares Hermes's tag but not its body.
    let coder = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis";
    assert_eq!(d("", coder).map(ToolSyntax::name), Some("qwen3-coder"));
    // A template that renders no call of its own: its source decides.
    assert_eq!(d("[TOOL_CALLS] [", ""), Some(ToolSyntax::MISTRAL));
    assert_eq!(d("<|python_tag|>", ""), Some(ToolSyntax::LLAMA3));
    assert_eq!(d("<|im_start|>", "<|im_start|>"), None);
    // From a template's text (the 71 real templates: tests/template_parity.rs).
    let a = ToolFormatSetting::Auto;
    assert_eq!(a.resolve(Some("{{ messages[0].content }}")), None);
    assert_eq!(a.resolve(None), None);
    assert_eq!(
        ToolFormatSetting::Generic.resolve(Some("<|python_tag|>")),
        None
    );
    let named = ToolFormatSetting::try_from("mistral".to_string()).unwrap();
    assert_eq!(named.resolve(None), Some(ToolSyntax::MISTRAL));
    let err = ToolFormatSetting::try_from("nope".to_string()).unwrap_err();
    assert!(err.contains("hermes") && err.contains("harmony"), "{err}");
}

#[test]
fn hermes_answers_parse() {
    let h = ToolSyntax::HERMES;
    let two = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    assert_eq!(
        parse(h, two),
        Parsed {
            content: "Let me check.".into(),
            calls: calls(&[("get_weather", r#"{"city":"Paris"}"#), ("get_time", "{}")]),
        }
    );
    // No closer at the end (the model stopped after the JSON): still a call.
    let open = "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1}}";
    assert_eq!(parse(h, open).calls, calls(&[("f", r#"{"a":1}"#)]));
    // Closed but malformed, or not a call object: all of it is text (a cut call is
    // dropped instead: `cut_calls_are_dropped_not_returned_as_text`).
    for bad in [
        "<tool_call>not json</tool_call>",
        "<tool_call>{\"arguments\":{}}</tool_call>",
        "<tool_call>{\"name\":\"f\",\"arguments\":[1]}</tool_call>",
    ] {
        assert_eq!(
            parse(h, bad),
            Parsed {
                content: bad.into(),
                calls: vec![]
            },
            "{bad}"
        );
    }
    assert_eq!(
        parse(h, " Hello "),
        Parsed {
            content: "Hello".into(),
            calls: vec![]
        }
    );
    // A partial opener is text.
    assert_eq!(parse(h, "a <tool_ca").content, "a <tool_ca");
    // Arguments written as a JSON string are accepted.
    let s = "<tool_call>{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":2}\"}</tool_call>";
    assert_eq!(parse(h, s).calls, calls(&[("f", r#"{"a":2}"#)]));
}

#[test]
fn llama3_answers_parse() {
    let l = ToolSyntax::LLAMA3;
    let c = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
    assert_eq!(
        parse(l, c).calls,
        calls(&[("get_weather", r#"{"city":"Paris"}"#)])
    );
    let tagged = format!("<|python_tag|>{c}");
    assert_eq!(parse(l, &tagged).calls.len(), 1);
    assert_eq!(parse(l, "It is sunny.").calls, vec![]);
    // A JSON object at the start is a call the engine constrained: cut, it is dropped
    // (never returned as text), as after the tag.
    assert_eq!(parse(l, "{\"name\": \"f\", \"param").content, "");
    // Text before the JSON: an answer, not a call.
    assert_eq!(parse(l, &format!("Sure: {c}")).calls, vec![]);
}

#[test]
fn mistral_answers_parse() {
    let m = ToolSyntax::MISTRAL;
    let c = "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]";
    assert_eq!(
        parse(m, c).calls,
        calls(&[("a", r#"{"x":1}"#), ("b", "{}")])
    );
    assert_eq!(parse(m, "[TOOL_CALLS][]").calls, vec![]);
    assert_eq!(parse(m, "[TOOL_CALLS][{\"name\"").calls, vec![]);
    assert_eq!(parse(m, "plain").content, "plain");
}

#[test]
fn call_schemas_name_declared_functions() {
    let f = vec![("f".to_string(), serde_json::json!({"type": "object"}))];
    let none = |_: &str| None;
    let CallGrammar::Schema(one) = ToolSyntax::LLAMA3.grammar(&f, 1, &none) else {
        panic!("llama3 calls are JSON objects")
    };
    assert_eq!(one["anyOf"][0]["properties"]["name"]["const"], "f");
    assert!(one["anyOf"][0]["properties"]["parameters"].is_object());
    let CallGrammar::Schema(list) = ToolSyntax::MISTRAL.grammar(&f, 3, &none) else {
        panic!("mistral calls are a JSON list")
    };
    assert_eq!(list["maxItems"], 3);
    assert!(list["items"]["anyOf"][0]["properties"]["arguments"].is_object());
}

fn plan(syntax: ToolSyntax, force: bool, max_calls: u32) -> ToolPlan {
    ToolPlan {
        syntax,
        force,
        max_calls,
    }
}

#[test]
fn auto_waits_for_the_trigger_split_anywhere() {
    let mut run: ToolRun<char> =
        ToolRun::new(plan(ToolSyntax::HERMES, false, 2), vec![], vec!['x']);
    assert_eq!(run.forced(), None);
    assert!(!run.in_call());
    for piece in ["Let me look that up. <tool", "_ca"] {
        assert_eq!(run.push(piece), Step::Nothing);
    }
    assert_eq!(
        run.push("ll>\n{\"na"),
        Step::CallStarts {
            prefix: "{\"na".into()
        }
    );
    assert!(run.in_call());
    run.call_complete();
    assert_eq!(run.forced(), Some('x'), "the closer");
    // Parallel calls: free text again, a second trigger, then the limit ends it.
    assert!(!run.in_call() && !run.done());
    assert_eq!(
        run.push("<tool_call>"),
        Step::CallStarts {
            prefix: String::new()
        }
    );
    run.call_complete();
    assert_eq!(run.forced(), Some('x'));
    assert!(run.done());
}

#[test]
fn required_forces_the_opener_then_the_call() {
    let opener: Vec<char> = ToolSyntax::HERMES.opener().chars().collect();
    let mut run = ToolRun::new(plan(ToolSyntax::HERMES, true, 1), opener, vec![]);
    let written: String = std::iter::from_fn(|| run.forced()).collect();
    assert_eq!(written, "<tool_call>\n");
    assert!(run.take_call_start());
    assert!(!run.take_call_start(), "once");
    assert!(run.in_call());
    run.call_complete();
    assert!(run.done());
    // Llama 3 has no opener: the call starts at once.
    let mut run: ToolRun<char> = ToolRun::new(plan(ToolSyntax::LLAMA3, true, 1), vec![], vec![]);
    assert!(run.take_call_start() && run.in_call());
}

#[test]
fn llama3_opens_with_json_only_at_the_start() {
    let mut run: ToolRun<char> = ToolRun::new(plan(ToolSyntax::LLAMA3, false, 1), vec![], vec![]);
    assert_eq!(
        run.push("  {\"name"),
        Step::CallStarts {
            prefix: "{\"name".into()
        }
    );
    let mut run: ToolRun<char> = ToolRun::new(plan(ToolSyntax::LLAMA3, false, 1), vec![], vec![]);
    assert_eq!(run.push("Sure, "), Step::Nothing);
    assert_eq!(run.push("{\"name"), Step::Nothing);
    assert_eq!(
        run.push("<|python_tag|>{"),
        Step::CallStarts { prefix: "{".into() }
    );
}

/// Issue 29: a call cut by `max_tokens` never comes back as text: the calls before it
/// (and text before them) do, the cut one is dropped.
#[test]
fn cut_calls_are_dropped_not_returned_as_text() {
    let h = ToolSyntax::HERMES;
    let p = parse(
        h,
        "Checking.<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"b\",\"argu",
    );
    assert_eq!(p.calls, calls(&[("a", "{}")]));
    assert_eq!(p.content, "Checking.");
    let p = parse(h, "<tool_call>{\"name\":\"b\",\"argu");
    assert_eq!((p.calls, p.content), (vec![], String::new()));

    let l = ToolSyntax::LLAMA3;
    let p = parse(l, "<|python_tag|>{\"name\": \"f\", \"param");
    assert_eq!((p.calls, p.content), (vec![], String::new()));

    let m = ToolSyntax::MISTRAL;
    let p = parse(
        m,
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"argum",
    );
    assert_eq!(p.calls, calls(&[("a", r#"{"x":1}"#)]));
    assert_eq!(p.content, "");
    let p = parse(m, "[TOOL_CALLS][{\"name\"");
    assert_eq!((p.calls, p.content), (vec![], String::new()));
}
