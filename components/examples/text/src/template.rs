//! `{name}` templates.

use serde_json::{Map, Value};
use weft_sdk::StepError;

/// Replaces each `{key}` in `text` by `vars[key]`; `{{` and `}}` are literal
/// braces.
pub fn render(text: &str, vars: &Map<String, Value>) -> Result<String, StepError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let brace = &rest[at..at + 1];
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix(brace) {
            out.push_str(brace);
            rest = after;
            continue;
        }
        if brace == "}" {
            return Err(StepError::bad_input(
                "unmatched `}` in template (write `}}`)",
            ));
        }
        let end = rest
            .find('}')
            .ok_or_else(|| StepError::bad_input("unclosed `{` in template (write `{{`)"))?;
        let key = rest[..end].trim();
        match vars.get(key) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => {
                return Err(StepError::bad_input(format!(
                    "template uses `{{{key}}}` but vars has no `{key}`"
                )));
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders() {
        let v = vars(json!({"name": "Ann", "n": 3, "tags": ["a"]}));
        assert_eq!(
            render("Hi {name}, {n} {tags} {{x}}", &v).unwrap(),
            "Hi Ann, 3 [\"a\"] {x}"
        );
        assert!(
            render("{missing}", &v)
                .unwrap_err()
                .message
                .contains("missing")
        );
        assert!(render("{name", &v).is_err());
        assert!(render("a } b", &v).is_err());
    }
}
