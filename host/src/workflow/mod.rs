//! The workflow document (ARCHITECTURE.md section 4): parse, validate and resolve references.
//!
//! Pure: no I/O, no async, nothing from the rest of the crate. The scheduler, the HTTP API and
//! `weft exec` all go through [`validate`] once per submitted document, then resolve the
//! compiled [`Template`]s of a [`Workflow`] many times while the run goes on.

mod condition;
mod dag;
mod document;
mod reference;
mod requirement;
mod schema;
mod template;
mod validate;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::fmt;

pub use condition::{Condition, ConditionInput, StepFacts};
pub use document::{
    Action, Compensation, ComponentRef, DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT_MS, ForEach,
    MAX_TIMEOUT_MS, MAX_WAIT_MS, OnError, RetryPolicy, Sleep, Step, StepLimits, TemplateCall,
    Workflow, is_signal_name,
};
pub use requirement::{is_valid_name, parse_requirement};
pub use schema::document_schema;
pub use template::{ABSENT, BadReference, ResolveError, Root, Template, json_size};
pub use validate::validate;

/// One problem found while validating a document or a run's input.
///
/// `path` is a JSON Pointer (RFC 6901) into the document or, for problems with the run input,
/// `/input` followed by a pointer into the input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Where the problem is, as a JSON Pointer.
    pub path: String,
    /// What is wrong, for a person to read.
    pub message: String,
}

impl Problem {
    /// A problem at `path` described by `message`; a message quoting a long part of the
    /// document is cut.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        const MAX_MESSAGE: usize = 400;
        let mut message = message.into();
        if let Some((end, _)) = message.char_indices().nth(MAX_MESSAGE) {
            message.truncate(end);
            message.push('…');
        }
        Self {
            path: path.into(),
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The empty pointer is the whole document; say so rather than print nothing.
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// How a component reference resolves (the registry, or the `--components` directory).
pub trait ComponentResolver {
    /// Ok(digest or any opaque pin string) or Err(message) such as `unknown component "parse"` or
    /// `no version of "price" matches ^1.2 (available: 1.0.0, 2.1.0)`.
    fn resolve(&self, name: &str, requirement: &semver::VersionReq) -> Result<String, String>;
}

/// Any matching closure is a resolver, which keeps tests and one-off callers short.
impl<F> ComponentResolver for F
where
    F: Fn(&str, &semver::VersionReq) -> Result<String, String>,
{
    fn resolve(&self, name: &str, requirement: &semver::VersionReq) -> Result<String, String> {
        self(name, requirement)
    }
}

/// A validated workflow plus the pin (the resolver's string) of every step's component.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The workflow, with templates compiled and dependencies computed.
    pub workflow: Workflow,
    /// One pin per step, in step order.
    pub pins: Vec<String>,
}

/// Check a run's input against the workflow's `input_schema`; no schema means no problems.
///
/// Problem paths are `/input` followed by the pointer of the offending part of the input.
pub fn check_input(workflow: &Workflow, input: &serde_json::Value) -> Vec<Problem> {
    let mut problems = match (workflow.input_validator(), &workflow.input_schema) {
        (Some(validator), _) => schema::input_problems(validator, input),
        // Only reachable when `input_schema` was set after validation: compile it here.
        (None, Some(raw)) => match schema::compile_input_schema(raw) {
            Ok(validator) => schema::input_problems(&validator, input),
            Err(message) => vec![Problem::new("/input_schema", message)],
        },
        (None, None) => Vec::new(),
    };
    sort_problems(&mut problems);
    problems
}

/// Longest key written whole into a problem's pointer; a longer one is cut and ends in `…`,
/// so that a hostile key is never copied into every problem below it.
const MAX_POINTER_TOKEN: usize = 256;

/// Append `key` to the JSON Pointer `pointer` as one reference token, escaped per RFC 6901.
fn push_pointer(pointer: &mut String, key: &str) {
    pointer.push('/');
    let (key, cut) = match key.char_indices().nth(MAX_POINTER_TOKEN) {
        Some((end, _)) => (&key[..end], true),
        None => (key, false),
    };
    if cut {
        push_escaped(pointer, key);
        pointer.push('…');
    } else {
        push_escaped(pointer, key);
    }
}

fn push_escaped(pointer: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// `pointer` with `key` appended as one escaped reference token.
fn join_pointer(pointer: &str, key: &str) -> String {
    let mut joined = pointer.to_owned();
    push_pointer(&mut joined, key);
    joined
}

/// A name from the document as a message quotes it: in double quotes, cut after 64 characters.
fn quoted(name: &str) -> String {
    format!("\"{}\"", cut(name))
}

/// Text from the document as a message shows it: cut after 64 characters.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &text[..end]).into(),
        None => text.into(),
    }
}

/// At most [`crate::budget::MAX_PROBLEMS`] problems, and whether any were left out.
pub fn cap_problems(mut problems: Vec<Problem>) -> (Vec<Problem>, bool) {
    let truncated = problems.len() > crate::budget::MAX_PROBLEMS;
    problems.truncate(crate::budget::MAX_PROBLEMS);
    (problems, truncated)
}

/// Sort problems by path, comparing array indexes as numbers (`/steps/2` before `/steps/10`),
/// keep the order of emission for equal paths, and drop exact duplicates.
fn sort_problems(problems: &mut Vec<Problem>) {
    // A schema error can come once per failing branch; saying it twice helps nobody.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert((p.path.clone(), p.message.clone())));
    problems.sort_by(|a, b| compare_pointers(&a.path, &b.path));
}

fn compare_pointers(a: &str, b: &str) -> Ordering {
    let mut left = a.split('/');
    let mut right = b.split('/');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (as_index(x), as_index(y)) {
                    (Some(i), Some(j)) => i.cmp(&j).then_with(|| x.cmp(y)),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

fn as_index(token: &str) -> Option<u128> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}
