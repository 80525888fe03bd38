//! Turning token bytes into text safely: UTF-8 reassembly across token boundaries and
//! stop-sequence matching that never emits any part of a stop string.
//!
//! Pure code with no llama.cpp dependency, so it is unit-tested and fuzzable on its own.

/// Collects token bytes and releases only complete UTF-8. A character split across two
/// tokens is held back until its last byte arrives; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // valid_up_to() bytes are valid UTF-8 by the contract of Utf8Error.
                    let head = self.pending.get(..valid).unwrap_or_default();
                    out.push_str(&String::from_utf8_lossy(head));
                    match e.error_len() {
                        // Incomplete sequence at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// End of generation: whatever is left is not valid UTF-8.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Finds the first occurrence of any stop string in a stream of text pieces.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released because it may be the start of a stop string.
    held: String,
}

/// What one piece of text produced.
#[derive(Debug, PartialEq, Eq)]
pub struct StopStep {
    /// Text safe to emit now.
    pub emit: String,
    /// A stop string was found; `emit` ends right before it, generation must end.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, piece: &str) -> StopStep {
        self.held.push_str(piece);
        if self.stops.is_empty() {
            return StopStep {
                emit: std::mem::take(&mut self.held),
                stopped: false,
            };
        }
        // Earliest match of any stop string wins.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopStep {
                emit,
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopStep {
            emit,
            stopped: false,
        }
    }

    /// Generation ended without a stop string: release what was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, at a char boundary.
pub(crate) fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start)
                && text
                    .as_bytes()
                    .get(start..)
                    .is_some_and(|tail| stop.as_bytes().starts_with(tail))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_held_back() {
        let mut a = Utf8Assembler::default();
        let snow = "☃".as_bytes(); // 3 bytes
        assert_eq!(a.push(&snow[..1]), "");
        assert_eq!(a.push(&snow[1..2]), "");
        assert_eq!(a.push(&[snow[2], b'x']), "☃x");
        assert_eq!(a.push(&[0xF0, 0x9F]), "");
        assert_eq!(a.push(&[0x98, 0x80]), "😀");
        assert_eq!(a.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(a.push(&[0xE2, 0x98]), "");
        assert_eq!(a.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_across_pieces_is_never_emitted() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        let mut out = String::new();
        let mut stopped = false;
        for piece in ["Hello E", "N", "D and more"] {
            let s = m.push(piece);
            out.push_str(&s.emit);
            if s.stopped {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(out, "Hello ");
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("x E").emit, "x ");
        assert_eq!(m.push("N").emit, "");
        let s = m.push("x");
        assert_eq!(
            s,
            StopStep {
                emit: "ENx".into(),
                stopped: false
            }
        );
        assert_eq!(m.push("EN").emit, "");
        assert_eq!(m.finish(), "EN");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["world".into(), "lo".into()]);
        let s = m.push("hello world");
        assert_eq!(
            s,
            StopStep {
                emit: "hel".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn multibyte_stop_strings_respect_char_boundaries() {
        let mut m = StopMatcher::new(vec!["☃☃".into()]);
        assert_eq!(m.push("a☃").emit, "a");
        let s = m.push("☃b");
        assert_eq!(
            s,
            StopStep {
                emit: "".into(),
                stopped: true
            }
        );
    }
}
