//! Templates: JSON values with `${...}` references, compiled once and resolved per run.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::reference::{self, Path, PathRoot, Piece, Segment};
use super::{Problem, cut, push_pointer, quoted};

/// Where a reference starts: the run's input or a step's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Root {
    /// `${input...}`: the run's input.
    Input,
    /// `${steps.<id>.output...}`: the output of the step at this index of `Workflow::steps`.
    Step(usize),
    /// `${item...}`: the item a `for_each` step runs for.
    Item,
    /// `${index}`: that item's position in its list, from 0.
    Index,
}

/// What a lookup gives for a step that ended without an output (skipped, or
/// failed with `on_error: continue`): a reference to it, or to any path
/// below it, resolves to `null`. Recognised by address, so a real `null`
/// output keeps its meaning.
pub static ABSENT: Value = Value::Null;

/// A reference whose path does not exist at run time (the step fails with `bad_reference`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reference ${{{path}}} does not exist")]
pub struct BadReference {
    /// The path as written, e.g. `steps.parse.output.lines[3]`.
    pub path: String,
}

/// Why a template could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    BadReference(#[from] BadReference),
    /// The value would be larger than the budget, as compact JSON; it was not built.
    #[error("the resolved value would be larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Bytes of compact JSON a resolution may still produce.
struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    fn charge(&mut self, bytes: usize) -> Result<(), ResolveError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(ResolveError::TooLarge { limit: self.limit }),
        }
    }

    /// Charges the compact JSON size of `value`, looking at no more of it
    /// than the budget allows.
    fn charge_value(&mut self, value: &Value) -> Result<(), ResolveError> {
        match json_size(value, self.left) {
            Some(size) => self.charge(size),
            None => Err(ResolveError::TooLarge { limit: self.limit }),
        }
    }
}

/// The size of `value` as compact JSON, or None as soon as it passes `limit`.
pub fn json_size(value: &Value, limit: usize) -> Option<usize> {
    fn walk(value: &Value, total: &mut usize, limit: usize) -> Option<()> {
        let add = |total: &mut usize, n: usize| {
            *total = total.checked_add(n).filter(|t| *t <= limit)?;
            Some(())
        };
        match value {
            Value::Null => add(total, 4),
            Value::Bool(b) => add(total, if *b { 4 } else { 5 }),
            Value::Number(n) => add(total, number_len(n)),
            Value::String(s) => add(total, string_size(s)),
            Value::Array(items) => {
                add(total, 2 + items.len().saturating_sub(1))?;
                items.iter().try_for_each(|v| walk(v, total, limit))
            }
            Value::Object(members) => {
                add(total, 2 + members.len().saturating_sub(1))?;
                members.iter().try_for_each(|(k, v)| {
                    add(total, string_size(k) + 1)?;
                    walk(v, total, limit)
                })
            }
        }
    }
    let mut total = 0;
    walk(value, &mut total, limit)?;
    Some(total)
}

fn number_len(n: &serde_json::Number) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = write!(count, "{n}");
    count.0
}

/// The size of `s` as a JSON string, quotes and escapes included.
fn string_size(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
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
    /// Produce the value of this template, taking each root's value from `lookup`, as long as
    /// it is at most `limit` bytes of compact JSON.
    ///
    /// `lookup(root)` gives the run input or that step's output, or None when it is not
    /// available, which is reported like any other missing path. The size is counted while
    /// resolving: a value over the limit is never built, however often it is referenced.
    pub fn resolve_within<'a>(
        &self,
        lookup: &dyn Fn(Root) -> Option<&'a Value>,
        limit: usize,
    ) -> Result<Value, ResolveError> {
        let mut budget = Budget { left: limit, limit };
        self.node.resolve(lookup, &mut budget)
    }

    /// [`Template::resolve_within`] without a size limit, for tests.
    #[cfg(test)]
    pub fn resolve<'a>(
        &self,
        lookup: &dyn Fn(Root) -> Option<&'a Value>,
    ) -> Result<Value, BadReference> {
        self.resolve_within(lookup, usize::MAX)
            .map_err(|e| match e {
                ResolveError::BadReference(b) => b,
                ResolveError::TooLarge { .. } => unreachable!("no limit"),
            })
    }

    /// Every root this template refers to, each once, in order (`Input` first, then steps).
    pub fn roots(&self) -> impl Iterator<Item = Root> + '_ {
        self.roots.iter().copied()
    }

    /// Whether the template is a string that is exactly one reference.
    pub fn is_reference(&self) -> bool {
        matches!(self.node, Node::Exact(_))
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
        Self::compile_in(value, pointer, step_index, false, problems)
    }

    /// [`Template::compile`] where `${item}` and `${index}` may be used
    /// when `items` is true (the input of a `for_each` step).
    pub(super) fn compile_in(
        value: &Value,
        pointer: &str,
        step_index: &dyn Fn(&str) -> Option<usize>,
        items: bool,
        problems: &mut Vec<Problem>,
    ) -> Template {
        let mut compiler = Compiler {
            step_index,
            items,
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
    /// Whether `${item}` and `${index}` have a meaning here.
    items: bool,
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
            PathRoot::Item | PathRoot::Index if !self.items => {
                let message = format!(
                    "${{{}}} is only known in the input of a step with for_each",
                    cut(text)
                );
                self.problems
                    .push(Problem::new(self.pointer.clone(), message));
                return None;
            }
            PathRoot::Item => Root::Item,
            PathRoot::Index => Root::Index,
            PathRoot::Step(id) => match (self.step_index)(id) {
                Some(i) => Root::Step(i),
                None => {
                    let message = format!(
                        "unknown step {} in reference ${{{}}}",
                        quoted(id),
                        cut(text)
                    );
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
        budget: &mut Budget,
    ) -> Result<Value, ResolveError> {
        Ok(match self {
            Node::Literal(v) => {
                budget.charge_value(v)?;
                v.clone()
            }
            Node::Exact(r) => {
                let value = r.get(lookup)?;
                budget.charge_value(value)?;
                value.clone()
            }
            Node::Text(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => {
                            budget.charge(t.len())?;
                            out.push_str(t);
                        }
                        Part::Ref(r) => match r.get(lookup)? {
                            Value::String(s) => {
                                budget.charge(s.len())?;
                                out.push_str(s);
                            }
                            // Value's Display is compact JSON; writing to a String cannot fail.
                            other => {
                                budget.charge_value(other)?;
                                let _ = write!(out, "{other}");
                            }
                        },
                    }
                }
                // The text was charged as it grew; now its quotes and escapes.
                budget.charge(string_size(&out) - out.len())?;
                Value::String(out)
            }
            Node::Array(nodes) => {
                budget.charge(2 + nodes.len().saturating_sub(1))?;
                Value::Array(
                    nodes
                        .iter()
                        .map(|n| n.resolve(lookup, budget))
                        .collect::<Result<_, _>>()?,
                )
            }
            Node::Object(members) => {
                budget.charge(2 + members.len().saturating_sub(1))?;
                Value::Object(
                    members
                        .iter()
                        .map(|(k, n)| {
                            budget.charge(string_size(k) + 1)?;
                            Ok((k.clone(), n.resolve(lookup, budget)?))
                        })
                        .collect::<Result<_, ResolveError>>()?,
                )
            }
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
        if std::ptr::eq(value, &ABSENT) {
            return Ok(&ABSENT);
        }
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
