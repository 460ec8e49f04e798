//! Bytes that cannot be a step component are refused, each with its reason.

use serde_json::json;
use weft::bundled::paths;

use crate::common::exec_with;

#[test]
fn unusable_components_are_refused_naming_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("garbage@1.0.0.wasm"),
        b"definitely not wasm",
    )
    .unwrap();
    // The smallest core module: magic, version 1.
    std::fs::write(dir.path().join("core@1.0.0.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::copy(paths::WRONGSIG, dir.path().join("wrongsig@1.0.0.wasm")).unwrap();
    std::fs::copy(paths::BADIMPORT, dir.path().join("badimport@1.0.0.wasm")).unwrap();
    std::fs::copy(paths::ECHO, dir.path().join("echo@1.0.0.wasm")).unwrap();
    let workflow = json!({
        "steps": [
            { "id": "garbage", "component": "garbage@1" },
            { "id": "core", "component": "core@1" },
            { "id": "wrongsig", "component": "wrongsig@1" },
            { "id": "badimport", "component": "badimport@1" },
            { "id": "fine", "component": "echo@1" }
        ]
    });
    let out = exec_with(&workflow, &json!({}), dir.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    let details = out.error()["error"]["details"].as_array().unwrap().clone();
    let message = |i: usize| -> String {
        details
            .iter()
            .find(|d| d["path"] == format!("/steps/{i}/component"))
            .unwrap_or_else(|| panic!("no problem for step {i}: {details:?}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(message(0).contains("not a WebAssembly"), "{}", message(0));
    assert!(
        message(1).contains("core WebAssembly module"),
        "{}",
        message(1)
    );
    assert!(
        message(2).contains("does not export `run"),
        "{}",
        message(2)
    );
    assert!(
        message(3).contains("imports") && message(3).contains("other:thing"),
        "{}",
        message(3)
    );
    assert!(
        !details.iter().any(|d| d["path"] == "/steps/4/component"),
        "a good component is not blamed"
    );
}
