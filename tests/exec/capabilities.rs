//! `weft exec` grants what its command line names: the hosts of
//! `--allow-host` (intersected with each step's `http.allow`) and the
//! secrets of `--secret`, which are shown nowhere.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::target::Target;
use crate::common::{components_dir, output, redis, weft};

const SECRET: &str = "exec-secret-9d1c7f";

fn exec(doc: &Value, args: &[&str]) -> crate::common::Exec {
    let redis = redis();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workflow.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let mut cmd: Command = weft();
    cmd.arg("exec")
        .arg(&file)
        .arg("--components")
        .arg(components_dir())
        .args(args);
    if let Some(redis) = &redis {
        cmd.arg("--redis").arg(redis.url());
    }
    output(cmd.output().expect("run weft"))
}

#[test]
fn exec_grants_the_hosts_and_secrets_of_its_command_line() {
    let scratch = tempfile::tempdir().unwrap();
    let target = Target::start(scratch.path());
    let host = format!("127.0.0.1:{}", target.port);
    let doc = json!({ "steps": [
        {"id": "call", "component": "fetch@1", "input": {"url": target.url("/echo-auth")},
         "http": {"allow": [host]}, "secrets": ["api_token"]},
        {"id": "leak", "component": "leak@1", "input": {"secret": "api_token"}, "secrets": ["api_token"]},
        {"id": "old", "component": "oldlog@1", "input": {"message": "from 0.1.0"}},
    ]});
    let secret = format!("api_token={SECRET}");
    let ran = exec(&doc, &["--allow-host", &host, "--secret", &secret]);
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    let run = ran.run();
    assert_eq!(
        run["steps"]["call"]["output"]["body"]["authorization"],
        "Bearer ***"
    );
    assert_eq!(run["steps"]["leak"]["output"]["value"], "***");
    // The component built against 0.1.0 runs beside them, its log included.
    assert_eq!(run["steps"]["old"]["output"]["logged"], 5);
    assert!(
        run["steps"]["old"]["logs"]
            .to_string()
            .contains("from 0.1.0")
    );
    assert!(!ran.stdout.contains(SECRET) && !ran.stderr.contains(SECRET));
    assert!(
        target
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {SECRET}")))
    );

    // Without --allow-host nothing goes out.
    let denied = exec(&doc, &["--secret", &secret]);
    assert_eq!(denied.code, 1, "{}", denied.stderr);
    let run = denied.run();
    assert_eq!(run["steps"]["call"]["error"]["code"], "http_error");
    assert_eq!(target.seen().len(), 1);

    // A secret a step lists must be given.
    let missing = exec(&doc, &["--allow-host", &host]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert_eq!(missing.error()["error"]["code"], "invalid_workflow");
    assert_eq!(
        missing.problem_paths(),
        vec!["/steps/0/secrets/0", "/steps/1/secrets/0"]
    );
}
