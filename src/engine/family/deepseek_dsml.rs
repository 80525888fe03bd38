//! DeepSeek V3.2 and V4 (DSML): `<｜DSML｜invoke name="NAME">` elements, each argument a
//! `<｜DSML｜parameter name="KEY" string="true|false">` element, in a `function_calls`
//! (V3.2) or `tool_calls` (V4) block.

use super::{Body, Family, Sep};

const BODY: Body = Body::Params {
    sep: Sep {
        find: ">",
        lark: "\"\\\">\" \"\\n\"?",
    },
    param: "<｜DSML｜parameter name=\"",
    key_close: Sep {
        find: ">",
        lark: "\"\\\" string=\\\"\" (\"true\" | \"false\") \"\\\">\"",
    },
    value_close: "</｜DSML｜parameter>",
    close_names_key: false,
    end: "</｜DSML｜invoke>",
};

const V32: Family = Family {
    name: "deepseek-v3.2",
    models: "DeepSeek V3.2",
    renders: &["<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">"],
    source: &[],
    opener: "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"",
    triggers: &["<｜DSML｜invoke name=\""],
    json_at_start: false,
    call_open: &["<｜DSML｜invoke name=\""],
    noise: &["<｜DSML｜function_calls>", "</｜DSML｜function_calls>"],
    body: BODY,
    closer: "\n</｜DSML｜function_calls>",
    repeats: true,
    reasoning: "<think>",
};

pub static FAMILY_V32: Family = V32;

pub static FAMILY_V4: Family = Family {
    name: "deepseek-v4",
    models: "DeepSeek V4",
    renders: &["<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">"],
    opener: "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"",
    noise: &["<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"],
    closer: "\n</｜DSML｜tool_calls>",
    ..V32
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    const CALL: &str = "get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>";

    #[test]
    fn vectors_v32() {
        check(
            &super::FAMILY_V32,
            CALL,
            &[
                Vector { name: "plain", text: "Noted.", content: "Noted.", calls: &[] },
                Vector {
                    name: "two invokes",
                    text: "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"add\">\n<｜DSML｜parameter name=\"a\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":3}"#)],
                },
                Vector {
                    name: "cut in the invoke",
                    text: "Looking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Par",
                    content: "Looking.",
                    calls: &[],
                },
            ],
        );
    }

    #[test]
    fn vectors_v4() {
        check(
            &super::FAMILY_V4,
            CALL,
            &[Vector {
                name: "one call",
                text: "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"add\">\n<｜DSML｜parameter name=\"a\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
                content: "",
                calls: &[("add", r#"{"a":3}"#)],
            }],
        );
    }
}
