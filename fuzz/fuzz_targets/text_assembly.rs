//! Token bytes → text: the UTF-8 assembler, the stop matcher and the whole output path
//! with the reasoning split (`engine::output`), with oracles.
//! Input: [flags + n_stops][stop lengths...] stop bytes, then token pieces split at 0xFF
//! bytes; flag 0x80: the prompt opened a `<think>` block.
//! - Without stops, the text emitted equals the lossy UTF-8 of all bytes (nothing lost,
//!   nothing duplicated, however the bytes are split into tokens).
//! - With stops, emitted text never contains a stop string, and is a prefix of the
//!   un-stopped text.
//! - The output path's thinking and answer equal what plain string operations make of
//!   that emitted text (markers removed, leading whitespace of each part dropped), however
//!   the markers are split across tokens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::engine::output::TextOut;
use llama_gguf_inference::engine::reasoning::{Plan, Run, THINK};
use llama_gguf_inference::engine::text::{StopMatcher, Utf8Assembler};

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// What the split must make of `text`: (thinking, answer).
fn oracle(text: &str, opened: bool) -> (String, String) {
    let inside = if opened {
        text
    } else {
        match text.trim_start().strip_prefix(OPEN) {
            Some(rest) => rest,
            None => return (String::new(), text.to_string()),
        }
    };
    match inside.find(CLOSE) {
        Some(at) => (
            inside[..at].trim_start().to_string(),
            inside[at + CLOSE.len()..].trim_start().to_string(),
        ),
        None => (inside.trim_start().to_string(), String::new()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, mut rest)) = data.split_first() else {
        return;
    };
    let mut stops = Vec::new();
    let opened = n & 0x80 != 0;
    for _ in 0..(n % 4) {
        let Some((&len, r)) = rest.split_first() else {
            return;
        };
        let len = (len as usize % 8).min(r.len());
        let (stop, r) = r.split_at(len);
        rest = r;
        if let Ok(s) = std::str::from_utf8(stop) {
            if !s.is_empty() {
                stops.push(s.to_string());
            }
        }
    }
    let pieces: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
    let all: Vec<u8> = pieces.concat();

    let mut utf8 = Utf8Assembler::default();
    let mut plain = String::new();
    for p in &pieces {
        plain.push_str(&utf8.push(p));
    }
    plain.push_str(&utf8.finish());
    assert_eq!(
        plain,
        String::from_utf8_lossy(&all),
        "assembler lost or changed text"
    );

    let mut utf8 = Utf8Assembler::default();
    let mut matcher = StopMatcher::new(stops.clone());
    let mut out = String::new();
    let mut stopped = false;
    for p in &pieces {
        let step = matcher.push(&utf8.push(p));
        out.push_str(&step.emit);
        if step.stopped {
            stopped = true;
            break;
        }
    }
    if !stopped {
        let step = matcher.push(&utf8.finish());
        out.push_str(&step.emit);
        if !step.stopped {
            out.push_str(&matcher.finish());
        }
    }
    for s in &stops {
        assert!(
            !out.contains(s.as_str()),
            "stop string {s:?} emitted in {out:?}"
        );
    }
    assert!(
        plain.starts_with(&out),
        "emitted text is not a prefix of the text"
    );

    let plan = Plan {
        format: THINK,
        budget: None,
    };
    let mut path = TextOut::<u32>::new(stops.clone(), Some(Run::new(plan, opened, Vec::new())));
    let (mut thinking, mut answer) = (String::new(), String::new());
    for p in &pieces {
        let got = path.push(p);
        thinking.push_str(&got.reasoning);
        answer.push_str(&got.content);
        if got.stopped {
            break;
        }
    }
    let got = path.finish();
    thinking.push_str(&got.reasoning);
    answer.push_str(&got.content);
    assert_eq!(
        (thinking, answer),
        oracle(&out, opened),
        "split of {out:?} (opened: {opened})"
    );
});
