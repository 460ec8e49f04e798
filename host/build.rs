//! Builds the components in `components/` for `wasm32-wasip2` and writes
//! `$OUT_DIR/components.rs`, which names them (included by `src/bundled.rs`).
//!
//! The nested build uses its own workspace and target directory,
//! `components/target`, in release mode whatever the outer profile is, so
//! it is cached across host builds, profiles and `cargo test` runs.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const TARGET: &str = "wasm32-wasip2";

/// Component directories: `examples` are bundled into the binary, `hostile`
/// ones only exist for tests and benchmarks.
const GROUPS: [&str; 2] = ["examples", "hostile"];

/// One member of the components workspace.
struct Member {
    group: &'static str,
    name: String,
    version: String,
    wasm: PathBuf,
}

fn main() {
    let host = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = host.parent().expect("host/ sits in the repository root");
    let components = repo.join("components");
    let target_dir = components.join("target");

    watch(repo, &components);
    let members = discover(&components, &target_dir);
    build(&components, &target_dir);
    for member in &members {
        assert!(
            member.wasm.is_file(),
            "the components build succeeded but did not produce {}",
            member.wasm.display()
        );
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let code = generate(&members);
    fs::write(out.join("components.rs"), code).expect("write components.rs");
}

/// Reruns this script when a component, the SDK or the WIT changes, and
/// only then: `components/target` is never watched.
fn watch(repo: &Path, components: &Path) {
    let mut paths = vec![
        components.join("Cargo.toml"),
        components.join("Cargo.lock"),
        repo.join("sdk/Cargo.toml"),
        repo.join("sdk/src"),
        repo.join("wit"),
    ];
    // Cargo scans a watched directory recursively, so watching each group
    // also notices a component being added or removed.
    paths.extend(GROUPS.iter().map(|group| components.join(group)));
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Every `components/<group>/<dir>` with a `Cargo.toml`, sorted by name.
fn discover(components: &Path, target_dir: &Path) -> Vec<Member> {
    let workspace = read_manifest(&components.join("Cargo.toml"));
    let release = target_dir.join(TARGET).join("release");
    let mut members = Vec::new();
    for group in GROUPS {
        let Ok(entries) = fs::read_dir(components.join(group)) else {
            continue;
        };
        for entry in entries {
            let dir = entry.expect("read a components directory").path();
            let manifest = dir.join("Cargo.toml");
            if manifest.is_file() {
                members.push(member(group, &manifest, &workspace, &release));
            }
        }
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members
}

fn member(group: &'static str, manifest: &Path, workspace: &toml::Table, release: &Path) -> Member {
    let doc = read_manifest(manifest);
    let package = doc.get("package").and_then(|p| p.as_table());
    let field = |key: &str| package.and_then(|p| p.get(key));
    let name = field("name")
        .and_then(|n| n.as_str())
        .unwrap_or_else(|| panic!("{}: no package.name", manifest.display()))
        .to_owned();
    let version = match field("version") {
        Some(toml::Value::String(version)) => version.clone(),
        // `version.workspace = true`
        Some(toml::Value::Table(_)) => workspace
            .get("workspace")
            .and_then(|w| w.get("package"))
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{}: no workspace.package.version", manifest.display()))
            .to_owned(),
        // Cargo's default for a package without a version.
        _ => "0.0.0".to_owned(),
    };
    let lib_name = doc
        .get("lib")
        .and_then(|lib| lib.get("name"))
        .and_then(|n| n.as_str())
        .map_or_else(|| name.replace('-', "_"), str::to_owned);
    Member {
        group,
        wasm: release.join(format!("{lib_name}.wasm")),
        name,
        version,
    }
}

fn read_manifest(path: &Path) -> toml::Table {
    let text =
        fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    text.parse()
        .unwrap_or_else(|err| panic!("parse {}: {err}", path.display()))
}

/// Runs the nested `cargo build` of the components workspace.
fn build(components: &Path, target_dir: &Path) {
    ensure_target(components);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        // So rustup picks the repository's rust-toolchain.toml.
        .current_dir(components)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(components.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // Cargo sets these for this script (or the user set them for the outer
    // build); passed on they would point the nested build at the host's
    // target dir, flags, wrappers or profile. The jobserver (CARGO_MAKEFLAGS),
    // PATH, HOME and RUSTUP_* stay, so both builds share one set of cores
    // and one toolchain.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if leaks_into_nested_build(key) {
            command.env_remove(key);
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("could not run cargo for the components: {err}"));
    if !output.status.success() {
        panic!(
            "building the components in {} for {TARGET} failed ({}).\n\
             Is the target installed? `rustup target add {TARGET}`\n\n{}",
            components.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Adds the wasm target through rustup when it is missing, so that a fresh
/// machine with only rustup and the pinned toolchain builds without a manual step.
fn ensure_target(components: &Path) {
    let installed = Command::new("rustup")
        .current_dir(components)
        .args(["target", "list", "--installed"])
        .output();
    let Ok(installed) = installed else {
        return; // no rustup: the toolchain manages its targets some other way
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .current_dir(components)
        .args(["target", "add", TARGET])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        println!("cargo:warning=`rustup target add {TARGET}` failed; the build below will say why");
    }
}

fn leaks_into_nested_build(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_LINKER",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "NUM_JOBS",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_PROFILE_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
    ];
    EXACT.contains(&key) || PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

/// The source of `components.rs`.
fn generate(members: &[Member]) -> String {
    let mut code = String::from(
        "/// A component bundled into the `weft` binary.\n\
         #[derive(Debug, Clone, Copy)]\n\
         pub struct Bundled {\n\
         \x20   /// The component's name, as in `name@version` references.\n\
         \x20   pub name: &'static str,\n\
         \x20   /// Its semantic version.\n\
         \x20   pub version: &'static str,\n\
         \x20   /// The component's bytes (`wasm32-wasip2`).\n\
         \x20   pub wasm: &'static [u8],\n\
         }\n\n\
         /// The example components (components/examples), embedded with include_bytes!.\n\
         pub const EXAMPLES: &[Bundled] = &[\n",
    );
    for member in members.iter().filter(|m| m.group == "examples") {
        writeln!(
            code,
            "    Bundled {{ name: {:?}, version: {:?}, wasm: include_bytes!({:?}) }},",
            member.name,
            member.version,
            member.wasm.display().to_string()
        )
        .unwrap();
    }
    code.push_str(
        "];\n\n\
         /// Absolute paths of every built component, examples and hostile ones, for tests and benchmarks.\n\
         pub mod paths {\n",
    );
    for member in members {
        writeln!(
            code,
            "    /// `components/{}/{}`, version {}.\n    pub const {}: &str = {:?};",
            member.group,
            member.name,
            member.version,
            member.name.replace('-', "_").to_uppercase(),
            member.wasm.display().to_string()
        )
        .unwrap();
    }
    code.push_str("}\n");
    code
}
