//! Publishing and reading components, and tenants' registries kept apart.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use super::{Api, wasm};
use crate::bundled::paths;

fn put(key: &str, name: &str, version: &str, bytes: Vec<u8>) -> Request<Body> {
    Request::put(format!("/v1/components/{name}/{version}"))
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(Body::from(bytes))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_immutable_and_stored_once() {
    let api = Api::new().await;
    let echo = wasm(paths::ECHO);
    let first = api
        .send(put(&api.acme, "greet", "1.0.0", echo.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let digest = crate::cache::digest(&echo);
    assert_eq!(
        first.body,
        json!({"name": "greet", "version": "1.0.0", "digest": digest, "size": echo.len()})
    );
    let same = api
        .send(put(&api.acme, "greet", "1.0.0", echo.clone()))
        .await;
    assert_eq!((same.status, &same.body), (StatusCode::OK, &first.body));
    let other = api
        .send(put(&api.acme, "greet", "1.0.0", wasm(paths::NOOP)))
        .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::CONFLICT, "version_exists")
    );
    // The version still names the first bytes.
    let got = api.get("/v1/components/greet/1.0.0", &api.acme).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["digest"], digest.as_str());
    assert!(got.body["published_at"].as_str().unwrap().ends_with('Z'));

    api.send(put(&api.acme, "greet", "1.10.0", echo.clone()))
        .await;
    api.send(put(&api.acme, "greet", "1.2.0", echo)).await;
    let list = api.get("/v1/components", &api.acme).await;
    let greet = list.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "greet")
        .unwrap()
        .clone();
    assert_eq!(greet["versions"], json!(["1.0.0", "1.2.0", "1.10.0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_bytes_names_and_versions_are_422() {
    let api = Api::new().await;
    let cases = [
        (
            "bad",
            "1.0.0",
            b"not wasm at all".to_vec(),
            "invalid_component",
            "not a WebAssembly file",
        ),
        (
            "bad",
            "1.0.0",
            wasm(paths::WRONGSIG),
            "invalid_component",
            "does not export",
        ),
        (
            "bad",
            "1.0.0",
            wasm(paths::BADIMPORT),
            "invalid_component",
            "imports",
        ),
        (
            "Bad",
            "1.0.0",
            wasm(paths::ECHO),
            "invalid_name",
            "invalid component name",
        ),
        (
            "bad",
            "one",
            wasm(paths::ECHO),
            "invalid_version",
            "semantic versions",
        ),
    ];
    for (name, version, bytes, code, says) in cases {
        let reply = api.send(put(&api.acme, name, version, bytes)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}@{version}"
        );
        assert_eq!(reply.code(), code);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let list = api.get("/v1/components", &api.acme).await;
    let names: Vec<&str> = list.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "fail", "sleep"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_components_do_not_exist() {
    let api = Api::new().await;
    let private = api
        .send(put(&api.acme, "secret", "1.0.0", wasm(paths::ECHO)))
        .await;
    assert_eq!(private.status, StatusCode::CREATED);
    let seen = api.get("/v1/components/secret/1.0.0", &api.other).await;
    assert_eq!(
        (seen.status, seen.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let never = api.get("/v1/components/never/1.0.0", &api.other).await;
    assert_eq!(seen.body["error"]["code"], never.body["error"]["code"]);
    // Referring to it from a workflow: unknown component, as if it did not exist.
    let run = api
        .post(
            "/v1/runs",
            &api.other,
            json!({"workflow": {"steps": [{"id": "a", "component": "secret@1"}]}}),
        )
        .await;
    assert_eq!(
        (run.status, run.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_workflow")
    );
    assert_eq!(
        run.body["error"]["details"][0]["path"],
        "/steps/0/component"
    );
    let message = run.body["error"]["details"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown component \"secret\""),
        "{message}"
    );
    // The same name published by the other tenant is its own.
    let mine = api
        .send(put(&api.other, "secret", "1.0.0", wasm(paths::NOOP)))
        .await;
    assert_eq!(mine.status, StatusCode::CREATED);
}
