//! The client commands (`weft tenant create`, `publish`, `submit`, `status`)
//! against a real `weft serve`, through the real `weft` binary.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use weft::bundled::paths;

use crate::common::{Exec, output};
use crate::server::{ADMIN_TOKEN, Server, clear_env, free_port};

/// `weft` talking to the server at `url`, with `data_dir` as its data directory.
pub(crate) fn weft(url: &str, data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    clear_env(&mut cmd);
    cmd.env("WEFT_URL", url).env("WEFT_DATA_DIR", data_dir);
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Exec {
    output(cmd.output().expect("run weft"))
}

/// Writes `doc` to a file in `dir` and gives its path.
fn file(dir: &Path, name: &str, doc: &Value) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
    path
}

pub(crate) fn stdout_json(out: &Exec) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    })
}

#[test]
fn a_new_tenant_publishes_submits_waits_and_reads_its_run() {
    let server = Server::start();
    let dir = server.scratch();
    // An empty data directory: every credential must come from the environment.
    let no_files = tempfile::tempdir().unwrap();
    let weft = || weft(&server.url, no_files.path());

    let created = run(weft()
        .args(["tenant", "create", "acme"])
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN));
    assert_eq!(created.code, 0, "{}{}", created.stderr, server.log());
    let tenant = stdout_json(&created);
    assert_eq!(tenant["tenant"], "acme");
    let key = tenant["api_key"].as_str().expect("api_key").to_string();
    assert!(
        created
            .stderr
            .contains(&format!("export WEFT_API_KEY={key}")),
        "{}",
        created.stderr
    );

    let again = run(weft()
        .args(["tenant", "create", "acme"])
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN));
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_eq!(again.error()["error"]["code"], "tenant_exists");

    let not_admin = run(weft()
        .args(["tenant", "create", "other"])
        .env("WEFT_ADMIN_TOKEN", "wrong"));
    assert_eq!(not_admin.code, 2, "{}", not_admin.stderr);
    assert_eq!(not_admin.error()["error"]["code"], "unauthorized");

    let publish = || {
        run(weft()
            .arg("publish")
            .arg(paths::ECHO)
            .args(["--name", "echo", "--version", "1.0.0"])
            .env("WEFT_API_KEY", &key))
    };
    let published = publish();
    assert_eq!(published.code, 0, "{}", published.stderr);
    let component = stdout_json(&published);
    assert_eq!(
        (&component["name"], &component["version"]),
        (&json!("echo"), &json!("1.0.0"))
    );
    assert!(component["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        published.stderr.contains("published echo@1.0.0"),
        "{}",
        published.stderr
    );
    let republished = publish();
    assert_eq!(republished.code, 0, "{}", republished.stderr);
    assert_eq!(stdout_json(&republished)["digest"], component["digest"]);
    assert!(
        republished.stderr.contains("already published"),
        "{}",
        republished.stderr
    );

    let workflow = file(
        dir,
        "greet.json",
        &json!({
            "name": "greet",
            "steps": [
                { "id": "hello", "component": "echo@1.0.0", "input": { "who": "${input.who}" } },
                { "id": "shout", "component": "echo@1", "input": { "again": "${steps.hello.output.who}" } }
            ],
            "output": { "greeting": "${steps.shout.output.again}" }
        }),
    );
    let waited = run(weft()
        .arg("submit")
        .arg(&workflow)
        .args(["--input", r#"{"who": "world"}"#, "--wait"])
        .env("WEFT_API_KEY", &key));
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    let finished = waited.run();
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["tenant"], "acme");
    assert_eq!(finished["output"], json!({ "greeting": "world" }));
    for step in ["hello", "shout"] {
        let progress = waited.stderr.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.starts_with(&[step, "succeeded"])
        });
        assert!(progress, "no progress line for {step}:\n{}", waited.stderr);
    }

    // Without --wait: the id and status, then `status` reads the run.
    let input = file(dir, "input.json", &json!({ "who": "file" }));
    let submit = || {
        run(weft()
            .arg("submit")
            .arg(&workflow)
            .arg("--input")
            .arg(format!("@{}", input.display()))
            .args(["--idempotency-key", "greet-once"])
            .env("WEFT_API_KEY", &key))
    };
    let submitted = submit();
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let accepted = stdout_json(&submitted);
    let id = accepted["id"].as_str().expect("id").to_string();
    assert!(accepted["status"].is_string(), "{accepted}");
    let resubmitted = submit();
    assert_eq!(resubmitted.code, 0, "{}", resubmitted.stderr);
    assert_eq!(
        stdout_json(&resubmitted)["id"],
        json!(id),
        "same idempotency key, same run"
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let view = loop {
        let status = run(weft().args(["status", &id]).env("WEFT_API_KEY", &key));
        assert_eq!(status.code, 0, "{}", status.stderr);
        let view = status.run();
        if view["status"] == "succeeded" {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run did not finish: {view}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(view["id"], json!(id));
    assert_eq!(view["output"], json!({ "greeting": "file" }));

    // Another tenant's component does not exist for acme.
    let foreign = file(
        dir,
        "foreign.json",
        &json!({ "name": "foreign", "steps": [ { "id": "f", "component": "fail@1.0.0" } ] }),
    );
    let refused = run(weft().arg("submit").arg(&foreign).env("WEFT_API_KEY", &key));
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert_eq!(refused.error()["error"]["code"], "invalid_workflow");
}

#[test]
fn the_default_tenant_from_the_data_dir_gets_exit_1_for_a_failed_run_and_2_for_refusals() {
    let server = Server::start();
    let dir = server.scratch();
    // No WEFT_API_KEY: the key comes from the data directory's `api-key` file.
    let weft = || weft(&server.url, &server.data_dir());

    let doomed = file(
        dir,
        "doomed.json",
        &json!({
            "name": "doomed",
            "steps": [
                { "id": "boom", "component": "fail@1.0.0",
                  "input": { "code": "kaput", "message": "on purpose" } },
                { "id": "after", "component": "echo@1.0.0", "input": { "x": "${steps.boom.output}" } }
            ]
        }),
    );
    let failed = run(weft().arg("submit").arg(&doomed).arg("--wait"));
    assert_eq!(failed.code, 1, "{}{}", failed.stderr, server.log());
    let view = failed.run();
    assert_eq!(view["status"], "failed");
    assert_eq!(view["steps"]["boom"]["error"]["code"], "kaput");
    assert_eq!(view["steps"]["after"]["status"], "skipped");
    let line = failed
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("boom") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no failure line:\n{}", failed.stderr));
    assert!(line.contains("kaput: on purpose"), "{line}");

    let invalid = file(
        dir,
        "invalid.json",
        &json!({ "name": "invalid", "steps": [ { "id": "a", "component": "nope@1.0.0" } ] }),
    );
    let refused = run(weft().arg("submit").arg(&invalid).arg("--wait"));
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert_eq!(refused.error()["error"]["code"], "invalid_workflow");
    assert_eq!(refused.problem_paths(), ["/steps/0/component"]);

    let not_json = dir.join("not-json.json");
    std::fs::write(&not_json, "{ nope").unwrap();
    let refused = run(weft().arg("submit").arg(&not_json));
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert_eq!(refused.error()["error"]["code"], "invalid_workflow");

    let unknown = run(weft().args(["status", "run_0000000000000000000000000000"]));
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert_eq!(unknown.error()["error"]["code"], "not_found");

    let bad_key = run(weft()
        .args(["status", "run_0000000000000000000000000000"])
        .env("WEFT_API_KEY", "weft_0000"));
    assert_eq!(bad_key.code, 2, "{}", bad_key.stderr);
    assert_eq!(bad_key.error()["error"]["code"], "unauthorized");
}

#[test]
fn an_unreachable_server_a_missing_key_or_https_exit_3_saying_what_to_do() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let empty = tempfile::tempdir().unwrap();

    let out = run(weft(&url, empty.path())
        .args(["status", "run_x"])
        .env("WEFT_API_KEY", "weft_0000"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    assert!(out.stderr.contains(&url), "{}", out.stderr);
    assert!(out.stderr.contains("weft serve"), "{}", out.stderr);

    let out = run(weft(&url, empty.path()).args(["status", "run_x"]));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("WEFT_API_KEY"), "{}", out.stderr);
    assert!(out.stderr.contains("api-key"), "{}", out.stderr);

    let out = run(weft(&url, empty.path()).args(["tenant", "create", "acme"]));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("WEFT_ADMIN_TOKEN"), "{}", out.stderr);

    let out = run(weft("https://127.0.0.1:1", empty.path())
        .args(["status", "run_x"])
        .env("WEFT_API_KEY", "weft_0000"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("plain http"), "{}", out.stderr);

    let out = run(weft(&url, empty.path())
        .args([
            "publish",
            "/nonexistent/x.wasm",
            "--name",
            "x",
            "--version",
            "1.0.0",
        ])
        .env("WEFT_API_KEY", "weft_0000"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("/nonexistent/x.wasm"), "{}", out.stderr);
}

#[test]
fn templates_listing_cancel_and_limits_from_the_command_line() {
    let server = Server::start();
    let dir = server.scratch();
    let data = server.data_dir();
    let weft = || weft(&server.url, &data);
    let doc = json!({
        "name": "slow",
        "steps": [{ "id": "nap", "component": "sleep@1", "input": { "ms": "${input.ms}" } }],
        "output": "${steps.nap.output.slept_ms}"
    });
    let path = file(dir, "slow.json", &doc);

    let published = run(weft().args(["workflow", "publish"]).arg(&path).args([
        "--name",
        "slow",
        "--version",
        "1.0.0",
    ]));
    assert_eq!(published.code, 0, "{}", published.stderr);
    assert!(
        published.stdout.contains("published workflow slow@1.0.0"),
        "{}",
        published.stdout
    );
    let again = run(weft().args(["workflow", "publish"]).arg(&path).args([
        "--name",
        "slow",
        "--version",
        "1.0.0",
        "--json",
    ]));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(stdout_json(&again)["version"], "1.0.0");
    let listed = run(weft().args(["workflow", "list"]));
    assert!(
        listed.stdout.contains("slow") && listed.stdout.contains("1.0.0"),
        "{}",
        listed.stdout
    );

    // By template name; a file of that name would be read instead.
    let done = run(weft().args(["submit", "slow@^1", "--input", r#"{"ms": 10}"#, "--wait"]));
    assert_eq!(done.code, 0, "{}", done.stderr);
    let finished = stdout_json(&done);
    assert_eq!(finished["workflow_version"], "1.0.0");
    assert_eq!(finished["output"], 10);

    let started = run(weft().args(["submit", "slow@1", "--input", r#"{"ms": 20000}"#]));
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id = stdout_json(&started)["id"].as_str().unwrap().to_string();
    let cancelled = run(weft().args(["cancel", &id]));
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    assert_eq!(cancelled.stdout.trim(), format!("run {id}: cancelled"));
    let twice = run(weft().args(["cancel", &id]));
    assert_eq!(twice.code, 2);
    assert_eq!(twice.error()["error"]["code"], "run_finished");

    let table = run(weft().args(["runs", "--workflow", "slow"]));
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", table.stdout);
    assert_eq!(lines.len(), 3, "a header and two runs:\n{}", table.stdout);
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("cancelled"),
        "{}",
        table.stdout
    );
    let json = run(weft().args(["runs", "--status", "succeeded", "--json"]));
    let runs = stdout_json(&json)["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["workflow"], "slow");
    let bad = run(weft().args(["runs", "--status", "sleepy"]));
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_eq!(bad.error()["error"]["code"], "bad_request");

    let limits = run(weft()
        .args([
            "tenant",
            "limits",
            "default",
            "--set",
            "concurrent_runs=7",
            "--json",
        ])
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN));
    assert_eq!(limits.code, 0, "{}", limits.stderr);
    assert_eq!(stdout_json(&limits)["concurrent_runs"], 7);
    let shown = run(weft()
        .args(["tenant", "limits", "default"])
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN));
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("concurrent_runs") && l.ends_with(" 7")),
        "{}",
        shown.stdout
    );
    let malformed = run(weft()
        .args(["tenant", "limits", "default", "--set", "fuel"])
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN));
    assert_eq!(malformed.code, 2, "{}", malformed.stderr);
}
