//! Paths into a JSON value: `a.b[0].c`.

use std::fmt;

use serde_json::{Map, Value};
use weft_sdk::StepError;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed path; empty means the whole value.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(pub Vec<Segment>);

impl Path {
    /// Parses `a.b[0].c`; `[n]` may follow any key or start the path.
    pub fn parse(text: &str) -> Result<Self, StepError> {
        let bad = |why: &str| StepError::bad_input(format!("bad path `{text}`: {why}"));
        let mut segments = Vec::new();
        if text.is_empty() {
            return Ok(Self(segments));
        }
        for (n, part) in text.split('.').enumerate() {
            let (key, mut rest) = match part.find('[') {
                Some(open) => part.split_at(open),
                None => (part, ""),
            };
            if key.is_empty() && (n > 0 || rest.is_empty()) {
                return Err(bad("empty key"));
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_owned()));
            }
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| bad("missing `]`"))?;
                if !rest.starts_with('[') {
                    return Err(bad("text after `]`"));
                }
                let index = rest[1..close]
                    .parse()
                    .map_err(|_| bad("index is not a number"))?;
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
            }
        }
        Ok(Self(segments))
    }

    /// The value at this path, if there is one.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(value, |value, segment| match segment {
                Segment::Key(key) => value.get(key),
                Segment::Index(index) => value.get(index),
            })
    }

    /// Puts `new` at this path inside `target`, creating objects and arrays
    /// (padded with `null`) on the way and replacing what does not fit.
    pub fn set(&self, target: &mut Value, new: Value) {
        let mut slot = target;
        for segment in &self.0 {
            slot = match segment {
                Segment::Key(key) => {
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    let map = slot.as_object_mut().expect("just made an object");
                    map.entry(key.clone()).or_insert(Value::Null)
                }
                Segment::Index(index) => {
                    if !slot.is_array() {
                        *slot = Value::Array(Vec::new());
                    }
                    let items = slot.as_array_mut().expect("just made an array");
                    if items.len() <= *index {
                        items.resize(index + 1, Value::Null);
                    }
                    &mut items[*index]
                }
            };
        }
        *slot = new;
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if n == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_indexes() {
        let path = Path::parse("a.b[0][2].c").unwrap();
        assert_eq!(path.to_string(), "a.b[0][2].c");
        assert_eq!(Path::parse("[1].x").unwrap().0[0], Segment::Index(1));
        for bad in ["a..b", ".a", "a[x]", "a[1", "a[1]b", "a."] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
