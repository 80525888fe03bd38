//! Kimi K2: `<|tool_call_begin|>functions.NAME:INDEX<|tool_call_argument_begin|>` and the
//! arguments as a JSON object, `<|tool_call_end|>`, inside a calls section.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "kimi-k2",
    models: "Kimi K2 (Instruct, Thinking)",
    renders: &["<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"],
    source: &[],
    opener: "<|tool_calls_section_begin|><|tool_call_begin|>functions.",
    triggers: &["<|tool_call_begin|>"],
    json_at_start: false,
    call_open: &["<|tool_call_begin|>functions.", "<|tool_call_begin|>"],
    noise: &["<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: "<|tool_call_argument_begin|>",
            lark: "\":\" /[0-9]{1,2}/ {{<|tool_call_argument_begin|>}}",
        },
    },
    closer: "<|tool_call_end|>",
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
            r#"get_weather:0<|tool_call_argument_begin|>{"city":"Paris"}"#,
            &[
                Vector { name: "plain", text: "Right.", content: "Right.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>functions.add:1<|tool_call_argument_begin|>{\"a\": 1}<|tool_call_end|><|tool_calls_section_end|>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the closer the engine writes",
                    text: "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "cut in the index",
                    text: "One moment.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:",
                    content: "One moment.",
                    calls: &[],
                },
            ],
        );
    }
}
