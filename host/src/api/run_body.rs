//! The body of `GET /v1/runs/{id}`. A run's large step outputs are sent as
//! the text the store gave, each as a chunk of its own, rather than copied
//! into one serialised document: a run holding hundreds of MiB of outputs
//! costs no second copy of them and starts answering at once.

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

/// The run as a JSON response.
pub fn response(mut view: RunView) -> Response {
    // Each large output is replaced by a marker: a NUL, its number, a NUL.
    // Serialised JSON holds no raw NUL (strings escape it, and stored outputs
    // are JSON Weft serialised), so the markers are found again unmistakably.
    let mut large: Vec<Bytes> = Vec::new();
    for step in view.steps.values_mut() {
        let marker = || StepOutput::Text(Arc::new(format!("\0{}\0", large.len())));
        match &step.output {
            Some(StepOutput::Text(text)) if text.len() >= OWN_CHUNK_FROM => {
                let text = text.clone();
                step.output = Some(marker());
                large.push(Bytes::from_owner(Text(text)));
            }
            _ => {}
        }
    }
    if large.is_empty() {
        return Json(view).into_response();
    }
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
            started_at: None,
            finished_at: None,
            steps: Default::default(),
        };
        let value = serde_json::json!({"v": "y".repeat(OWN_CHUNK_FROM), "esc": "\u{0}\"\n"});
        // Held as a value, the output is written into the document as before.
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
            };
            view.steps.insert(id.into(), step);
        }
        let expected = serde_json::to_value(&view).unwrap();
        let response = response(view);
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
        let response = response(view);
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
