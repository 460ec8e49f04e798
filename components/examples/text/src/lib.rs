//! `text`: small string operations and templates.
//!
//! Input, by `op`:
//! - `{"op": "upper"|"lower"|"trim"|"reverse", "text": "..."}` -> `{"text": "..."}`
//! - `{"op": "length", "text": "..."}` -> `{"count": n}` (Unicode scalar values)
//! - `{"op": "words", "text": "..."}` -> `{"count": n, "words": [...]}` (split on whitespace)
//! - `{"op": "split", "text": "a,b", "sep": ","}` -> `{"parts": ["a", "b"]}`
//! - `{"op": "replace", "text": "...", "from": "a", "to": "b"}` -> `{"text": "..."}` (every occurrence)
//! - `{"op": "template", "text": "Hi {name}!", "vars": {"name": "Ann"}}` -> `{"text": "Hi Ann!"}`:
//!   `{key}` is replaced by `vars.key` (strings as they are, other values as
//!   JSON), `{{` and `}}` stand for literal braces.
//!
//! Errors: `bad_input` for an unknown op, a missing field, an empty `sep` or
//! `from`, or a template naming a variable that `vars` lacks.

mod template;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weft_sdk::{StepError, step};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Input {
    Upper {
        text: String,
    },
    Lower {
        text: String,
    },
    Trim {
        text: String,
    },
    Reverse {
        text: String,
    },
    Length {
        text: String,
    },
    Words {
        text: String,
    },
    Split {
        text: String,
        sep: String,
    },
    Replace {
        text: String,
        from: String,
        to: String,
    },
    Template {
        text: String,
        #[serde(default)]
        vars: Map<String, Value>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Text { text: String },
    Count { count: usize },
    Words { count: usize, words: Vec<String> },
    Parts { parts: Vec<String> },
}

fn run(input: Input) -> Result<Output, StepError> {
    let text = |text| Ok(Output::Text { text });
    match input {
        Input::Upper { text: t } => text(t.to_uppercase()),
        Input::Lower { text: t } => text(t.to_lowercase()),
        Input::Trim { text: t } => text(t.trim().to_owned()),
        Input::Reverse { text: t } => text(t.chars().rev().collect()),
        Input::Length { text: t } => Ok(Output::Count {
            count: t.chars().count(),
        }),
        Input::Words { text: t } => {
            let words: Vec<String> = t.split_whitespace().map(str::to_owned).collect();
            Ok(Output::Words {
                count: words.len(),
                words,
            })
        }
        Input::Split { text: t, sep } => {
            non_empty("sep", &sep)?;
            let parts = t.split(sep.as_str()).map(str::to_owned).collect();
            Ok(Output::Parts { parts })
        }
        Input::Replace { text: t, from, to } => {
            non_empty("from", &from)?;
            text(t.replace(&from, &to))
        }
        Input::Template { text: t, vars } => text(template::render(&t, &vars)?),
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), StepError> {
    if value.is_empty() {
        return Err(StepError::bad_input(format!("`{field}` must not be empty")));
    }
    Ok(())
}

step!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(input: Value) -> Result<Value, StepError> {
        let input = serde_json::from_value(input).map_err(StepError::from)?;
        Ok(serde_json::to_value(run(input)?).unwrap())
    }

    #[test]
    fn ops() {
        assert_eq!(
            text(json!({"op": "upper", "text": "aé"})).unwrap(),
            json!({"text": "AÉ"})
        );
        assert_eq!(
            text(json!({"op": "reverse", "text": "abc"})).unwrap(),
            json!({"text": "cba"})
        );
        assert_eq!(
            text(json!({"op": "words", "text": " a  b\nc "})).unwrap(),
            json!({"count": 3, "words": ["a", "b", "c"]})
        );
        assert_eq!(
            text(json!({"op": "split", "text": "a,b", "sep": ","})).unwrap(),
            json!({"parts": ["a", "b"]})
        );
        assert_eq!(
            text(json!({"op": "replace", "text": "aXbX", "from": "X", "to": "-"})).unwrap(),
            json!({"text": "a-b-"})
        );
        assert_eq!(
            text(json!({"op": "length", "text": "hé"})).unwrap(),
            json!({"count": 2})
        );
        assert!(text(json!({"op": "nope", "text": ""})).is_err());
        assert!(text(json!({"op": "upper", "text": "", "extra": 1})).is_err());
    }
}
