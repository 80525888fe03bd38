//! Liquid LFM2.5: `<|tool_call_start|>` and a Python list of calls,
//! `<|tool_call_end|>`.

use super::{Body, Family};

pub static FAMILY: Family = Family {
    name: "lfm2",
    models: "LFM2.5",
    renders: &["<|tool_call_start|>[get_weather("],
    source: &[],
    opener: "<|tool_call_start|>",
    triggers: &["<|tool_call_start|>"],
    json_at_start: false,
    call_open: &["<|tool_call_start|>"],
    noise: &[],
    body: Body::Pythonic,
    closer: "<|tool_call_end|>",
    repeats: false,
    reasoning: "<think>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "[get_weather(city='Paris')]",
            &[
                Vector { name: "plain", text: "Hi.", content: "Hi.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<|tool_call_start|>[get_weather(city='Paris'), add(a=1, b=2)]<|tool_call_end|>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1,"b":2}"#)],
                },
                Vector {
                    name: "text then a call cut in the second",
                    text: "Checking.<|tool_call_start|>[get_weather(city='Paris'), add(a=",
                    content: "Checking.",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
            ],
        );
    }
}
