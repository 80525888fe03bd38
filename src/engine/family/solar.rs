//! Upstage Solar Open: `<|tool_calls|>`, then per call `<|tool_call:begin|>ID
//! <|tool_call:name|>NAME<|tool_call:args|>` and the arguments as a JSON object,
//! `<|tool_call:end|>`, and `<|calls|>` after the last.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "solar",
    models: "Solar Open",
    renders: &["<|tool_call:name|>get_weather<|tool_call:args|>"],
    source: &[],
    opener: "<|tool_calls|><|tool_call:begin|>",
    triggers: &["<|tool_call:begin|>"],
    json_at_start: false,
    call_open: &["<|tool_call:begin|>"],
    noise: &["<|tool_calls|>", "<|calls|>"],
    body: Body::Named {
        pre: Some(Sep {
            find: "<|tool_call:name|>",
            lark: "/[A-Za-z0-9_]{1,24}/ {{<|tool_call:name|>}}",
        }),
        sep: Sep {
            find: "<|tool_call:args|>",
            lark: "{{<|tool_call:args|>}}",
        },
    },
    closer: "<|tool_call:end|>",
    repeats: true,
    reasoning: "",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"call_1<|tool_call:name|>get_weather<|tool_call:args|>{"city":"Paris"}"#,
            &[
                Vector { name: "plain", text: "Hello.", content: "Hello.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<|tool_calls|><|tool_call:begin|>call_1<|tool_call:name|>get_weather<|tool_call:args|>{\"city\": \"Paris\"}<|tool_call:end|><|tool_call:begin|>call_2<|tool_call:name|>add<|tool_call:args|>{\"a\": 1}<|tool_call:end|><|calls|>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the id",
                    text: "Checking.<|tool_calls|><|tool_call:begin|>cal",
                    content: "Checking.",
                    calls: &[],
                },
            ],
        );
    }
}
