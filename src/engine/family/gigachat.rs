//! GigaChat 3 and 3.1: a call is a JSON object after `<|function_call|>` (3.1) or in a
//! `function call` turn (3).

use super::Family;

pub static FAMILY: Family = Family {
    name: "gigachat",
    models: "GigaChat 3.1",
    renders: &["<|function_call|>{\"name\": \"get_weather\""],
    source: &[],
    opener: "<|function_call|>",
    triggers: &["<|function_call|>"],
    json_at_start: false,
    call_open: &["<|function_call|>"],
    noise: &["<|message_sep|>"],
    body: super::JSON_CALL,
    closer: "",
    repeats: false,
    reasoning: "",
};

pub static FAMILY_V3: Family = Family {
    name: "gigachat-v3",
    models: "GigaChat 3",
    renders: &["function call<|role_sep|>\n{\"name\": \"get_weather\""],
    opener: "<|message_sep|>\n\nfunction call<|role_sep|>\n",
    triggers: &["function call<|role_sep|>"],
    call_open: &["function call<|role_sep|>"],
    ..FAMILY_BASE
};

const FAMILY_BASE: Family = Family {
    name: "",
    models: "",
    renders: &[],
    source: &[],
    opener: "",
    triggers: &[],
    json_at_start: false,
    call_open: &[],
    noise: &["<|message_sep|>"],
    body: super::JSON_CALL,
    closer: "",
    repeats: false,
    reasoning: "",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#,
            &[Vector {
                name: "one call",
                text: "<|function_call|>{\"name\": \"add\", \"arguments\": {\"a\": 1}}",
                content: "",
                calls: &[("add", r#"{"a":1}"#)],
            }],
        );
        check(
            &super::FAMILY_V3,
            r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#,
            &[Vector {
                name: "text then a call",
                text: "Checking.<|message_sep|>\n\nfunction call<|role_sep|>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}",
                content: "Checking.",
                calls: &[("add", r#"{"a":1}"#)],
            }],
        );
    }
}
