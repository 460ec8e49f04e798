//! Traces of runs (ARCHITECTURE §18, `docs/traces.md`): every run is a
//! trace, with a span for the run, one per step and one per attempt,
//! exported over OTLP/HTTP by [`export`].
//!
//! Span ids are derived from the run's id, the step's index and the
//! attempt, so that whichever node runs an attempt or ends the run makes
//! spans that fit together without asking anyone: a node emits an attempt's
//! span when the attempt ends, and the node that ends the run emits the run's
//! and its steps' spans from the run as it was left.

pub mod export;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::backend::StateStore;
use crate::engine::Failure;
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{RunSpec, RunView, StepStatus, Target};
pub use export::{Exporter, OtlpConfig};

/// The trace a run belongs to, kept with the run: its id, the span the
/// run's span is a child of (the caller's `traceparent`, or the parent run's
/// step), and whether the caller sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    #[serde(with = "hex_bytes")]
    pub trace_id: [u8; 16],
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub parent: Option<[u8; 8]>,
    #[serde(default = "sampled")]
    pub sampled: bool,
}

fn sampled() -> bool {
    true
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; N];
        hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(bytes)
    }
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 8]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 8]>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            let mut bytes = [0u8; 8];
            hex::decode_to_slice(&t, &mut bytes).map_err(serde::de::Error::custom)?;
            Ok(bytes)
        })
        .transpose()
    }
}

impl TraceContext {
    /// A new trace, with nothing above the run.
    pub fn new() -> Self {
        let mut trace_id: [u8; 16] = rand::random();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        Self {
            trace_id,
            parent: None,
            sampled: true,
        }
    }

    /// The trace a W3C `traceparent` header names (`00-<trace>-<span>-<flags>`),
    /// or `None` when it is not one (the run then starts a trace of its own,
    /// as the W3C Trace Context says to).
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.splitn(5, '-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let lower_hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && rest.is_some() {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id,
            parent: Some(span_id),
            sampled: flags & 1 == 1,
        })
    }

    /// The trace of the child run that sub-workflow step `index` of `run`
    /// starts: the same trace, below that step's span.
    pub fn child(&self, run: &str, index: usize) -> Self {
        Self {
            trace_id: self.trace_id,
            parent: Some(step_span_id(run, index)),
            sampled: self.sampled,
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        Self::new()
    }
}

fn span_id(parts: &[&[u8]]) -> [u8; 8] {
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u32).to_be_bytes());
        hash.update(part);
    }
    let mut id: [u8; 8] = hash.finalize()[..8].try_into().expect("8 bytes");
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// The span of run `run`.
pub fn run_span_id(run: &str) -> [u8; 8] {
    span_id(&[b"run", run.as_bytes()])
}

/// The span of step `index` of run `run`.
pub fn step_span_id(run: &str, index: usize) -> [u8; 8] {
    span_id(&[b"step", run.as_bytes(), &(index as u64).to_be_bytes()])
}

/// The span of one attempt at `target` of run `run`.
pub fn attempt_span_id(run: &str, target: Target, attempt: u32) -> [u8; 8] {
    let (kind, index, item): (&[u8], usize, u64) = match target {
        Target::Step(i) => (b"attempt", i, 0),
        Target::Item(i, k) => (b"item", i, u64::from(k)),
        Target::Compensation(i) => (b"compensation", i, 0),
    };
    span_id(&[
        kind,
        run.as_bytes(),
        &(index as u64).to_be_bytes(),
        &item.to_be_bytes(),
        &attempt.to_be_bytes(),
    ])
}

/// What one attempt was, as its span tells it.
pub struct AttemptSpan<'a> {
    pub spec: &'a RunSpec,
    pub target: Target,
    pub attempt: u32,
    pub digest: &'a str,
    pub started: SystemTime,
    pub ended: SystemTime,
    /// `succeeded`, `retried` or `failed`.
    pub outcome: &'static str,
    pub error: Option<&'a Failure>,
}

/// Makes spans of runs and hands them to the exporter; shared by the
/// scheduler (ended runs) and the worker (ended attempts).
pub struct Tracer {
    exporter: Exporter,
    /// The tasks emitting the spans of ended runs.
    emitting: tokio_util::task::TaskTracker,
}

impl Tracer {
    pub fn new(exporter: Exporter) -> Arc<Self> {
        Arc::new(Self {
            exporter,
            emitting: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Emits what ended runs still have to, then exports what is queued and
    /// stops, all within `timeout`.
    pub async fn shutdown(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.emitting.close();
        let _ = tokio::time::timeout_at(deadline, self.emitting.wait()).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.exporter.shutdown(left).await;
    }

    /// The span of an attempt that ended; never waits.
    pub fn attempt(&self, a: AttemptSpan<'_>) {
        let Some(trace) = a.spec.trace.filter(|t| t.sampled) else {
            return;
        };
        let step = &a.spec.workflow.steps[a.target.step()];
        let mut attributes = run_attributes(&a.spec.tenant, a.spec.workflow_name(), &a.spec.id);
        attributes.push(text("weft.step", &step.id));
        if let Some(component) = step.component() {
            attributes.push(text("weft.component", &component.raw));
        }
        attributes.push(text("weft.component.digest", a.digest));
        attributes.push(int("weft.attempt", i64::from(a.attempt)));
        let name = match a.target {
            Target::Step(_) => format!("attempt {}", step.id),
            Target::Item(_, k) => {
                attributes.push(int("weft.item", i64::from(k)));
                format!("item {}", step.id)
            }
            Target::Compensation(_) => {
                attributes.push(boolean("weft.compensation", true));
                format!("compensate {}", step.id)
            }
        };
        attributes.push(text("weft.outcome", a.outcome));
        if let Some(f) = a.error {
            attributes.push(text("weft.error.code", &f.code));
        }
        self.exporter.emit(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: attempt_span_id(&a.spec.id, a.target, a.attempt).to_vec(),
            parent_span_id: step_span_id(&a.spec.id, a.target.step()).to_vec(),
            flags: 0x101,
            name,
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: nanos(a.started),
            end_time_unix_nano: nanos(a.ended),
            attributes,
            status: Some(status(a.error.map(|f| f.message.as_str()))),
            ..Default::default()
        });
    }

    /// Emits the spans of a run that ended, and of its steps, from the run
    /// as the store keeps it; off the caller's path.
    pub fn run_ended(self: &Arc<Self>, store: Arc<dyn StateStore>, tenant: &str, run: &str) {
        let (this, tenant, run) = (self.clone(), tenant.to_string(), run.to_string());
        self.emitting.spawn(async move {
            match store.run(&tenant, &run).await {
                Ok(Some(view)) => {
                    let spans = run_spans(&view);
                    this.exporter.emit_all(spans).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%run, error = %e, "cannot read an ended run for its trace");
                    this.exporter.dropped("read", 1);
                }
            }
        });
    }
}

/// Nanoseconds in a millisecond: runs and steps keep their times in
/// milliseconds, so their spans cover the whole milliseconds they started
/// and ended in, and so hold the spans of their attempts, timed to the
/// nanosecond.
const MS: u64 = 1_000_000;

/// The spans of a run that ended: the run's, then one per step that started
/// or ended (a step never reached has none).
pub fn run_spans(view: &RunView) -> Vec<Span> {
    let Some(trace) = view.trace.filter(|t| t.sampled) else {
        return Vec::new();
    };
    let base = run_attributes(&view.tenant, &view.workflow, &view.id);
    let created = parse_time(&view.created_at).unwrap_or(0);
    let finished = view.finished_at.as_deref().and_then(parse_time);
    let run_end = finished.unwrap_or(created);
    let mut attributes = base.clone();
    if let Some(v) = &view.workflow_version {
        attributes.push(text("weft.workflow.version", v));
    }
    if let Some(s) = &view.schedule {
        attributes.push(text("weft.schedule", s));
    }
    if let Some(p) = &view.parent {
        attributes.push(text("weft.parent_run", p));
    }
    attributes.push(int("weft.priority", i64::from(view.priority)));
    attributes.push(text("weft.outcome", view.status.as_str()));
    if let Some(e) = &view.error {
        attributes.push(text("weft.error.code", &e.code));
        if let Some(step) = &e.step {
            attributes.push(text("weft.error.step", step));
        }
    }
    let mut spans = Vec::with_capacity(view.steps.len() + 1);
    spans.push(Span {
        trace_id: trace.trace_id.to_vec(),
        span_id: run_span_id(&view.id).to_vec(),
        parent_span_id: trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0x101 | if trace.parent.is_some() { 0x200 } else { 0 },
        name: format!("run {}", view.workflow),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: created * MS,
        end_time_unix_nano: run_end * MS + MS - 1,
        attributes,
        status: Some(match view.status.as_str() {
            "succeeded" => status(None),
            _ => status(Some(
                view.error
                    .as_ref()
                    .map_or(view.status.as_str(), |e| &e.message),
            )),
        }),
        ..Default::default()
    });
    for (index, (id, step)) in view.steps.iter().enumerate() {
        let start = step.started_at.as_deref().and_then(parse_time);
        let end = step.finished_at.as_deref().and_then(parse_time);
        let Some(start) = start.or(end) else {
            continue;
        };
        let end = end.unwrap_or(run_end).max(start);
        let mut attributes = base.clone();
        attributes.push(text("weft.step", id));
        if !step.component.is_empty() {
            attributes.push(text("weft.component", &step.component));
            attributes.push(text("weft.component.digest", &step.digest));
        }
        attributes.push(int("weft.attempts", i64::from(step.attempts)));
        attributes.push(text("weft.outcome", step.status.as_str()));
        if let Some(f) = &step.error {
            attributes.push(text("weft.error.code", &f.code));
        }
        if let Some(items) = &step.items {
            attributes.push(int("weft.items", i64::from(items.total)));
        }
        let failed = step.status == StepStatus::Failed;
        spans.push(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: step_span_id(&view.id, index).to_vec(),
            parent_span_id: run_span_id(&view.id).to_vec(),
            flags: 0x101,
            name: format!("step {id}"),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: start * MS,
            end_time_unix_nano: end * MS + MS - 1,
            attributes,
            status: Some(status(failed.then(|| {
                step.error.as_ref().map_or("failed", |f| f.message.as_str())
            }))),
            ..Default::default()
        });
    }
    spans
}

fn run_attributes(tenant: &str, workflow: &str, run: &str) -> Vec<KeyValue> {
    vec![
        text("weft.tenant", tenant),
        text("weft.workflow", workflow),
        text("weft.run_id", run),
    ]
}

fn status(error: Option<&str>) -> Status {
    match error {
        None => Status {
            message: String::new(),
            code: StatusCode::Ok as i32,
        },
        Some(message) => Status {
            message: message.chars().take(1024).collect(),
            code: StatusCode::Error as i32,
        },
    }
}

pub(crate) fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn boolean(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn parse_time(text: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_as_the_w3c_trace_context_says_and_anything_else_is_not() {
        let t = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(t.parent.unwrap()), "00f067aa0ba902b7");
        assert!(t.sampled);
        let unsampled = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .unwrap();
        assert!(!unsampled.sampled);
        // A later version may carry more fields.
        assert!(
            TraceContext::from_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
            )
            .is_some()
        );
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn span_ids_depend_on_run_step_and_attempt_only() {
        assert_eq!(step_span_id("run_a", 1), step_span_id("run_a", 1));
        assert_ne!(step_span_id("run_a", 1), step_span_id("run_a", 2));
        assert_ne!(step_span_id("run_a", 1), step_span_id("run_b", 1));
        assert_ne!(run_span_id("run_a"), step_span_id("run_a", 0));
        let a = attempt_span_id("run_a", Target::Step(0), 1);
        assert_eq!(a, attempt_span_id("run_a", Target::Step(0), 1));
        assert_ne!(a, attempt_span_id("run_a", Target::Step(0), 2));
        assert_ne!(a, attempt_span_id("run_a", Target::Item(0, 0), 1));
        assert_ne!(a, attempt_span_id("run_a", Target::Compensation(0), 1));
        let parent = TraceContext::new();
        let child = parent.child("run_a", 3);
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.parent, Some(step_span_id("run_a", 3)));
    }

    #[test]
    fn a_trace_context_is_kept_as_hex_text() {
        let t = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(
            text,
            r#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","parent":"00f067aa0ba902b7","sampled":true}"#
        );
        assert_eq!(serde_json::from_str::<TraceContext>(&text).unwrap(), t);
        let bare: TraceContext =
            serde_json::from_str(r#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#).unwrap();
        assert!(bare.parent.is_none() && bare.sampled);
    }
}
