//! The one rule for showing untrusted text (a client's path, model name, field name or
//! schema key; an operator's config value; a library's message quoting either) in an
//! error, a log line or a metric label.
//!
//! SECURITY: what is shown is at most `max` characters on one line, with every control
//! character (newlines, escapes: no log or terminal injection), every bidi override and
//! every other invisible format character (text that would display differently from
//! what it says, "Trojan Source") replaced by `?`. Everything else printable stays, so a
//! non-ASCII model name is still recognisable.

/// `text` made safe to show: at most `max` characters, unsafe ones replaced by `?`.
pub fn shown(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if is_unsafe(c) { '?' } else { c })
        .collect()
}

/// Control, line-separator, bidi and other format (Unicode Cf) characters.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                       // soft hyphen
            | '\u{061C}'                     // Arabic letter mark (bidi)
            | '\u{180E}'                     // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'        // zero-width, LRM/RLM
            | '\u{2028}'..='\u{2029}'        // line and paragraph separators
            | '\u{202A}'..='\u{202E}'        // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}'        // word joiner, bidi isolates, deprecated
            | '\u{FEFF}'                     // zero-width no-break space (BOM)
            | '\u{FFF9}'..='\u{FFFB}'        // interlinear annotation
            | '\u{E0000}'..='\u{E007F}'      // tag characters
        )
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn controls_bidi_and_format_characters_are_replaced() {
        assert_eq!(shown("a\nb\u{1b}[31m", 100), "a?b?[31m");
        // "Trojan Source": a right-to-left override and an isolate.
        assert_eq!(shown("ok\u{202E}gnp.exe\u{2066}", 100), "ok?gnp.exe?");
        assert_eq!(shown("zero\u{200B}width\u{FEFF}", 100), "zero?width?");
        assert_eq!(shown("tag\u{E0041}", 100), "tag?");
        assert_eq!(shown("line\u{2028}sep", 100), "line?sep");
    }

    #[test]
    fn printable_text_stays_and_length_is_bounded() {
        assert_eq!(shown("modèle-7B/ü", 100), "modèle-7B/ü");
        assert_eq!(shown(&"é".repeat(500), 64).chars().count(), 64);
        assert_eq!(shown("", 10), "");
    }
}
