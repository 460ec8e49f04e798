//! `pick`: picks and renames fields of a JSON value.
//!
//! Input:
//! ```json
//! {
//!   "value":   <any JSON>,
//!   "fields":  ["a", "b.c", "items[0].id"],
//!   "map":     { "total": "order.sum", "first": "items[0]" },
//!   "missing": "error"
//! }
//! ```
//! - `fields` (optional): paths copied into the output at the same place,
//!   e.g. `"b.c"` gives `{"b": {"c": ...}}`; array slots before an index that
//!   was not picked are `null`.
//! - `map` (optional): output keys set to the value found at a path.
//! - `missing` (optional): what a path that does not exist does: `"error"`
//!   (default, fails with `bad_input`), `"null"` (puts `null`), `"skip"`
//!   (leaves it out).
//!
//! Paths are dot-separated keys with `[n]` for array indexes, like workflow
//! references; the empty path `""` is the whole value.
//!
//! Output: an object holding the picked fields, then the mapped keys. With
//! neither `fields` nor `map`, the output is `value` itself.
//! Errors: `bad_input` for a malformed path or (by default) a missing one.

mod path;

use serde::Deserialize;
use serde_json::{Map, Value};
use weft_sdk::{StepError, step};

use path::{Path, Segment};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    value: Value,
    fields: Option<Vec<String>>,
    map: Option<Map<String, Value>>,
    #[serde(default)]
    missing: Missing,
}

/// What to do with a path that is not in the value.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Missing {
    #[default]
    Error,
    Null,
    Skip,
}

fn run(input: Input) -> Result<Value, StepError> {
    if input.fields.is_none() && input.map.is_none() {
        return Ok(input.value);
    }
    let mut out = Value::Object(Map::new());
    for field in input.fields.iter().flatten() {
        let path = Path::parse(field)?;
        if let Some(found) = lookup(&input.value, &path, input.missing)? {
            path.set(&mut out, found);
        }
    }
    for (key, spec) in input.map.iter().flatten() {
        let spec = spec.as_str().ok_or_else(|| {
            StepError::bad_input(format!("map.{key} must be a path string, found {spec}"))
        })?;
        let path = Path::parse(spec)?;
        if let Some(found) = lookup(&input.value, &path, input.missing)? {
            Path(vec![Segment::Key(key.clone())]).set(&mut out, found);
        }
    }
    Ok(out)
}

/// The value at `path`, or what `missing` says to use instead.
fn lookup(value: &Value, path: &Path, missing: Missing) -> Result<Option<Value>, StepError> {
    match (path.get(value), missing) {
        (Some(found), _) => Ok(Some(found.clone())),
        (None, Missing::Null) => Ok(Some(Value::Null)),
        (None, Missing::Skip) => Ok(None),
        (None, Missing::Error) => Err(StepError::bad_input(format!(
            "path `{path}` is not in the value"
        ))),
    }
}

step!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pick(input: Value) -> Result<Value, StepError> {
        run(serde_json::from_value(input).unwrap())
    }

    #[test]
    fn picks_nested_fields_and_maps() {
        let value = json!({"a": 1, "b": {"c": 2, "d": 3}, "items": [{"id": "x"}, {"id": "y"}]});
        let out = pick(json!({
            "value": value,
            "fields": ["a", "b.c", "items[1].id"],
            "map": {"first": "items[0].id"}
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({"a": 1, "b": {"c": 2}, "items": [null, {"id": "y"}], "first": "x"})
        );
    }

    #[test]
    fn missing_paths_follow_the_policy() {
        let err = pick(json!({"value": {}, "fields": ["x.y"]})).unwrap_err();
        assert_eq!(err.code, "bad_input");
        assert!(err.message.contains("x.y"));
        let out = pick(json!({"value": {}, "fields": ["x"], "missing": "null"})).unwrap();
        assert_eq!(out, json!({"x": null}));
        let out = pick(json!({"value": {}, "map": {"k": "x"}, "missing": "skip"})).unwrap();
        assert_eq!(out, json!({}));
    }

    #[test]
    fn without_fields_or_map_returns_value() {
        assert_eq!(pick(json!({"value": [1, 2]})).unwrap(), json!([1, 2]));
    }
}
