//! Native tool-call syntaxes (`engine::tool_syntax`): the parser of finished answers and
//! the trigger watcher of free text, on any text, with oracles; and the generic format's
//! parser (`api::envelope`), whole or cut: never panics, every call's arguments are JSON,
//! text that does not start as JSON is not taken for an answer.
//! Input: [syntax byte] then UTF-8 (lossy) text pieces split at 0xFF bytes.
//! - `parse` never panics; every call it returns has arguments that are a JSON object;
//!   an answer with no opener of the syntax has no calls.
//! - `ToolRun` never panics however the text is split; a call it starts carries a prefix
//!   that is a suffix of the text pushed (nothing invented), and it never starts a call
//!   for text in which `parse` finds no opener at all.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::api::envelope;
use llama_gguf_inference::api::tools::Answer;
use llama_gguf_inference::engine::tool_syntax::{parse, Step, ToolPlan, ToolRun, ToolSyntax};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let pieces: Vec<String> = rest
        .split(|&b| b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let text: String = pieces.concat();
    let syntax = match which % 4 {
        0 => ToolSyntax::Hermes,
        1 => ToolSyntax::Llama3,
        2 => ToolSyntax::Mistral,
        _ => {
            match envelope::parse(&text) {
                Some(Answer::Calls(calls, before)) => {
                    assert!(before.is_empty());
                    for (_, args) in &calls {
                        serde_json::from_str::<serde_json::Value>(args).expect("arguments are JSON");
                    }
                }
                Some(Answer::Content(_)) => {}
                None => return,
            }
            assert!(text.trim_start().starts_with('{'), "not JSON, yet an answer: {text:?}");
            return;
        }
    };

    let parsed = parse(syntax, &text);
    for (_, args) in &parsed.calls {
        let v: serde_json::Value = serde_json::from_str(args).expect("arguments are JSON");
        assert!(v.is_object(), "arguments are an object: {args}");
    }
    let opener = match syntax {
        ToolSyntax::Hermes => text.contains("<tool_call>"),
        ToolSyntax::Llama3 => text.trim_start().starts_with('{') || text.contains("<|python_tag|>"),
        ToolSyntax::Mistral => text.contains("[TOOL_CALLS]"),
    };
    if !opener {
        assert!(parsed.calls.is_empty(), "a call without an opener in {text:?}");
    }

    let plan = ToolPlan {
        syntax,
        force: false,
        max_calls: 2,
    };
    let mut run: ToolRun<u8> = ToolRun::new(plan, Vec::new(), vec![b'x']);
    let mut pushed = String::new();
    for p in &pieces {
        pushed.push_str(p);
        if let Step::CallStarts { prefix } = run.push(p) {
            assert!(pushed.ends_with(&prefix), "prefix {prefix:?} not from {pushed:?}");
            assert!(opener, "a call started without an opener in {text:?}");
            run.call_complete();
            while run.forced().is_some() {}
        }
    }
});
