//! Names and version requirements of components (`name@requirement`).

use std::borrow::Cow;

use semver::{Version, VersionReq};

/// Longest name or step id, in bytes (the `{0,62}` of the pattern plus the first letter).
const MAX_NAME_LEN: usize = 63;

/// Whether `s` is a valid step id or component name: `^[a-z][a-z0-9_-]{0,62}$`.
pub fn is_valid_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && bytes.len() <= MAX_NAME_LEN
                && rest.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                })
        }
        None => false,
    }
}

/// Parse the requirement after `@` in a component reference.
///
/// A comparator without an operator is read the way people write pins, not the way Cargo does:
/// a full version `1.0.0` means exactly that version (`=1.0.0`), a partial `1.2` means any
/// `1.2.x` (`~1.2`), and a bare major `1` means any `1.x` (`^1`). Everything with an operator
/// (`^`, `~`, `=`, `>=`, `<`, `*`, comma-separated lists) means what it means to the `semver`
/// crate. The rule applies to each comparator of a comma list.
pub fn parse_requirement(s: &str) -> Result<VersionReq, String> {
    if s.trim().is_empty() {
        return Err("empty version requirement".to_owned());
    }
    let normalized: Vec<Cow<'_, str>> = s
        .split(',')
        .map(|part| bare_to_operator(part.trim()))
        .collect();
    VersionReq::parse(&normalized.join(", "))
        .map_err(|e| format!("invalid version requirement \"{s}\": {e}"))
}

/// Give a comparator that starts with a digit the operator the rule above assigns to it.
fn bare_to_operator(part: &str) -> Cow<'_, str> {
    if !part.starts_with(|c: char| c.is_ascii_digit()) {
        return Cow::Borrowed(part);
    }
    if Version::parse(part).is_ok() {
        return Cow::Owned(format!("={part}"));
    }
    let numeric = part
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match part.split('.').count() {
        1 if numeric => Cow::Owned(format!("^{part}")),
        2 if numeric => Cow::Owned(format!("~{part}")),
        // Wildcards (`1.x`, `1.2.*`) and anything malformed: the semver crate decides.
        _ => Cow::Borrowed(part),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(req: &str, version: &str) -> bool {
        parse_requirement(req)
            .unwrap()
            .matches(&Version::parse(version).unwrap())
    }

    #[test]
    fn bare_full_version_is_exact() {
        assert!(matches("1.0.0", "1.0.0"));
        assert!(!matches("1.0.0", "1.0.1"));
        assert!(!matches("1.0.0", "1.1.0"));
        assert_eq!(parse_requirement("1.0.0").unwrap().to_string(), "=1.0.0");
    }

    #[test]
    fn bare_partial_is_tilde() {
        assert!(matches("1.2", "1.2.0"));
        assert!(matches("1.2", "1.2.9"));
        assert!(!matches("1.2", "1.3.0"));
        assert!(!matches("1.2", "1.1.9"));
    }

    #[test]
    fn bare_major_is_caret() {
        assert!(matches("1", "1.0.0"));
        assert!(matches("1", "1.9.3"));
        assert!(!matches("1", "2.0.0"));
        assert!(!matches("1", "0.9.0"));
    }

    #[test]
    fn operators_mean_what_semver_says() {
        assert!(matches("^1.2", "1.9.0"));
        assert!(!matches("^1.2", "1.1.0"));
        assert!(matches("~1.2.3", "1.2.7"));
        assert!(!matches("~1.2.3", "1.3.0"));
        assert!(matches(">=1.0, <2", "1.5.0"));
        assert!(!matches(">=1.0, <2", "2.0.0"));
        assert!(matches("*", "7.1.0"));
        assert!(matches("=2.1.0", "2.1.0"));
        assert!(!matches("=2.1.0", "2.1.1"));
    }

    #[test]
    fn bare_rule_applies_per_comparator() {
        assert!(matches(">=1.0.0, 1.2", "1.2.5"));
        assert!(!matches(">=1.0.0, 1.2", "1.3.0"));
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "", "  ", "latest", "1.0.0.0", "^x", ">=", "1..2", "1.0,", "v1",
        ] {
            assert!(parse_requirement(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn names() {
        for good in ["a", "parse", "a1", "a_b-c", &"a".repeat(63)] {
            assert!(is_valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            "1a",
            "_a",
            "-a",
            "A",
            "aB",
            "a.b",
            "a b",
            "a@1",
            "é",
            &"a".repeat(64),
            "a\n",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
