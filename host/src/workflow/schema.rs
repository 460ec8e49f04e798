//! The JSON Schema of the document itself, and turning schema errors into problems.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::{Problem, join_pointer};

/// The document schema, parsed once.
static DOCUMENT_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("schema.json"))
        .expect("the embedded schema.json is valid JSON")
});

/// The document schema, compiled once; a unit test proves it compiles.
static DOCUMENT_VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    jsonschema::draft202012::new(&DOCUMENT_SCHEMA)
        .expect("the embedded schema.json is a valid JSON Schema")
});

/// Longest message taken from a validator before it is cut, since messages quote the instance.
const MAX_MESSAGE_LEN: usize = 300;

/// The JSON Schema (Draft 2020-12) that every workflow document must satisfy.
pub fn document_schema() -> &'static Value {
    &DOCUMENT_SCHEMA
}

/// Every schema error of the document, as problems.
pub(super) fn check(doc: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    for error in DOCUMENT_VALIDATOR.iter_errors(doc) {
        let path = error.instance_path().as_str();
        match error.kind() {
            // One problem per unknown field, at the field itself: that is what to delete or fix.
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = allowed_properties(error.schema_path().as_str());
                for key in unexpected {
                    let message = format!(
                        "unknown field {} (expected one of: {allowed})",
                        super::quoted(key)
                    );
                    problems.push(Problem::new(join_pointer(path, key), message));
                }
            }
            _ => problems.push(Problem::new(path, document_message(&error))),
        }
    }
    problems
}

/// The properties the schema allows next to the `additionalProperties` at `schema_path`.
fn allowed_properties(schema_path: &str) -> String {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or("");
    DOCUMENT_SCHEMA
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// A message for a document schema error, written for someone fixing the document by hand.
fn document_message(error: &ValidationError<'_>) -> String {
    let field = error
        .instance_path()
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or("");
    match error.kind() {
        ValidationErrorKind::Pattern { .. } if field == "id" => {
            format!("invalid step id {}: {NAME_RULE}", short(error.instance()))
        }
        ValidationErrorKind::Pattern { .. } if field == "component" => format!(
            "invalid component reference {}: expected \"name@requirement\" (e.g. \"parse@1.0.0\"), \
             the name {NAME_RULE}",
            short(error.instance())
        ),
        ValidationErrorKind::UniqueItems => match first_duplicate(error.instance()) {
            Some(dup) => format!("{dup} is listed more than once"),
            None => "has duplicate entries".to_owned(),
        },
        ValidationErrorKind::MinItems { limit: 1 } => "must not be empty".to_owned(),
        _ => generic_message(error),
    }
}

const NAME_RULE: &str =
    "a lowercase letter followed by at most 62 lowercase letters, digits, '_' or '-'";

/// A message for any schema error: the validator's own, with types and long values made shorter.
fn generic_message(error: &ValidationError<'_>) -> String {
    match error.kind() {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("expected {expected}, found {}", type_name(error.instance()))
        }
        ValidationErrorKind::Required { property } => format!("missing required field {property}"),
        _ => truncate(error.to_string()),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as compact JSON, cut short when long.
fn short(value: &Value) -> String {
    truncate(value.to_string())
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn first_duplicate(value: &Value) -> Option<String> {
    // Items of `needs` are strings; anything else is a type error reported on its own.
    let mut seen = std::collections::HashSet::new();
    value
        .as_array()?
        .iter()
        .find(|item| item.as_str().is_some_and(|s| !seen.insert(s)))
        .map(short)
}

/// Compile a run-input schema; the error says why it is not a usable JSON Schema.
///
/// Offline whatever features jsonschema is built with: a `$ref` to anything outside the schema
/// fails here rather than reaching the network or the file system, which keeps validation pure.
pub(super) fn compile_input_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::options().offline().build(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        let why = generic_message(&e);
        if at.is_empty() {
            format!("not a valid JSON Schema: {why}")
        } else {
            format!("not a valid JSON Schema: at {at}: {why}")
        }
    })
}

/// The problems of `input` under a compiled input schema, at `/input` + instance pointer.
pub(super) fn input_problems(validator: &Validator, input: &Value) -> Vec<Problem> {
    validator
        .iter_errors(input)
        .map(|e| {
            Problem::new(
                format!("/input{}", e.instance_path().as_str()),
                generic_message(&e),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_schema_compiles() {
        assert!(DOCUMENT_VALIDATOR.is_valid(&json!({"steps": [{"id": "a", "component": "a@1"}]})));
        assert_eq!(
            document_schema()["$defs"]["step"]["required"],
            json!(["id"])
        );
        assert!(DOCUMENT_VALIDATOR.is_valid(&json!({"steps": [{"id": "a", "sleep_ms": 5}]})));
        assert!(!DOCUMENT_VALIDATOR.is_valid(&json!({"steps": [{"id": "a", "sleep_ms": -1}]})));
    }

    #[test]
    fn messages_are_short_and_readable() {
        let mut problems = check(&json!({"steps": "nope", "nmae": 1}));
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            problems,
            vec![
                Problem::new(
                    "/nmae",
                    "unknown field \"nmae\" (expected one of: name, description, input_schema, steps, output)"
                ),
                Problem::new("/steps", "expected array, found string"),
            ]
        );
    }

    #[test]
    fn truncates_on_char_boundary() {
        let long = "é".repeat(400);
        let cut = truncate(long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
    }

    #[test]
    fn input_schema_compile_errors_are_messages() {
        assert!(
            compile_input_schema(&json!({"type": 5}))
                .unwrap_err()
                .starts_with("not a valid JSON Schema")
        );
        assert!(compile_input_schema(&json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(compile_input_schema(&json!(true)).is_ok());
        // Bundled meta-schemas need no retrieval, so other drafts still work offline.
        let draft7 =
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"});
        assert!(compile_input_schema(&draft7).is_ok());
    }
}
