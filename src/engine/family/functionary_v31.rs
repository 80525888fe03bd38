//! MeetKai functionary v3.1 (Llama 3.1 based): `<function=NAME>` and the arguments as a
//! JSON object, `</function>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "functionary-v3.1",
    models: "functionary v3.1",
    renders: &["<function=get_weather>{"],
    source: &[],
    opener: "<function=",
    triggers: &["<function="],
    json_at_start: false,
    call_open: &["<function="],
    noise: &["<|eom_id|>"],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: ">",
            lark: "\">\"",
        },
    },
    closer: "</function>",
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
            r#"get_weather>{"city":"Paris"}"#,
            &[
                Vector { name: "plain", text: "Hi.", content: "Hi.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<function=get_weather>{\"city\": \"Paris\"}</function><function=add>{\"a\": 1}</function>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
            ],
        );
    }
}
