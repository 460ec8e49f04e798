//! Request bodies: content type, size limit and JSON parsing, with the
//! API's own errors (415, 413, 400, 422) instead of axum's plain-text ones.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::{ApiError, AppState, MAX_JSON_BODY};

/// A JSON body parsed as `T`, with its bytes.
pub struct JsonBody<T> {
    pub value: T,
    pub bytes: Bytes,
}

impl<T: DeserializeOwned + Send + 'static> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        if !is_json(&parts.headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = read_limited(&parts.headers, body, MAX_JSON_BODY as u64).await?;
        let value = {
            let bytes = bytes.clone();
            crate::budget::offload_if_large(bytes.len(), move || parse(&bytes)).await?
        };
        // Every JSON body of the API is an object; serde would also read a
        // struct from an array of its fields in order.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "the body must be a JSON object",
            ));
        }
        Ok(Self { value, bytes })
    }
}

/// Deserializes an optional struct only from a JSON object (or null), not
/// from the array of its fields that serde would also take.
pub fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let Some(map) =
        Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
    else {
        return Ok(None);
    };
    T::deserialize(serde_json::Value::Object(map))
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses JSON: 400 when it is not JSON, 422 when it is JSON of the wrong shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if crate::budget::json_too_deep(bytes, crate::budget::MAX_JSON_DEPTH) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body nests arrays and objects deeper than {} levels",
                crate::budget::MAX_JSON_DEPTH
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(
            "invalid_request",
            format!("the body is not as expected: {e}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        ),
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|ct| {
        ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
    })
}

/// The media type of the request, lowercased, without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(media)
}

/// The largest refused body read to its end before the connection closes,
/// and for how long at most.
const MAX_DISCARDED_BYTES: u64 = 256 << 20;
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(30);

async fn discard(body: Body) {
    let mut body = body.into_data_stream();
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        use futures::StreamExt;
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}

/// Reads at most `limit` bytes of body: a `Content-Length` over the limit is
/// refused before anything is read, and a longer body as soon as it passes it.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        // Read (and drop) what the client is still sending, within bounds, so
        // that it sees the answer instead of a connection reset mid-upload.
        if n <= MAX_DISCARDED_BYTES {
            tokio::spawn(discard(body));
        }
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request body could not be read: {e}"),
            )
        }
    })
}
