//! Qwen3-Coder, Qwen3.5, Nemotron 3 Nano, Step 3.5: a `<tool_call>` block holding
//! `<function=NAME>` and one `<parameter=KEY>` element per argument, its value as text.

use super::{Body, Family, Sep};

/// `NAME>` then `<parameter=KEY>VALUE</parameter>` elements, `</function>` (Seed-OSS
/// writes the same inside its own block).
pub const BODY: Body = Body::Params {
    sep: Sep {
        find: ">",
        lark: "\">\" \"\\n\"?",
    },
    param: "<parameter=",
    key_close: Sep {
        find: ">",
        lark: "\">\"",
    },
    value_close: "</parameter>",
    close_names_key: false,
    end: "</function>",
};

pub static FAMILY: Family = Family {
    name: "qwen3-coder",
    models: "Qwen3-Coder, Qwen3.5, Nemotron 3 Nano, Step 3.5",
    renders: &["<tool_call>\n<function=get_weather>\n<parameter=city>"],
    source: &[],
    opener: "<tool_call>\n<function=",
    triggers: &["<function="],
    json_at_start: false,
    call_open: &["<function="],
    noise: &["<tool_call>", "</tool_call>"],
    body: BODY,
    closer: "\n</tool_call>",
    repeats: true,
    reasoning: "<think>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>",
            &[
                Vector { name: "plain", text: "Done.", content: "Done.", calls: &[] },
                Vector {
                    name: "two calls, typed values",
                    text: "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=add>\n<parameter=a>\n12\n</parameter>\n<parameter=b>\n-3\n</parameter>\n</function>\n</tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"New York"}"#), ("add", r#"{"a":12,"b":-3}"#)],
                },
                Vector {
                    name: "a string parameter that looks like a number stays a string",
                    text: "<tool_call>\n<function=get_weather>\n<parameter=city>\n75001\n</parameter>\n</function>\n</tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"75001"}"#)],
                },
                Vector {
                    name: "text then a call",
                    text: "I will look it up.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
                    content: "I will look it up.",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "cut in a value",
                    text: "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar",
                    content: "",
                    calls: &[],
                },
                Vector {
                    name: "a multi-line value",
                    text: "<tool_call>\n<function=get_weather>\n<parameter=city>\nline one\nline two\n</parameter>\n</function>\n</tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"line one\nline two"}"#)],
                },
            ],
        );
    }
}
