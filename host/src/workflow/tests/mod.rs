//! Tests of `validate` and `check_input` against whole documents.

mod documents;
mod rules;

use semver::VersionReq;
use serde_json::{Value, json};

use super::*;

/// Knows parse 1.0.0, price 1.0.0/1.2.5/2.1.0 and notify 1.4.0; pins are `name@version`.
fn registry(name: &str, req: &VersionReq) -> Result<String, String> {
    let versions: &[&str] = match name {
        "parse" => &["1.0.0"],
        "price" => &["1.0.0", "1.2.5", "2.1.0"],
        "notify" => &["1.4.0"],
        _ => return Err(format!("unknown component \"{name}\"")),
    };
    versions
        .iter()
        .rev()
        .find(|v| req.matches(&semver::Version::parse(v).unwrap()))
        .map(|v| format!("{name}@{v}"))
        .ok_or_else(|| {
            format!(
                "no version of \"{name}\" matches {req} (available: {})",
                versions.join(", ")
            )
        })
}

fn example() -> Value {
    json!({
      "name": "orders",
      "description": "price an order",
      "input_schema": { "type": "object", "required": ["order"] },
      "steps": [
        { "id": "parse",  "component": "parse@1.0.0", "input": "${input.order}" },
        { "id": "price",  "component": "price@^1.2",
          "input": { "lines": "${steps.parse.output.lines}", "region": "${input.region}" },
          "retry": { "max_attempts": 5, "initial_backoff_ms": 100, "max_backoff_ms": 10000 },
          "timeout_ms": 2000,
          "limits": { "fuel": 500000000u64, "memory_mb": 64 } },
        { "id": "notify", "component": "notify@1", "needs": ["price"], "input": {} }
      ],
      "output": { "total": "${steps.price.output.total}" }
    })
}

fn problems(doc: &Value) -> Vec<Problem> {
    validate(doc, &registry).err().unwrap_or_default()
}

fn paths(doc: &Value) -> Vec<String> {
    problems(doc).into_iter().map(|p| p.path).collect()
}

/// The single problem of `doc`.
fn only_problem(doc: &Value) -> Problem {
    let mut found = problems(doc);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.remove(0)
}

/// A minimal valid doc with these steps.
fn doc_with(steps: Value) -> Value {
    json!({ "steps": steps })
}
