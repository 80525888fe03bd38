//! Google Gemma 4: `<|tool_call>call:NAME{key:value,…}<tool_call|>`, strings between
//! `<|"|>` marks, keys in sorted order.

use super::{Body, Family};

pub static FAMILY: Family = Family {
    name: "gemma4",
    models: "Gemma 4",
    renders: &["<|tool_call>call:get_weather{"],
    source: &[],
    opener: "<|tool_call>call:",
    triggers: &["<|tool_call>call:"],
    json_at_start: false,
    call_open: &["<|tool_call>call:"],
    noise: &[],
    body: Body::Braced { quote: "<|\"|>" },
    closer: "<tool_call|>",
    repeats: true,
    reasoning: "<|channel>thought",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "get_weather{city:<|\"|>Paris<|\"|>}",
            &[
                Vector { name: "plain", text: "Hi!", content: "Hi!", calls: &[] },
                Vector {
                    name: "two calls, sorted keys, a number",
                    text: "<|tool_call>call:add{a:1,b:-2.5}<tool_call|><|tool_call>call:get_weather{city:<|\"|>São Paulo, \"SP\"<|\"|>}<tool_call|>",
                    content: "",
                    calls: &[("add", r#"{"a":1,"b":-2.5}"#), ("get_weather", r#"{"city":"São Paulo, \"SP\""}"#)],
                },
                Vector {
                    name: "text then a call cut in a string",
                    text: "Checking.<|tool_call>call:get_weather{city:<|\"|>Par",
                    content: "Checking.",
                    calls: &[],
                },
                Vector {
                    name: "nested values",
                    text: "<|tool_call>call:add{a:1,b:{x:[1,2],y:<|\"|>z<|\"|>}}<tool_call|>",
                    content: "",
                    calls: &[("add", r#"{"a":1,"b":{"x":[1,2],"y":"z"}}"#)],
                },
            ],
        );
    }
}
