//! The grammar of what goes between `${` and `}`, and of strings holding such references.
//!
//! ```text
//! path    := "input" segment* | "steps" "." step-id ".output" segment*
//!          | "item" segment* | "index"
//! segment := "." key | "[" digits "]"
//! key     := one or more characters other than . [ ] { }
//! ```

/// One step of a path: `.key` into an object or `[n]` into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Key(Box<str>),
    Index(usize),
}

/// Where a path starts, before step ids are bound to step indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathRoot<'a> {
    Input,
    Step(&'a str),
    /// `${item...}`: the item of a `for_each` step.
    Item,
    /// `${index}`: the item's position in its list.
    Index,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Path<'a> {
    pub root: PathRoot<'a>,
    pub segments: Vec<Segment>,
}

/// A piece of a string: literal text (escapes already undone) or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    Text(String),
    /// The path text as written, and what it parsed to.
    Ref(&'a str, Path<'a>),
}

/// Split a string into literal text and references; malformed references become messages.
///
/// Scanning is left to right: `$${` is always a literal `${`, and `${` opens a reference that
/// runs to the next `}`. Malformed references are left out of the pieces.
pub(super) fn scan(s: &str) -> (Vec<Piece<'_>>, Vec<String>) {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            text.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                errors.push(format!("unclosed reference \"{tail}\": missing \"}}\" (write \"$${{\" for a literal \"${{\")"));
                rest = "";
                break;
            };
            let inner = &after[..close];
            match parse_path(inner) {
                Ok(path) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Ref(inner, path));
                }
                Err(why) => errors.push(format!("malformed reference ${{{inner}}}: {why}")),
            }
            rest = &after[close + 1..];
        } else {
            text.push('$');
            rest = &tail[1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    (pieces, errors)
}

/// Parse the text between `${` and `}`.
pub(super) fn parse_path(text: &str) -> Result<Path<'_>, String> {
    const START: &str = "a path starts with \"input\" or \"steps.<id>.output\"";
    if text.is_empty() {
        return Err(format!("empty reference; {START}"));
    }
    let head_end = text.find(['.', '[']).unwrap_or(text.len());
    let (head, rest) = text.split_at(head_end);
    let (root, rest) = match head {
        "input" => (PathRoot::Input, rest),
        "item" => (PathRoot::Item, rest),
        "index" if rest.is_empty() => (PathRoot::Index, rest),
        "index" => return Err("\"index\" is a number: nothing can follow it".to_owned()),
        "steps" => {
            let Some(after_dot) = rest.strip_prefix('.') else {
                return Err("\"steps\" must be followed by \".<id>.output\"".to_owned());
            };
            let id_end = after_dot.find(['.', '[']).unwrap_or(after_dot.len());
            let (id, after_id) = after_dot.split_at(id_end);
            if id.is_empty() {
                return Err("missing step id after \"steps.\"".to_owned());
            }
            let Some(after_output) = after_id.strip_prefix(".output") else {
                return Err(format!(
                    "a step's value is \"steps.{id}.output\"; \".output\" is missing"
                ));
            };
            // `.outputs` is a different key, not `.output` followed by `s`.
            if !(after_output.is_empty() || after_output.starts_with(['.', '['])) {
                return Err(format!(
                    "a step's value is \"steps.{id}.output\"; \".output\" is missing"
                ));
            }
            (PathRoot::Step(id), after_output)
        }
        _ => return Err(format!("unknown root \"{head}\"; {START}")),
    };
    Ok(Path {
        root,
        segments: parse_segments(rest)?,
    })
}

fn parse_segments(mut rest: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    while let Some(c) = rest.chars().next() {
        match c {
            '.' => {
                let key_len = rest[1..]
                    .find(['.', '[', ']', '{', '}'])
                    .unwrap_or(rest.len() - 1);
                let key = &rest[1..1 + key_len];
                if key.is_empty() {
                    return Err("empty key after \".\"".to_owned());
                }
                segments.push(Segment::Key(key.into()));
                rest = &rest[1 + key_len..];
            }
            '[' => {
                let Some(close) = rest.find(']') else {
                    return Err("\"[\" without \"]\"".to_owned());
                };
                let digits = &rest[1..close];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "\"[{digits}]\" is not an array index (a non-negative integer)"
                    ));
                }
                let index = digits
                    .parse()
                    .map_err(|_| format!("array index {digits} is too large"))?;
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
            }
            other => {
                return Err(format!(
                    "unexpected \"{other}\"; expected \".key\" or \"[index]\""
                ));
            }
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Segment {
        Segment::Key(k.into())
    }

    #[test]
    fn parses_input_and_step_paths() {
        assert_eq!(
            parse_path("input").unwrap(),
            Path {
                root: PathRoot::Input,
                segments: vec![]
            }
        );
        assert_eq!(
            parse_path("input.order.lines[3].sku").unwrap(),
            Path {
                root: PathRoot::Input,
                segments: vec![key("order"), key("lines"), Segment::Index(3), key("sku")]
            }
        );
        assert_eq!(
            parse_path("steps.parse.output[0][12]").unwrap(),
            Path {
                root: PathRoot::Step("parse"),
                segments: vec![Segment::Index(0), Segment::Index(12)]
            }
        );
        assert_eq!(
            parse_path("steps.a-b_c.output.output").unwrap(),
            Path {
                root: PathRoot::Step("a-b_c"),
                segments: vec![key("output")]
            }
        );
        // Keys may hold characters that ids may not.
        assert_eq!(
            parse_path("input.First Name$").unwrap().segments,
            vec![key("First Name$")]
        );
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "",
            "foo",
            "inputs",
            "input.",
            "input..a",
            "input[",
            "input[]",
            "input[x]",
            "input[-1]",
            "input[1.5]",
            "input]",
            "input.a]",
            "input x",
            "steps",
            "steps.",
            "steps.x",
            "steps.x.",
            "steps.x.outputs",
            "steps.x.result",
            "steps..output",
            "steps[0].output",
            "input[99999999999999999999999999]",
            "input.a{b",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} should be malformed");
        }
    }

    #[test]
    fn scan_splits_text_and_references() {
        let (pieces, errors) = scan("total: ${input.a} of ${steps.s.output}!");
        assert!(errors.is_empty());
        assert_eq!(pieces.len(), 5);
        assert_eq!(pieces[0], Piece::Text("total: ".into()));
        assert!(matches!(&pieces[1], Piece::Ref("input.a", _)));
        assert_eq!(pieces[2], Piece::Text(" of ".into()));
        assert!(matches!(&pieces[3], Piece::Ref("steps.s.output", _)));
        assert_eq!(pieces[4], Piece::Text("!".into()));
    }

    #[test]
    fn scan_handles_escapes_and_lone_dollars() {
        let (pieces, errors) = scan("cost $5, literal $${input}, $$ and $");
        assert!(errors.is_empty());
        assert_eq!(
            pieces,
            vec![Piece::Text("cost $5, literal ${input}, $$ and $".into())]
        );
        // Left to right: the first `$$${` has `$` then the escape.
        let (pieces, _) = scan("$$${x}");
        assert_eq!(pieces, vec![Piece::Text("$${x}".into())]);
    }

    #[test]
    fn scan_reports_every_malformed_reference() {
        let (pieces, errors) = scan("${foo} ${input.ok} ${input.} ${steps.x}");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("${foo}"));
        assert!(errors[1].contains("${input.}"));
        assert!(errors[2].contains("${steps.x}"));
        assert!(
            pieces
                .iter()
                .any(|p| matches!(p, Piece::Ref("input.ok", _)))
        );
    }

    #[test]
    fn scan_reports_unclosed() {
        let (_, errors) = scan("a ${input.x");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("unclosed reference"), "{}", errors[0]);
    }
}
