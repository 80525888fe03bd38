//! DeepSeek V3.1 (and V3 0324 tool use): `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>` and the
//! arguments as a JSON object, `<｜tool▁call▁end｜>`, inside `<｜tool▁calls▁begin｜>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "deepseek-v3.1",
    models: "DeepSeek V3.1",
    renders: &["<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"],
    source: &[],
    opener: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
    triggers: &["<｜tool▁call▁begin｜>"],
    json_at_start: false,
    call_open: &["<｜tool▁call▁begin｜>"],
    noise: &["<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: "<｜tool▁sep｜>",
            lark: "{{<｜tool▁sep｜>}}",
        },
    },
    closer: "<｜tool▁call▁end｜>",
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
            r#"get_weather<｜tool▁sep｜>{"city":"Paris"}"#,
            &[
                Vector { name: "plain", text: "Fine.", content: "Fine.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a\": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the second call",
                    text: "OK<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a\": 1}<｜tool▁call▁end｜><｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a",
                    content: "OK",
                    calls: &[("add", r#"{"a":1}"#)],
                },
            ],
        );
    }
}
