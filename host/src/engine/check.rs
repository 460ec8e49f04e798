//! Checking a component at publish time without compiling its code: the
//! bytes are validated, then a stub of the component, the same in every
//! type, import and export but with each function body replaced by
//! `unreachable`, is compiled (trivially) and linked against the real
//! linker. That is wasmtime's own type check, at a fraction of the cost of
//! compiling the component's code, which happens later, in the background.

use std::collections::BTreeSet;

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, ReencodeComponent};
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use super::ComponentError;

/// The WIT the host links, as `package ... ;` and `interface ... {` lines
/// say; `wasi:http/incoming-handler` is the one interface of these it does not.
const LINKED_WIT: &[&str] = &[
    include_str!("../../../wit/step.wit"),
    include_str!("../../../wit/0.1.0/step.wit"),
    include_str!("../../../wit/deps/cli.wit"),
    include_str!("../../../wit/deps/clocks.wit"),
    include_str!("../../../wit/deps/filesystem.wit"),
    include_str!("../../../wit/deps/http.wit"),
    include_str!("../../../wit/deps/io.wit"),
    include_str!("../../../wit/deps/random.wit"),
    include_str!("../../../wit/deps/sockets.wit"),
];
const NOT_LINKED: &[&str] = &["wasi:http/incoming-handler"];

/// Every interface the host links, as `namespace:package/interface` with
/// the version's compatible part (`0.2`, `1`).
pub(super) fn linked_interfaces() -> BTreeSet<String> {
    let mut linked = BTreeSet::new();
    for wit in LINKED_WIT {
        let mut package = None;
        for line in wit.lines().map(str::trim) {
            if let Some(p) = line.strip_prefix("package ") {
                package = Some(p.trim_end_matches(';').trim().to_string());
            } else if let (Some(name), Some(package)) = (line.strip_prefix("interface "), &package)
            {
                let name = name.trim_end_matches('{').trim();
                let (pkg, version) = package.split_once('@').unwrap_or((package, ""));
                let interface = format!("{pkg}/{name}");
                if !NOT_LINKED.contains(&interface.as_str()) {
                    linked.insert(format!("{interface}@{}", compatible(version)));
                }
            }
        }
    }
    linked
}

/// The part of a version that must match: the major version, or for 0.x the minor too.
fn compatible(version: &str) -> String {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}"),
        (Some(major), _) => major.to_string(),
        _ => String::new(),
    }
}

/// The top-level imports of a component the host does not link, by name.
pub(super) fn unlinked_imports(bytes: &[u8], linked: &BTreeSet<String>) -> Vec<String> {
    let mut missing = Vec::new();
    // Nested modules and components come inline, between their section and
    // their `End`: only the outermost component's imports reach the linker.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader.into_iter().flatten() {
                    // Type imports (`(eq ...)` to a type of an imported
                    // interface) need nothing of the linker.
                    if matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        continue;
                    }
                    let name = import.name.name;
                    let (interface, version) = name.split_once('@').unwrap_or((name, ""));
                    if !linked.contains(&format!("{interface}@{}", compatible(version))) {
                        missing.push(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    missing
}

/// What to do about an import the host does not link.
pub(super) fn fix_for(import: &str) -> &'static str {
    if import.starts_with("wasi:http/") {
        "a step is called through its `run` export, not as an HTTP handler: build it against world \
         weft:step/step@0.2.0 (for componentize-js, without the `fetch-event` feature)"
    } else if import.starts_with("wasi:") {
        "Weft links the wasi 0.2 interfaces of cli, clocks, filesystem, io, random, sockets and \
         http (types, outgoing-handler): build against wasi 0.2 and drop what needs the rest"
    } else if import.starts_with("weft:step/") {
        "Weft serves weft:step 0.1.0 and 0.2.0: build against one of them (wit/ in the Weft repository)"
    } else {
        "build the component against world weft:step/step@0.2.0 only, which the host provides"
    }
}

/// Validates the component and returns its stub: everything kept but the
/// code of its functions, each of which becomes `unreachable`.
pub(super) fn stub(bytes: &[u8]) -> Result<Vec<u8>, ComponentError> {
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| ComponentError::Invalid(e.to_string()))?;
    let mut component = wasm_encoder::Component::new();
    Stub.parse_component(&mut component, Parser::new(0), bytes)
        .map_err(|e| ComponentError::Invalid(format!("cannot read the component: {e}")))?;
    Ok(component.finish())
}

struct Stub;

impl Reencode for Stub {
    type Error = std::convert::Infallible;

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        _func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let mut body = wasm_encoder::Function::new([]);
        body.instruction(&wasm_encoder::Instruction::Unreachable);
        body.instruction(&wasm_encoder::Instruction::End);
        code.function(&body);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        _module: &mut wasm_encoder::Module,
        _section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        // Names and debug information: nothing a type check reads.
        Ok(())
    }
}

impl ReencodeComponent for Stub {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linked_interfaces_are_read_from_the_wit_the_host_links() {
        let linked = linked_interfaces();
        for name in [
            "weft:step/host@0.1",
            "weft:step/host@0.2",
            "weft:step/secrets@0.2",
            "wasi:http/outgoing-handler@0.2",
            "wasi:http/types@0.2",
            "wasi:io/poll@0.2",
            "wasi:cli/stdout@0.2",
            "wasi:sockets/tcp@0.2",
        ] {
            assert!(linked.contains(name), "{name}: {linked:?}");
        }
        assert!(!linked.contains("wasi:http/incoming-handler@0.2"));
        assert!(!linked.contains("weft:step/secrets@0.1"));
    }

    #[test]
    fn versions_match_on_their_compatible_part() {
        assert_eq!(compatible("0.2.3"), "0.2");
        assert_eq!(compatible("0.2.12"), "0.2");
        assert_eq!(compatible("1.4.0"), "1");
        assert_eq!(compatible(""), "");
    }
}
