//! DeepSeek R1 and its distills: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`, then the
//! arguments in a ```json fence, `<｜tool▁call▁end｜>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "deepseek-r1",
    models: "DeepSeek R1 and distills",
    renders: &["<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather"],
    source: &["<｜tool▁call▁begin｜>", "<｜tool▁sep｜>"],
    opener: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>",
    triggers: &["function<｜tool▁sep｜>"],
    json_at_start: false,
    call_open: &["function<｜tool▁sep｜>"],
    noise: &[
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁calls▁end｜>",
        "<｜tool▁call▁begin｜>",
    ],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: "```json",
            lark: "\"\\n```json\\n\"",
        },
    },
    closer: "\n```<｜tool▁call▁end｜>",
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
            "get_weather\n```json\n{\"city\":\"Paris\"}",
            &[
                Vector { name: "plain", text: "Good.", content: "Good.", calls: &[] },
                Vector {
                    name: "one call",
                    text: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{\"a\": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                    content: "",
                    calls: &[("add", r#"{"a":2}"#)],
                },
                Vector {
                    name: "cut in the fence",
                    text: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```js",
                    content: "",
                    calls: &[],
                },
            ],
        );
    }
}
