//! The web console at `/ui` (`docs/console.md`): a few hand-written files
//! compiled into the binary and served by exact name, so that no path a
//! client sends can reach anything else. Every answer carries a strict
//! Content-Security-Policy: the page runs only its own scripts and styles and
//! talks only to this server.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// What the console's pages may load and talk to: only this origin, no
/// inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    /// The name under `/ui/`, the only path that serves it.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file `/ui/` serves; nothing else is.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("events.js", JS),
    asset!("dom.js", JS),
    asset!("runs.js", JS),
    asset!("run.js", JS),
    asset!("dag.js", JS),
    asset!("drawer.js", JS),
    asset!("registry.js", JS),
];

/// Each asset's entity tag (a digest of its bytes), in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex is a valid header value")
        })
        .collect()
});

/// The console's routes; they stay out of the OpenAPI document.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/ui",
            get(|| async { Redirect::permanent("/ui/").into_response() }),
        )
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// The asset named by the path exactly as sent: no decoding, no
/// normalisation, so `..`, `%2e%2e`, `%2f` and `\` name nothing.
async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let name = uri.path().strip_prefix("/ui/").unwrap_or_default();
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(i, &headers),
        None => super::unknown_route(uri).await.into_response(),
    }
}

fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    // Revalidated on every load, so a new binary's console is never mixed
    // with a cached old one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn send(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let router = routes().fallback(super::super::unknown_route);
        let mut request = Request::builder().uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body.to_vec())
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_the_security_headers() {
        for asset in ASSETS {
            let (status, headers, body) = send(&format!("/ui/{}", asset.name), &[]).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.name);
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(body, asset.body);
            let etag = headers[header::ETAG].to_str().unwrap().to_owned();
            let (again, headers, body) =
                send(&format!("/ui/{}", asset.name), &[("if-none-match", &etag)]).await;
            assert_eq!(again, StatusCode::NOT_MODIFIED);
            assert_eq!(headers[header::ETAG], etag.as_str());
            assert!(body.is_empty());
        }
        let (status, _, body) = send("/ui/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, ASSETS[0].body);
        let (status, headers, _) = send("/ui", &[]).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/ui/");
    }

    #[tokio::test]
    async fn no_other_path_under_ui_serves_anything() {
        for path in [
            "/ui/../Cargo.toml",
            "/ui/%2e%2e/Cargo.toml",
            "/ui/..%2fCargo.toml",
            "/ui/%2e%2e%2fCargo.toml",
            "/ui/..\\Cargo.toml",
            "/ui/%5c..%5cCargo.toml",
            "/ui//etc/passwd",
            "/ui/./app.js",
            "/ui/app.js/",
            "/ui/APP.JS",
            "/ui/app%2ejs",
            "/ui/src/api/ui.rs",
            "/ui/index.html%00",
        ] {
            let (status, headers, body) = send(path, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "{path}"
            );
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{path}");
        }
    }
}
