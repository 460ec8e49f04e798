//! `weft exec --otlp-endpoint`: the run's trace reaches a real OTLP/HTTP
//! receiver before the command exits, on the in-memory store and on Redis.

use serde_json::json;

use crate::common::otlp::Receiver;
use crate::common::{components_dir, exec_with};

#[test]
fn exec_exports_the_runs_trace_before_it_exits() {
    let receiver = Receiver::start();
    let doc = json!({ "name": "once", "steps": [
        { "id": "a", "component": "echo@1.0.0", "input": { "x": 1 } },
        { "id": "b", "component": "echo@1.0.0", "needs": ["a"], "input": { "y": 2 } }
    ] });
    let endpoint = receiver.endpoint();
    let dir = components_dir();
    let exec = exec_with(
        &doc,
        &json!({}),
        &dir,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let run = exec.run();
    assert_eq!(run["status"], "succeeded", "{run}");
    let trace = run["trace_id"].as_str().expect("a trace id");
    // The command has exited: everything was exported by then.
    let spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace)
        .collect();
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["attempt a", "attempt b", "run once", "step a", "step b"],
        "{spans:#?}"
    );
}
