//! Templates: JSON values with `${...}` references, compiled once and resolved per run.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::reference::{self, Path, PathRoot, Piece, Segment};
use super::{Problem, push_pointer};

/// Where a reference starts: the run's input or a step's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Root {
    /// `${input...}`: the run's input.
    Input,
    /// `${steps.<id>.output...}`: the output of the step at this index of `Workflow::steps`.
    Step(usize),
}

/// A reference whose path does not exist at run time (the step fails with `bad_reference`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reference ${{{path}}} does not exist")]
pub struct BadReference {
    /// The path as written, e.g. `steps.parse.output.lines[3]`.
    pub path: String,
}

/// A JSON value whose strings may refer to the run's input and to step outputs.
///
/// - A string that is exactly `"${path}"` becomes the value at `path`, of whatever type.
/// - `${path}` inside a longer string is replaced by the value's text: a string's own text
///   (no quotes), anything else as compact JSON.
/// - `$${` stands for a literal `${` and starts no reference (so `"$${input}"` is the text
///   `${input}`).
/// - Objects and arrays are templated recursively; object keys are never templated.
///
/// Paths are `input` or `steps.<id>.output`, followed by `.key` and `[n]` segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    node: Node,
    /// Deduplicated and sorted, so dependency computation needs no further work.
    roots: Box<[Root]>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A subtree without references, stored ready to clone.
    Literal(Value),
    /// A string that is exactly one reference: the value keeps its type.
    Exact(Ref),
    /// A string mixing text and references.
    Text(Box<[Part]>),
    Array(Box<[Node]>),
    Object(Box<[(String, Node)]>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(Box<str>),
    Ref(Ref),
}

/// A compiled reference: bound root, parsed segments, and the text for error messages.
#[derive(Debug, Clone, PartialEq)]
struct Ref {
    root: Root,
    segments: Box<[Segment]>,
    text: Box<str>,
}

impl Template {
    /// Produce the value of this template, taking each root's value from `lookup`.
    ///
    /// `lookup(root)` gives the run input or that step's output, or None when it is not
    /// available, which is reported like any other missing path.
    pub fn resolve<'a>(
        &self,
        lookup: &dyn Fn(Root) -> Option<&'a Value>,
    ) -> Result<Value, BadReference> {
        self.node.resolve(lookup)
    }

    /// Every root this template refers to, each once, in order (`Input` first, then steps).
    pub fn roots(&self) -> impl Iterator<Item = Root> + '_ {
        self.roots.iter().copied()
    }

    /// Whether the template has no references, so that it resolves to the same value every time.
    pub fn is_literal(&self) -> bool {
        self.node.is_literal()
    }

    /// Compile `value` found at JSON Pointer `pointer`, binding step ids through `step_index`.
    ///
    /// Malformed references and references to unknown steps are pushed to `problems` at the
    /// pointer of the string holding them; the template returned leaves them out, so that the
    /// rest of the document can still be checked.
    pub(super) fn compile(
        value: &Value,
        pointer: &str,
        step_index: &dyn Fn(&str) -> Option<usize>,
        problems: &mut Vec<Problem>,
    ) -> Template {
        let mut compiler = Compiler {
            step_index,
            problems,
            roots: Vec::new(),
            pointer: pointer.to_owned(),
        };
        let node = compiler.node(value);
        let mut roots = compiler.roots;
        roots.sort_unstable();
        roots.dedup();
        Template {
            node,
            roots: roots.into(),
        }
    }
}

struct Compiler<'c> {
    step_index: &'c dyn Fn(&str) -> Option<usize>,
    problems: &'c mut Vec<Problem>,
    roots: Vec<Root>,
    /// The pointer of the value being compiled; pushed and truncated while walking.
    pointer: String,
}

impl Compiler<'_> {
    fn node(&mut self, value: &Value) -> Node {
        match value {
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                let nodes: Vec<Node> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.child(&i.to_string(), item))
                    .collect();
                if nodes.iter().all(Node::is_literal) {
                    Node::Literal(Value::Array(
                        nodes.into_iter().filter_map(Node::into_literal).collect(),
                    ))
                } else {
                    Node::Array(nodes.into())
                }
            }
            Value::Object(members) => {
                let nodes: Vec<(String, Node)> = members
                    .iter()
                    .map(|(k, v)| (k.clone(), self.child(k, v)))
                    .collect();
                if nodes.iter().all(|(_, n)| n.is_literal()) {
                    let map: Map<String, Value> = nodes
                        .into_iter()
                        .filter_map(|(k, n)| Some((k, n.into_literal()?)))
                        .collect();
                    Node::Literal(Value::Object(map))
                } else {
                    Node::Object(nodes.into())
                }
            }
            other => Node::Literal(other.clone()),
        }
    }

    fn child(&mut self, key: &str, value: &Value) -> Node {
        let len = self.pointer.len();
        push_pointer(&mut self.pointer, key);
        let node = self.node(value);
        self.pointer.truncate(len);
        node
    }

    fn string(&mut self, s: &str) -> Node {
        if !s.contains('$') {
            return Node::Literal(Value::String(s.to_owned()));
        }
        let (pieces, errors) = reference::scan(s);
        // Exactly one reference and nothing around it: the value keeps its JSON type.
        let exact = errors.is_empty() && matches!(pieces.as_slice(), [Piece::Ref(..)]);
        for message in errors {
            self.problems
                .push(Problem::new(self.pointer.clone(), message));
        }
        let mut parts: Vec<Part> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Text(text) => parts.push(Part::Text(text.into())),
                Piece::Ref(text, path) => {
                    if let Some(r) = self.bind(text, path) {
                        parts.push(Part::Ref(r));
                    }
                }
            }
        }
        if exact {
            return match parts.pop() {
                Some(Part::Ref(r)) => Node::Exact(r),
                // An unknown step, already reported; the document will be rejected.
                _ => Node::Literal(Value::Null),
            };
        }
        if parts.iter().any(|p| matches!(p, Part::Ref(_))) {
            return Node::Text(parts.into());
        }
        let text: String = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(&**t),
                Part::Ref(_) => None,
            })
            .collect();
        Node::Literal(Value::String(text))
    }

    /// Bind a parsed path's root to a step index, reporting unknown steps.
    fn bind(&mut self, text: &str, path: Path<'_>) -> Option<Ref> {
        let root = match path.root {
            PathRoot::Input => Root::Input,
            PathRoot::Step(id) => match (self.step_index)(id) {
                Some(i) => Root::Step(i),
                None => {
                    let message = format!("unknown step \"{id}\" in reference ${{{text}}}");
                    self.problems
                        .push(Problem::new(self.pointer.clone(), message));
                    return None;
                }
            },
        };
        self.roots.push(root);
        Some(Ref {
            root,
            segments: path.segments.into(),
            text: text.into(),
        })
    }
}

impl Node {
    fn is_literal(&self) -> bool {
        matches!(self, Node::Literal(_))
    }

    fn into_literal(self) -> Option<Value> {
        match self {
            Node::Literal(v) => Some(v),
            _ => None,
        }
    }

    fn resolve<'a>(
        &self,
        lookup: &dyn Fn(Root) -> Option<&'a Value>,
    ) -> Result<Value, BadReference> {
        Ok(match self {
            Node::Literal(v) => v.clone(),
            Node::Exact(r) => r.get(lookup)?.clone(),
            Node::Text(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Ref(r) => match r.get(lookup)? {
                            Value::String(s) => out.push_str(s),
                            // Value's Display is compact JSON; writing to a String cannot fail.
                            other => {
                                let _ = write!(out, "{other}");
                            }
                        },
                    }
                }
                Value::String(out)
            }
            Node::Array(nodes) => Value::Array(
                nodes
                    .iter()
                    .map(|n| n.resolve(lookup))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, n)| Ok((k.clone(), n.resolve(lookup)?)))
                    .collect::<Result<_, BadReference>>()?,
            ),
        })
    }
}

impl Ref {
    fn get<'a>(
        &self,
        lookup: &dyn Fn(Root) -> Option<&'a Value>,
    ) -> Result<&'a Value, BadReference> {
        let missing = || BadReference {
            path: self.text.to_string(),
        };
        let mut value = lookup(self.root).ok_or_else(missing)?;
        for segment in &self.segments {
            value = match segment {
                Segment::Key(k) => value.as_object().and_then(|o| o.get(&**k)),
                Segment::Index(i) => value.as_array().and_then(|a| a.get(*i)),
            }
            .ok_or_else(missing)?;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
