//! OpenBMB MiniCPM 5: `<function name="NAME">` and one `<param name="KEY">` element per
//! argument, `</function>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "minicpm",
    models: "MiniCPM 5",
    renders: &["<function name=\"get_weather\"><param name=\"city\">"],
    source: &[],
    opener: "<function name=\"",
    triggers: &["<function name=\""],
    json_at_start: false,
    call_open: &["<function name=\""],
    noise: &[],
    body: Body::Params {
        sep: Sep {
            find: ">",
            lark: "\"\\\">\"",
        },
        param: "<param name=\"",
        key_close: Sep {
            find: ">",
            lark: "\"\\\">\"",
        },
        value_close: "</param>",
        close_names_key: false,
        end: "</function>",
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
            "get_weather\"><param name=\"city\">Paris</param></function>",
            &[
                Vector { name: "plain", text: "Yes.", content: "Yes.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<function name=\"get_weather\"><param name=\"city\">Paris</param></function><function name=\"add\"><param name=\"a\">4</param></function>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":4}"#)],
                },
            ],
        );
    }
}
