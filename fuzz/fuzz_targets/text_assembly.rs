//! Token bytes → text: the UTF-8 assembler and the stop matcher, with oracles.
//! Input: [n_stops][stop lengths...] stop bytes, then token pieces split at 0xFF bytes.
//! - Without stops, the text emitted equals the lossy UTF-8 of all bytes (nothing lost,
//!   nothing duplicated, however the bytes are split into tokens).
//! - With stops, emitted text never contains a stop string, and is a prefix of the
//!   un-stopped text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::engine::text::{StopMatcher, Utf8Assembler};

fuzz_target!(|data: &[u8]| {
    let Some((&n, mut rest)) = data.split_first() else {
        return;
    };
    let mut stops = Vec::new();
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
});
