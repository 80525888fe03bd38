//! MiniMax M2: a `<minimax:tool_call>` block of `<invoke name="NAME">` elements, each
//! argument a `<parameter name="KEY">` element.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "minimax-m2",
    models: "MiniMax M2",
    renders: &["<minimax:tool_call>\n<invoke name=\"get_weather\">"],
    source: &[],
    opener: "<minimax:tool_call>\n<invoke name=\"",
    triggers: &["<invoke name=\""],
    json_at_start: false,
    call_open: &["<invoke name=\""],
    noise: &["<minimax:tool_call>", "</minimax:tool_call>"],
    body: Body::Params {
        sep: Sep {
            find: ">",
            lark: "\"\\\">\" \"\\n\"?",
        },
        param: "<parameter name=\"",
        key_close: Sep {
            find: ">",
            lark: "\"\\\">\"",
        },
        value_close: "</parameter>",
        close_names_key: false,
        end: "</invoke>",
    },
    closer: "\n</minimax:tool_call>",
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
            "get_weather\">\n<parameter name=\"city\">Paris</parameter>\n</invoke>",
            &[
                Vector { name: "plain", text: "Sure.", content: "Sure.", calls: &[] },
                Vector {
                    name: "two invokes in one block",
                    text: "<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Paris</parameter>\n</invoke>\n<invoke name=\"add\">\n<parameter name=\"a\">1</parameter>\n<parameter name=\"b\">2</parameter>\n</invoke>\n</minimax:tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1,"b":2}"#)],
                },
                Vector {
                    name: "cut in the closer the engine writes",
                    text: "<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Paris</parameter>\n</invoke>\n</minim",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "cut in the second invoke",
                    text: "<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Paris</parameter>\n</invoke>\n<invoke name=\"add\">\n<parameter name=\"a\">1",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
            ],
        );
    }
}
