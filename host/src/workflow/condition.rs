//! `when` conditions: CEL expressions (the `cel` crate) over the run's input
//! and the steps they name, compiled at validation and evaluated when the
//! step's dependencies have ended.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use serde_json::Value;

use super::{Problem, cut, quoted};

/// Longest `when` expression, in bytes (fixed): it is parsed at every
/// validation and its parse must stay small.
pub const MAX_CONDITION_BYTES: usize = 4096;

/// Deepest nesting of a `when` expression (fixed), so that no expression can
/// exhaust the stack of the thread that parses or evaluates it.
const MAX_CONDITION_DEPTH: usize = 32;

/// A compiled `when` expression.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<cel::Program>,
    /// The steps the expression names, by index, ascending.
    steps: Vec<usize>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .field("steps", &self.steps)
            .finish()
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// What a condition sees of one step it names.
#[derive(Debug, Clone)]
pub struct StepFacts<'a> {
    pub output: &'a Value,
    /// `succeeded`, `failed` or `skipped`.
    pub status: &'a str,
    pub error: Option<Value>,
}

/// What a condition is evaluated over: the run's input and the steps it names.
pub struct ConditionInput<'a> {
    pub input: &'a Value,
    /// By step id.
    pub steps: HashMap<&'a str, StepFacts<'a>>,
}

impl Condition {
    /// Compiles `source`, found at `pointer`; every syntax error and every
    /// unknown step or variable is a problem at `pointer`.
    pub(super) fn compile(
        source: &str,
        pointer: &str,
        step_index: &dyn Fn(&str) -> Option<usize>,
        problems: &mut Vec<Problem>,
    ) -> Option<Condition> {
        if source.len() > MAX_CONDITION_BYTES {
            problems.push(Problem::new(
                pointer,
                format!("the expression is longer than {MAX_CONDITION_BYTES} bytes"),
            ));
            return None;
        }
        if nesting(source) > MAX_CONDITION_DEPTH {
            problems.push(Problem::new(
                pointer,
                format!("the expression nests deeper than {MAX_CONDITION_DEPTH} levels"),
            ));
            return None;
        }
        let program = match cel::Program::compile(source) {
            Ok(program) => program,
            Err(errors) => {
                let message = errors
                    .errors
                    .iter()
                    .map(|e| e.msg.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                problems.push(Problem::new(
                    pointer,
                    format!("invalid CEL expression {}: {message}", quoted(source)),
                ));
                return None;
            }
        };
        let mut names = Names::default();
        names.walk(program.expression(), &mut Vec::new());
        let before = problems.len();
        let mut steps = BTreeSet::new();
        for id in &names.steps {
            match step_index(id) {
                Some(i) => {
                    steps.insert(i);
                }
                None => problems.push(Problem::new(
                    pointer,
                    format!("unknown step {} in the condition", quoted(id)),
                )),
            }
        }
        for name in &names.unknown {
            problems.push(Problem::new(
                pointer,
                format!(
                    "unknown variable {} in the condition (known: input, steps.<id>.output, steps.<id>.status, steps.<id>.error)",
                    quoted(name)
                ),
            ));
        }
        if names.nested {
            problems.push(Problem::new(
                pointer,
                "a comprehension (all, exists, exists_one, map, filter) may not hold another",
            ));
        }
        if names.bare_steps {
            problems.push(Problem::new(
                pointer,
                "name a step as steps.<id>, e.g. steps.price.output.total",
            ));
        }
        (problems.len() == before).then(|| Condition {
            source: source.to_owned(),
            program: Arc::new(program),
            steps: steps.into_iter().collect(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The steps the expression names, by index, ascending.
    pub fn steps(&self) -> &[usize] {
        &self.steps
    }

    /// Evaluates the condition: Ok(true) runs the step, Ok(false) skips it,
    /// Err says why it could not be evaluated (the step is skipped too).
    pub fn evaluate(&self, facts: &ConditionInput<'_>) -> Result<bool, String> {
        let mut context = cel::Context::default();
        let input = cel::to_value(facts.input).map_err(|e| e.to_string())?;
        context.add_variable_from_value("input", input);
        let steps: HashMap<String, HashMap<String, Value>> = facts
            .steps
            .iter()
            .map(|(id, f)| {
                let mut fields = HashMap::new();
                fields.insert("output".to_owned(), f.output.clone());
                fields.insert("status".to_owned(), Value::String(f.status.to_owned()));
                fields.insert("error".to_owned(), f.error.clone().unwrap_or(Value::Null));
                ((*id).to_owned(), fields)
            })
            .collect();
        let steps = cel::to_value(steps).map_err(|e| e.to_string())?;
        context.add_variable_from_value("steps", steps);
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the condition gave {}, not true or false",
                cut(&format!("{other:?}"))
            )),
            Err(e) => Err(format!("the condition could not be evaluated: {e}")),
        }
    }
}

/// How deeply brackets nest in `source`, strings aside.
fn nesting(source: &str) -> usize {
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The names an expression uses.
#[derive(Default)]
struct Names {
    steps: BTreeSet<String>,
    unknown: BTreeSet<String>,
    /// `steps` used other than as `steps.<id>`.
    bare_steps: bool,
    /// Comprehensions around the part being walked.
    depth: usize,
    /// A comprehension inside another: refused, since its cost is the
    /// product of two lists' sizes.
    nested: bool,
}

impl Names {
    /// Walks `e`; `bound` holds the variables of the comprehensions around it.
    fn walk(&mut self, e: &IdedExpr, bound: &mut Vec<String>) {
        match &e.expr {
            Expr::Ident(name) => {
                if bound.iter().any(|b| b == name) || name == "input" {
                    return;
                }
                if name == "steps" {
                    self.bare_steps = true;
                } else if !is_type_name(name) {
                    self.unknown.insert(name.clone());
                }
            }
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && root == "steps"
                    && !bound.iter().any(|b| b == "steps")
                {
                    self.steps.insert(select.field.clone());
                    return;
                }
                self.walk(&select.operand, bound);
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target, bound);
                }
                for arg in &call.args {
                    self.walk(arg, bound);
                }
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range, bound);
                self.walk(&c.accu_init, bound);
                self.depth += 1;
                self.nested |= self.depth > 1;
                let len = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                self.walk(&c.loop_cond, bound);
                self.walk(&c.loop_step, bound);
                self.walk(&c.result, bound);
                bound.truncate(len);
                self.depth -= 1;
            }
            Expr::List(list) => {
                for item in &list.elements {
                    self.walk(item, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        self.walk(&m.key, bound);
                        self.walk(&m.value, bound);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.walk(&f.value, bound);
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

/// Names CEL knows by itself (type names used as values, as in `type(x) == int`).
fn is_type_name(name: &str) -> bool {
    matches!(
        name,
        "int"
            | "uint"
            | "double"
            | "bool"
            | "string"
            | "bytes"
            | "list"
            | "map"
            | "null_type"
            | "type"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(source: &str) -> Result<Condition, Vec<Problem>> {
        let index = |id: &str| ["price", "check"].iter().position(|s| *s == id);
        let mut problems = Vec::new();
        let c = Condition::compile(source, "/steps/2/when", &index, &mut problems);
        c.ok_or(problems)
    }

    fn facts<'a>(input: &'a Value, output: &'a Value, status: &'a str) -> ConditionInput<'a> {
        let mut steps = HashMap::new();
        steps.insert(
            "price",
            StepFacts {
                output,
                status,
                error: None,
            },
        );
        ConditionInput { input, steps }
    }

    #[test]
    fn a_condition_reads_input_and_step_outputs() {
        let c = compile("steps.price.output.total > 1000 && input.vip == false").unwrap();
        assert_eq!(c.steps(), &[0]);
        let input = json!({ "vip": false });
        let big = json!({ "total": 1500 });
        let small = json!({ "total": 10 });
        assert_eq!(c.evaluate(&facts(&input, &big, "succeeded")), Ok(true));
        assert_eq!(c.evaluate(&facts(&input, &small, "succeeded")), Ok(false));
        let status = compile("steps.price.status == 'skipped'").unwrap();
        assert_eq!(status.evaluate(&facts(&input, &small, "skipped")), Ok(true));
    }

    #[test]
    fn an_evaluation_error_or_a_non_boolean_is_an_error() {
        let input = json!({});
        let out = json!({ "total": 1 });
        let missing = compile("steps.price.output.nope > 1").unwrap();
        assert!(missing.evaluate(&facts(&input, &out, "succeeded")).is_err());
        let number = compile("steps.price.output.total").unwrap();
        let err = number
            .evaluate(&facts(&input, &out, "succeeded"))
            .unwrap_err();
        assert!(err.contains("not true or false"), "{err}");
    }

    #[test]
    fn syntax_errors_unknown_steps_and_unknown_names_are_problems() {
        let problems = compile("steps.price.output.total >").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "/steps/2/when");
        assert!(problems[0].message.contains("invalid CEL"), "{problems:?}");
        let problems = compile("steps.nope.output == 1").unwrap_err();
        assert!(problems[0].message.contains("unknown step \"nope\""));
        let problems = compile("inptu.x == 1").unwrap_err();
        assert!(problems[0].message.contains("unknown variable \"inptu\""));
        // Comprehension variables are known inside their comprehension.
        assert!(compile("input.items.all(x, x > 1)").is_ok());
        // One inside another costs the product of two lists: refused.
        let problems = compile("input.a.all(x, input.b.exists(y, x == y))").unwrap_err();
        assert!(
            problems[0].message.contains("may not hold another"),
            "{problems:?}"
        );
    }

    #[test]
    fn deep_or_long_expressions_are_refused_before_parsing() {
        let deep = format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(compile(&deep).unwrap_err()[0].message.contains("longer"));
        let deep = format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(compile(&deep).unwrap_err()[0].message.contains("nests"));
        let quoted_brackets = format!("'{}' == input.s", "(".repeat(100));
        assert!(compile(&quoted_brackets).is_ok());
    }
}
