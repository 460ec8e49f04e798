//! The body of `GET /v1/runs/{id}`. A run's large step outputs are sent each
//! as a chunk of its own, rather than copied into one serialised document:
//! the text a store gave as it is, a value held in memory serialised on the
//! blocking pool. A run holding hundreds of MiB of outputs costs no growing
//! buffer of all of them, and no async worker is held while it is written.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::scheduler::model::{RunView, StepOutput};

/// Outputs below this size are written into the document like any field.
const OWN_CHUNK_FROM: usize = 64 << 10;

/// Stored output text, as the bytes of a body chunk (no copy).
struct Text(Arc<String>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A large output, as the store gave it.
enum Large {
    /// Stored JSON text: sent as it is.
    Text(Arc<String>),
    /// A value held in memory: serialised on its own, off the async executor.
    Value(Arc<serde_json::Value>),
}

/// The run as a JSON response.
pub async fn response(mut view: RunView) -> Response {
    // Each large output is replaced by a marker: a NUL, its number, a NUL.
    // Serialised JSON holds no raw NUL (strings escape it, and stored outputs
    // are JSON Weft serialised), so the markers are found again unmistakably.
    let mut large: Vec<Large> = Vec::new();
    for step in view.steps.values_mut() {
        let piece = match &step.output {
            Some(StepOutput::Text(text)) if text.len() >= OWN_CHUNK_FROM => {
                Large::Text(text.clone())
            }
            Some(StepOutput::Value(value)) if at_least(value, OWN_CHUNK_FROM) => {
                Large::Value(value.clone())
            }
            _ => continue,
        };
        step.output = Some(StepOutput::Text(Arc::new(format!("\0{}\0", large.len()))));
        large.push(piece);
    }
    if large.is_empty() {
        return Json(view).into_response();
    }
    let large = serialise(large).await;
    let skeleton = Bytes::from(serde_json::to_vec(&view).expect("a run view serialises"));
    let mut pieces = Vec::with_capacity(2 * large.len() + 1);
    let mut from = 0;
    for (i, piece) in large.into_iter().enumerate() {
        let marker = format!("\0{i}\0");
        let at = from
            + skeleton[from..]
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
                .expect("each marker is written once, in order");
        pieces.push(skeleton.slice(from..at));
        pieces.push(piece);
        from = at + marker.len();
    }
    pieces.push(skeleton.slice(from..));
    let length: usize = pieces.iter().map(Bytes::len).sum();
    let chunks = futures::stream::iter(pieces.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// The large outputs as body chunks: stored text as it is, values
/// serialised on the blocking pool, half of them on each of two jobs.
async fn serialise(large: Vec<Large>) -> Vec<Bytes> {
    fn chunks(large: Vec<Large>) -> Vec<Bytes> {
        large
            .into_iter()
            .map(|piece| match piece {
                Large::Text(text) => Bytes::from_owner(Text(text)),
                Large::Value(value) => {
                    Bytes::from(serde_json::to_vec(&*value).expect("a JSON value serialises"))
                }
            })
            .collect()
    }
    if large.iter().all(|l| matches!(l, Large::Text(_))) {
        return chunks(large);
    }
    let mut first = large;
    let second = first.split_off(first.len() / 2);
    let (a, b) = tokio::join!(
        crate::budget::offload(move || chunks(first)),
        crate::budget::offload(move || chunks(second))
    );
    a.into_iter().chain(b).collect()
}

/// Whether `value` takes at least `n` bytes as JSON, told from a lower bound
/// that stops as soon as it reaches `n` (a string counts its length).
fn at_least(value: &serde_json::Value, n: usize) -> bool {
    fn walk(value: &serde_json::Value, left: &mut usize) -> bool {
        let take = |left: &mut usize, k: usize| {
            *left = left.saturating_sub(k);
            *left == 0
        };
        match value {
            serde_json::Value::String(s) => take(left, s.len() + 2),
            serde_json::Value::Array(items) => {
                take(left, 2 + items.len()) || items.iter().any(|v| walk(v, left))
            }
            serde_json::Value::Object(members) => {
                take(left, 2 + members.len())
                    || members
                        .iter()
                        .any(|(k, v)| take(left, k.len() + 3) || walk(v, left))
            }
            _ => take(left, 1),
        }
    }
    let mut left = n;
    walk(value, &mut left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::model::{StepStatus, StepView};

    #[tokio::test]
    async fn large_outputs_are_sent_as_their_own_chunks_and_read_back_as_one_document() {
        let big = format!("{{\"s\":\"{}\"}}", "x".repeat(OWN_CHUNK_FROM));
        let mut view = RunView {
            id: "run_1".into(),
            tenant: "t".into(),
            workflow: "w".into(),
            workflow_version: None,
            parent: None,
            status: crate::scheduler::model::RunStatus::Succeeded,
            input: serde_json::json!({"nul": "\u{0}0\u{0}"}),
            output: serde_json::Value::Null,
            error: None,
            created_at: "now".into(),
            start_at: None,
            schedule: None,
            scheduled_for: None,
            priority: 5,
            trace_id: None,
            trace: None,
            started_at: None,
            finished_at: None,
            steps: Default::default(),
        };
        let value = serde_json::json!({"v": "y".repeat(OWN_CHUNK_FROM), "esc": "\u{0}\"\n"});
        // Held as a value, a large output is serialised on its own too.
        assert!(at_least(&value, OWN_CHUNK_FROM));
        assert!(!at_least(
            &serde_json::json!({"small": [1, "two"]}),
            OWN_CHUNK_FROM
        ));
        let numbers = serde_json::Value::Array(vec![1.into(); 40_000]);
        assert!(at_least(&numbers, OWN_CHUNK_FROM));
        assert!(!at_least(&serde_json::json!([1, 2, 3]), OWN_CHUNK_FROM));
        let outputs = [
            ("a", StepOutput::Text(Arc::new(big.clone()))),
            ("b", StepOutput::Text(Arc::new("[1]".to_string()))),
            ("c", StepOutput::Text(Arc::new(big.clone()))),
            ("d", StepOutput::Value(Arc::new(value))),
            (
                "e",
                StepOutput::Value(Arc::new(serde_json::json!({"small": true}))),
            ),
        ];
        for (id, output) in outputs {
            let step = StepView {
                component: "x@1".into(),
                digest: "sha256:00".into(),
                status: StepStatus::Succeeded,
                attempts: 1,
                output: Some(output),
                error: None,
                started_at: None,
                finished_at: None,
                duration_ms: None,
                logs: Vec::new(),
                reason: None,
                items: None,
                compensation: None,
                workflow: None,
                run: None,
                depends_on: Vec::new(),
            };
            view.steps.insert(id.into(), step);
        }
        let expected = serde_json::to_value(&view).unwrap();
        let response = response(view).await;
        let length: usize = response.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(body.len(), length);
        let read: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(read, expected);
        assert_eq!(
            read["steps"]["c"]["output"]["s"].as_str().unwrap().len(),
            OWN_CHUNK_FROM
        );
        assert_eq!(read["steps"]["d"]["output"]["esc"], "\u{0}\"\n");
    }

    #[tokio::test]
    async fn a_run_of_stored_texts_only_has_its_length() {
        let big = format!("\"{}\"", "x".repeat(OWN_CHUNK_FROM));
        let mut view: RunView = serde_json::from_value(serde_json::json!({
            "id": "run_1", "tenant": "t", "workflow": "w", "status": "succeeded",
            "input": {}, "output": null, "created_at": "now",
            "steps": {"a": {"component": "x@1", "digest": "d", "status": "succeeded", "attempts": 1}}
        }))
        .unwrap();
        view.steps["a"].output = Some(StepOutput::Text(Arc::new(big.clone())));
        let response = response(view).await;
        let length: usize = response.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(body.len(), length);
        let read: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            read["steps"]["a"]["output"].as_str().unwrap().len(),
            OWN_CHUNK_FROM
        );
    }
}
