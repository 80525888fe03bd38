//! GLM-4.5/4.6/4.7, Ling 3.0, Laguna, Spark 2.5: `<tool_call>NAME` then each argument as
//! `<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "glm",
    models: "GLM-4.5/4.6/4.7, Ling 3.0, Laguna, Spark 2.5",
    renders: &["<tool_call>get_weather", "<arg_key>city</arg_key>"],
    source: &[],
    opener: "<tool_call>",
    triggers: &["<tool_call>"],
    json_at_start: false,
    call_open: &["<tool_call>"],
    noise: &[],
    body: Body::Params {
        sep: Sep {
            find: "",
            lark: "\"\\n\"?",
        },
        param: "<arg_key>",
        key_close: Sep {
            find: "<arg_value>",
            lark: "\"</arg_key>\" \"\\n\"? \"<arg_value>\"",
        },
        value_close: "</arg_value>",
        close_names_key: false,
        end: "</tool_call>",
    },
    closer: "",
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
            "get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
            &[
                Vector { name: "plain", text: "Hi.", content: "Hi.", calls: &[] },
                Vector {
                    name: "two calls without newlines (GLM-4.7)",
                    text: "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call><tool_call>add<arg_key>a</arg_key><arg_value>5</arg_value></tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":5}"#)],
                },
                Vector {
                    name: "text then a call, cut in the value",
                    text: "Checking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Pa",
                    content: "Checking.",
                    calls: &[],
                },
            ],
        );
    }
}
