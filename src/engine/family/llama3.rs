//! Llama 3.1, 3.2 and 3.3 JSON tool calling: the answer is one JSON object with the
//! function's `name` and its `parameters`, optionally after `<|python_tag|>`.

use super::{Body, Family};

pub static FAMILY: Family = Family {
    name: "llama3",
    models: "Llama 3.1, 3.2, 3.3",
    renders: &["{\"name\": \"get_weather\", \"parameters\": "],
    source: &["<|python_tag|>"],
    opener: "",
    triggers: &["<|python_tag|>"],
    json_at_start: true,
    call_open: &["<|python_tag|>"],
    noise: &["<|eom_id|>"],
    body: Body::Object {
        name: "name",
        args: "parameters",
        id: None,
        list: false,
    },
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
            r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#,
            &[
                Vector {
                    name: "plain",
                    text: "Hello!",
                    content: "Hello!",
                    calls: &[],
                },
                Vector {
                    name: "the answer is the call",
                    text: " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "after the python tag",
                    text: "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 2}}",
                    content: "",
                    calls: &[("add", r#"{"a":2}"#)],
                },
                Vector {
                    name: "cut after the python tag",
                    text: "<|python_tag|>{\"name\": \"add\", \"param",
                    content: "",
                    calls: &[],
                },
                Vector {
                    name: "a JSON answer that is no call stays text",
                    text: "{\"temperature\": 21}",
                    content: "{\"temperature\": 21}",
                    calls: &[],
                },
            ],
        );
    }
}
