//! Muse Glimmer: MiniMax M2's elements under the `atem:` prefix.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "atem",
    models: "Muse Glimmer",
    renders: &["<atem:function_calls>\n<atem:invoke name=\"get_weather\">"],
    source: &[],
    opener: "<atem:function_calls>\n<atem:invoke name=\"",
    triggers: &["<atem:invoke name=\""],
    json_at_start: false,
    call_open: &["<atem:invoke name=\""],
    noise: &["<atem:function_calls>", "</atem:function_calls>"],
    body: Body::Params {
        sep: Sep {
            find: ">",
            lark: "\"\\\">\" \"\\n\"?",
        },
        param: "<atem:parameter name=\"",
        key_close: Sep {
            find: ">",
            lark: "\"\\\">\"",
        },
        value_close: "</atem:parameter>",
        close_names_key: false,
        end: "</atem:invoke>",
    },
    closer: "\n</atem:function_calls>",
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
            "get_weather\">\n<atem:parameter name=\"city\">Paris</atem:parameter>\n</atem:invoke>",
            &[
                Vector { name: "plain", text: "Yes.", content: "Yes.", calls: &[] },
                Vector {
                    name: "one call",
                    text: "<atem:function_calls>\n<atem:invoke name=\"add\">\n<atem:parameter name=\"a\">2</atem:parameter>\n</atem:invoke>\n</atem:function_calls>",
                    content: "",
                    calls: &[("add", r#"{"a":2}"#)],
                },
            ],
        );
    }
}
