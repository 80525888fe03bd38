//! MeetKai functionary v3.2: each message `>>>RECIPIENT\n`: `all` for text to the user, a
//! function's name for a call, its arguments a JSON object.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "functionary-v3.2",
    models: "functionary v3.2",
    renders: &[">>>get_weather\n{"],
    source: &[">>>all"],
    opener: ">>>",
    triggers: &[">>>"],
    json_at_start: false,
    call_open: &[">>>"],
    noise: &["all\n"],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: "\n",
            lark: "\"\\n\"",
        },
    },
    closer: "",
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
            "get_weather\n{\"city\":\"Paris\"}",
            &[
                Vector {
                    name: "one call",
                    text: ">>>add\n{\"a\": 1}",
                    content: "",
                    calls: &[("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut",
                    text: ">>>get_weather\n{\"ci",
                    content: "",
                    calls: &[],
                },
            ],
        );
    }
}
