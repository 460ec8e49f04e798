//! Shared helpers of the integration tests: the `weft` binary, a directory of
//! the built test components, and one data directory so that every test
//! process reuses the same compiled artifacts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use weft::bundled::paths;

/// Every component the tests use, as `(name, built path)`; each is offered as version 1.0.0.
pub const COMPONENTS: &[(&str, &str)] = &[
    ("echo", paths::ECHO),
    ("noop", paths::NOOP),
    ("pick", paths::PICK),
    ("math", paths::MATH),
    ("text", paths::TEXT),
    ("sleep", paths::SLEEP),
    ("fail", paths::FAIL),
    ("log", paths::LOG),
    ("spin", paths::SPIN),
    ("hog", paths::HOG),
    ("trap", paths::TRAP),
    ("recurse", paths::RECURSE),
    ("badjson", paths::BADJSON),
    ("huge", paths::HUGE),
    ("probe", paths::PROBE),
    ("wrongsig", paths::WRONGSIG),
    ("badimport", paths::BADIMPORT),
    ("span", paths::SPAN),
    ("fetch", paths::FETCH),
    ("leak", paths::LEAK),
    // Built against weft:step@0.1.0 by an earlier Weft, and kept as it was.
    ("oldlog", OLD_LOG),
];

/// The `log` example as built against world `weft:step@0.1.0`, before 0.2.0 existed.
pub const OLD_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/log-0.1.0.wasm"
);

/// The `weft` binary under test.
pub fn weft() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.env("WEFT_DATA_DIR", data_dir())
        .env_remove("WEFT_LOG")
        .env_remove("WEFT_LOG_FORMAT");
    // A collector set in the environment gets no test's spans.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A scratch directory under the target dir, kept between runs so that
/// compiled artifacts are shared by every test (they are keyed by engine
/// fingerprint, so a changed engine never reads a stale one).
pub fn data_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weft-test-data");
        std::fs::create_dir_all(&dir).expect("create test data dir");
        dir
    })
    .clone()
}

/// A directory holding every test component as `<name>@1.0.0.wasm`, made
/// afresh by each test process so it always holds this build's components.
pub fn components_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("weft-components-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create components dir");
        for (name, path) in COMPONENTS {
            let target = dir.path().join(format!("{name}@1.0.0.wasm"));
            std::fs::copy(path, &target).unwrap_or_else(|e| panic!("copy {path}: {e}"));
        }
        dir
    })
    .path()
    .to_path_buf()
}

/// What one `weft exec` produced.
#[derive(Debug)]
pub struct Exec {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    /// The run printed on stdout.
    pub fn run(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a run ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The error document printed on stderr.
    pub fn error(&self) -> Value {
        serde_json::from_str(&self.stderr)
            .unwrap_or_else(|e| panic!("stderr is not an error document ({e}):\n{}", self.stderr))
    }

    /// The `path`s of every validation problem reported.
    pub fn problem_paths(&self) -> Vec<String> {
        self.error()["error"]["details"]
            .as_array()
            .expect("details")
            .iter()
            .map(|d| d["path"].as_str().expect("path").to_string())
            .collect()
    }
}

/// Runs `weft exec` on `workflow` with `input` against the test components.
pub fn exec(workflow: &Value, input: &Value) -> Exec {
    exec_with(workflow, input, &components_dir(), &[])
}

/// Whether the suites run on the Redis backend: `WEFT_TEST_BACKEND=redis`
/// (the default is the embedded backend).
pub fn on_redis() -> bool {
    match std::env::var("WEFT_TEST_BACKEND").as_deref() {
        Ok("redis") => true,
        Ok("memory") | Err(_) => false,
        Ok(other) => panic!("WEFT_TEST_BACKEND={other}: use `memory` or `redis`"),
    }
}

/// A `redis-server` of its own when the suites run on Redis.
pub fn redis() -> Option<weft::testing::RedisServer> {
    on_redis().then(weft::testing::RedisServer::start)
}

/// Runs `weft exec` with a given components dir and extra environment.
pub fn exec_with(workflow: &Value, input: &Value, components: &Path, env: &[(&str, &str)]) -> Exec {
    let redis = redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("workflow.json");
    std::fs::write(&file, serde_json::to_vec(workflow).unwrap()).unwrap();
    let mut cmd = weft();
    cmd.arg("exec")
        .arg(&file)
        .arg("--input")
        .arg(input.to_string())
        .arg("--components")
        .arg(components);
    if let Some(redis) = &redis {
        cmd.arg("--redis").arg(redis.url());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(cmd.output().expect("run weft"))
}

pub fn output(out: Output) -> Exec {
    Exec {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Milliseconds since the epoch of an RFC 3339 timestamp in a run.
pub fn millis(v: &Value) -> u128 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    humantime::parse_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad timestamp {text}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

pub mod otlp;
pub mod target;

/// The Python or JavaScript example component `name` (`fetch-json`,
/// `summarize`), built from source by `scripts/polyglot.sh` on first use in
/// this test process (a no-op when up to date); the test fails if it cannot be built.
pub fn polyglot(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target directory")
            .to_path_buf();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/polyglot.sh");
        let status = Command::new(&script)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run scripts/polyglot.sh");
        assert!(status.success(), "scripts/polyglot.sh failed: {status}");
        target.join("polyglot")
    });
    dir.join(format!("{name}.wasm"))
}
