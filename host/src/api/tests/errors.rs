//! Every error status of the API, with its shape.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use super::{ADMIN, Api};

fn assert_error_shape(reply: &super::Reply) {
    let error = &reply.body["error"];
    assert!(error["code"].is_string(), "{}", reply.body);
    assert!(error["message"].is_string(), "{}", reply.body);
    assert!(error["details"].is_array(), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let api = Api::new().await;
    let reply = api.get("/v1/nothing/here", &api.acme).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_error_shape(&reply);
    let reply = api.call(Method::DELETE, "/v1/runs", &api.acme, None).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_error_shape(&reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_keys_are_401() {
    let api = Api::new().await;
    let no_key = Request::get("/v1/components").body(Body::empty()).unwrap();
    let reply = api.send(no_key).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_error_shape(&reply);
    for key in ["weft_0000", "", "x y"] {
        let reply = api.get("/v1/components", key).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "key {key:?}");
    }
    let basic = Request::get("/v1/components")
        .header(header::AUTHORIZATION, format!("Basic {}", api.acme))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(basic).await.status, StatusCode::UNAUTHORIZED);
    // A tenant key is not the admin token, and the admin token is no tenant key.
    let reply = api
        .post("/v1/tenants", &api.acme, json!({"name": "x"}))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.get("/v1/components", ADMIN).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_wrong_shape_and_wrong_content_type() {
    let api = Api::new().await;
    let raw = |body: &'static str, content_type: &str| {
        Request::post("/v1/runs")
            .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let reply = api.send(raw("{\"workflow\": ", "application/json")).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    assert_error_shape(&reply);
    let reply = api
        .send(raw("{\"workflow\": {}, \"extra\": 1}", "application/json"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let reply = api.send(raw("{}", "text/plain")).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let no_type = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        api.send(no_type).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // `; charset=` and `+json` types are JSON too.
    let reply = api
        .send(raw(
            "{\"workflow\": {\"steps\": []}}",
            "application/json; charset=utf-8",
        ))
        .await;
    assert_eq!(reply.code(), "invalid_workflow");
    // A component must be application/wasm.
    let reply = api
        .call(
            Method::PUT,
            "/v1/components/x/1.0.0",
            &api.acme,
            Some(json!({})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let api = Api::new().await;
    let big = format!(
        "{{\"workflow\": {{\"x\": \"{}\"}}}}",
        "a".repeat(super::super::MAX_JSON_BODY)
    );
    let request = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    let reply = api.send(request).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    assert_error_shape(&reply);

    api.set_limits("acme", json!({"component_bytes": 1000}))
        .await;
    let bytes = super::wasm(crate::bundled::paths::ECHO);
    // Refused on its Content-Length, before the body is read...
    let declared = Request::put("/v1/components/big/1.0.0")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
        .header(header::CONTENT_TYPE, "application/wasm")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes.clone()))
        .unwrap();
    assert_eq!(
        api.send(declared).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // ...and streamed without one, as soon as it passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let streamed = Request::put("/v1/components/big/1.0.0")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.acme))
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert_eq!(
        api.send(streamed).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let missing = api.get("/v1/components/big/1.0.0", &api.acme).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_concurrency_limits_are_429_with_retry_after() {
    let api = Api::new().await;
    let one_step = json!({"workflow": {"steps": [{"id": "a", "component": "echo@1"}]}});

    api.set_limits("acme", json!({"runs_per_second": 2})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(api.post("/v1/runs", &api.acme, one_step.clone()).await);
    }
    let limited = statuses.last().unwrap();
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let retry: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_error_shape(limited);
    // Another tenant does not notice.
    let other = api.post("/v1/runs", &api.other, one_step.clone()).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);

    api.set_limits(
        "acme",
        json!({"runs_per_second": 1000, "concurrent_runs": 1}),
    )
    .await;
    let long = json!({"workflow": {"steps": [{"id": "a", "component": "sleep@1", "input": {"ms": 5000}}]}});
    // Earlier runs may still be finishing: wait until one long run is admitted.
    let mut first = api.post("/v1/runs", &api.acme, long.clone()).await;
    for _ in 0..100 {
        if first.status == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        first = api.post("/v1/runs", &api.acme, long.clone()).await;
    }
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = api.post("/v1/runs", &api.acme, one_step.clone()).await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_runs")
    );
    assert_eq!(second.headers[header::RETRY_AFTER], "1");
    // Ending the run frees the place.
    let id = first.body["id"].as_str().unwrap();
    let cancel = api
        .post(&format!("/v1/runs/{id}/cancel"), &api.acme, json!({}))
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    let third = api.post("/v1/runs", &api.acme, one_step).await;
    assert_eq!(third.status, StatusCode::ACCEPTED, "{}", third.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_created_by_the_admin_only_once() {
    let api = Api::new().await;
    let created = api
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "zeta", "limits": {"memory_mb": 32}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["tenant"], "zeta");
    let key = created.body["api_key"].as_str().unwrap();
    assert!(key.starts_with("weft_") && key.len() == 5 + 64, "{key}");
    // The new key works and sees an empty registry.
    let list = api.get("/v1/components", key).await;
    assert_eq!(list.body, json!({"components": []}));
    let again = api
        .post("/v1/tenants", ADMIN, json!({"name": "zeta"}))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "tenant_exists")
    );
    let bad = api
        .post("/v1/tenants", ADMIN, json!({"name": "Not OK"}))
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name")
    );
    let info = api.get("/v1/tenants/zeta", ADMIN).await;
    assert_eq!(info.body["limits"]["memory_mb"], 32);
    assert_eq!(info.body["limits"]["concurrent_runs"], 1000);
    let out_of_range = api
        .call(
            Method::PUT,
            "/v1/tenants/zeta/limits",
            ADMIN,
            Some(json!({"memory_mb": 0})),
        )
        .await;
    assert_eq!(out_of_range.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        out_of_range.body["error"]["details"][0]["path"],
        "/memory_mb"
    );
    let nobody = api.get("/v1/tenants/nobody", ADMIN).await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

/// What schemathesis found: bodies are objects only, limits are read as the
/// document describes them (`64.0` is an integer, `int32` ends at 2^31 - 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_objects_and_limits_fit_their_formats() {
    let api = Api::new().await;
    let as_array = api.post("/v1/tenants", ADMIN, json!(["zeta", null])).await;
    assert_eq!(
        (as_array.status, as_array.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let limits_as_array = api
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "zeta", "limits": [1, 2]}),
        )
        .await;
    assert_eq!(
        (limits_as_array.status, limits_as_array.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let too_many = api
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "zeta", "limits": {"concurrent_runs": 2_147_483_648_u64}}),
        )
        .await;
    assert_eq!(too_many.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        too_many.body["error"]["details"][0]["path"],
        "/limits/concurrent_runs"
    );
    let fraction = api
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "zeta", "limits": {"fuel": 1.5}}),
        )
        .await;
    assert_eq!(fraction.status, StatusCode::UNPROCESSABLE_ENTITY);
    let created = api
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "zeta", "limits": {"memory_mb": 32.0, "fuel": 1e6}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let info = api.get("/v1/tenants/zeta", ADMIN).await;
    assert_eq!(info.body["limits"]["memory_mb"], 32);
    assert_eq!(info.body["limits"]["fuel"], 1_000_000);
}

/// Each parameter is declared where it is read: a path's `{name}` segments
/// are path parameters, and the rest are query parameters, so that clients
/// generated from the document (and fuzzers) send them.
#[tokio::test]
async fn the_openapi_document_puts_each_parameter_where_it_is_read() {
    let api = Api::new().await;
    let paths = api.openapi["paths"].as_object().unwrap();
    let mut queries = Vec::new();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            for p in operation["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let segment = format!("{{{name}}}");
                match p["in"].as_str().unwrap() {
                    "path" => assert!(
                        path.contains(&segment),
                        "{method} {path}: `{name}` is declared in the path but is not one of its segments"
                    ),
                    "query" => {
                        assert!(!path.contains(&segment), "{method} {path}: `{name}`");
                        queries.push(format!("{method} {path} {name}"));
                    }
                    _ => {}
                }
            }
        }
    }
    for want in [
        "get /v1/runs limit",
        "get /v1/runs status",
        "get /v1/runs cursor",
    ] {
        let (method, rest) = want.split_once(' ').unwrap();
        let (path, name) = rest.split_once(' ').unwrap();
        let full = format!("{method} {path} {name}");
        assert!(
            queries.contains(&full),
            "{full} is not a query parameter: {queries:?}"
        );
    }
}
