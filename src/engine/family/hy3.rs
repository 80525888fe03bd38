//! Tencent Hunyuan (Hy3): GLM's elements with `:opensource` markers, the name after
//! `<tool_sep:opensource>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "hunyuan",
    models: "Tencent Hy3",
    renders: &["<tool_call:opensource>get_weather<tool_sep:opensource>"],
    source: &[],
    opener: "<tool_calls:opensource>\n<tool_call:opensource>",
    triggers: &["<tool_call:opensource>"],
    json_at_start: false,
    call_open: &["<tool_call:opensource>"],
    noise: &["<tool_calls:opensource>", "</tool_calls:opensource>"],
    body: Body::Params {
        sep: Sep {
            find: "<tool_sep:opensource>",
            lark: "{{<tool_sep:opensource>}} \"\\n\"?",
        },
        param: "<arg_key:opensource>",
        key_close: Sep {
            find: "<arg_value:opensource>",
            lark: "\"</arg_key:opensource>\" \"\\n\"? \"<arg_value:opensource>\"",
        },
        value_close: "</arg_value:opensource>",
        close_names_key: false,
        end: "</tool_call:opensource>",
    },
    closer: "\n</tool_calls:opensource>",
    repeats: false,
    reasoning: "<think:opensource>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "get_weather<tool_sep:opensource>\n<arg_key:opensource>city</arg_key:opensource>\n<arg_value:opensource>Paris</arg_value:opensource>\n</tool_call:opensource>",
            &[
                Vector { name: "plain", text: "OK.", content: "OK.", calls: &[] },
                Vector {
                    name: "one call",
                    text: "<tool_calls:opensource>\n<tool_call:opensource>add<tool_sep:opensource>\n<arg_key:opensource>a</arg_key:opensource>\n<arg_value:opensource>9</arg_value:opensource>\n</tool_call:opensource>\n</tool_calls:opensource>",
                    content: "",
                    calls: &[("add", r#"{"a":9}"#)],
                },
                Vector {
                    name: "cut in the key",
                    text: "<tool_calls:opensource>\n<tool_call:opensource>add<tool_sep:opensource>\n<arg_key:opens",
                    content: "",
                    calls: &[],
                },
            ],
        );
    }
}
