//! The README's walk-through, run as written against a real server.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::server::{Server, clear_env};

/// The shell commands between the walk-through markers of README.md.
fn walkthrough(readme: &str) -> String {
    let start = readme
        .find("<!-- walkthrough:begin -->")
        .expect("README has a walk-through");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("the walk-through ends");
    let mut script = String::new();
    let mut inside = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            inside = !inside;
        } else if inside {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

#[test]
fn the_readme_walk_through_works_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let server = Server::start();
    // The README talks to the default address; this server has its own port.
    let script = walkthrough(&readme).replace("http://127.0.0.1:8080", &server.url);
    let mut bash = Command::new("bash");
    clear_env(&mut bash);
    let out = bash
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&root)
        // Where a default install keeps its data: the server's data directory.
        .env("XDG_DATA_HOME", server.scratch())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walk-through failed:\n{stdout}\n{stderr}\n{}",
        server.log()
    );

    // Published...
    assert!(
        stdout.starts_with(r#"{"name":"greeter","version":"1.0.0","digest":"sha256:"#),
        "{stdout}"
    );
    // ...watched, each step's changes then the run's end...
    for step in ["shout", "pause", "line"] {
        assert!(
            stdout.contains(&format!(r#""step":"{step}","status":"succeeded""#)),
            "no success event for {step}:\n{stdout}"
        );
    }
    let last_event = stdout
        .lines()
        .rfind(|l| l.starts_with("data: "))
        .expect("events");
    let last_event: Value = serde_json::from_str(&last_event["data: ".len()..]).unwrap();
    assert_eq!(last_event["type"], "run");
    assert_eq!(last_event["status"], "succeeded");
    // ...and read.
    let run_at = stdout.rfind(r#"{"id":"run_"#).expect("the run");
    let run: Value = serde_json::from_str(&stdout[run_at..]).unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"]["line"], "HELLO, ADA! (after 500 ms)");
    assert_eq!(run["steps"]["shout"]["attempts"], 1);
}
