//! Every model family's tool-call syntax (`engine::family`): the parser of finished
//! answers and the trigger watcher of free text, on any text, with oracles; and the
//! generic format's parser (`api::envelope`), whole or cut: never panics, every call's
//! arguments are JSON, text that does not start as JSON is not taken for an answer.
//! Input: [family byte] then UTF-8 (lossy) text pieces split at 0xFF bytes; the byte
//! picks a family of the registry, or the generic envelope one past the last.
//! - `parse` never panics; every call it returns has arguments that are a JSON object;
//!   an answer with none of the family's call openers has no calls; at most MAX_CALLS.
//! - `progress` (what a stream sends of calls being written) never panics, and across
//!   the text's piece boundaries what it said stays true: the calls it named keep their
//!   names, their arguments only grow (each is a prefix of the next); a call it calls
//!   whole has arguments that are a JSON object.
//! - `ToolRun` never panics however the text is split; a call it starts carries a prefix
//!   that is a suffix of the text pushed (nothing invented), and it never starts a call
//!   for text that holds no trigger of the family.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::api::envelope;
use llama_gguf_inference::api::tools::Answer;
use llama_gguf_inference::engine::family::progress::{progress, CallProgress};
use llama_gguf_inference::engine::family::{Untyped, FAMILIES, MAX_CALLS};
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
    let pick = which as usize % (FAMILIES.len() + 1);
    let syntax = FAMILIES.get(pick).map(|f| ToolSyntax(f));
    let mut said: Vec<CallProgress> = Vec::new();
    let mut prefix = String::new();
    for p in &pieces {
        prefix.push_str(p);
        let now = progress(syntax, &prefix, &Untyped);
        assert!(now.len() <= MAX_CALLS as usize);
        for (old, new) in said.iter().zip(&now) {
            assert_eq!(old.name, new.name, "a streamed name changed in {prefix:?}");
            assert!(new.args.starts_with(&old.args), "streamed arguments changed: {old:?} {new:?}");
        }
        assert!(now.len() >= said.len(), "a streamed call vanished in {prefix:?}");
        for c in now.iter().filter(|c| c.done) {
            let v: serde_json::Value = serde_json::from_str(&c.args).expect("whole arguments are JSON");
            assert!(v.is_object(), "{c:?}");
        }
        said = now;
    }
    let syntax = match FAMILIES.get(pick) {
        Some(f) => ToolSyntax(f),
        None => {
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

    let parsed = parse(syntax, &text, &Untyped);
    assert!(parsed.calls.len() <= MAX_CALLS as usize, "{} calls", parsed.calls.len());
    for (_, args) in &parsed.calls {
        let v: serde_json::Value = serde_json::from_str(args).expect("arguments are JSON");
        assert!(v.is_object(), "arguments are an object: {args}");
    }
    let f = syntax.family();
    let opener = f.call_open.iter().any(|o| text.contains(o))
        || (f.json_at_start && text.trim_start().starts_with('{'));
    if !opener {
        assert!(parsed.calls.is_empty(), "a call without an opener in {text:?}");
    }
    let triggered = f.triggers.iter().any(|t| text.contains(t))
        || (f.json_at_start && text.trim_start().starts_with('{'));

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
            assert!(triggered, "a call started without a trigger in {text:?}");
            run.call_complete();
            while run.forced().is_some() {}
        }
    }
});
