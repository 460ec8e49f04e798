//! The validated form of a workflow document.

use std::fmt;

use semver::VersionReq;
use serde_json::Value;

use crate::capability::hosts::HostPattern;

use super::condition::Condition;
use super::template::Template;

/// How long a step attempt may run when its document says nothing (ARCHITECTURE.md section 4).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Items of a `for_each` step that run at once when it says nothing (section 14).
pub const DEFAULT_MAX_CONCURRENCY: u32 = 10;

/// The longest a step may wait: for `sleep_ms`, `sleep_until` or a
/// signal's `timeout_ms` (section 16), 365 days.
pub const MAX_WAIT_MS: u64 = 365 * 24 * 3_600_000;

/// Whether `name` can name a signal: a letter or digit, then up to 127
/// letters, digits, `_`, `.` or `-` (the document schema's `signal` pattern).
pub fn is_signal_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The longest `timeout_ms` of a step that runs a component: a day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// A validated workflow: steps in document order, templates compiled, dependencies computed.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The document's `name`, or `"workflow"` when it has none.
    pub name: String,
    /// The document's `description`.
    pub description: Option<String>,
    /// The JSON Schema a run's input must satisfy, as written.
    pub input_schema: Option<Value>,
    /// The steps, in document order; `Root::Step(i)` and `Step::deps` index into this.
    pub steps: Vec<Step>,
    /// The run's output template; None means the run's output is `null`.
    pub output: Option<Template>,
    /// `dependents[i]`: the steps that depend on step `i`, ascending.
    pub(super) dependents: Vec<Vec<usize>>,
    /// `input_schema` compiled at validation time, so that every run does not compile it again.
    pub(super) input_validator: Option<jsonschema::Validator>,
}

impl Workflow {
    /// The index of the step with this id.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// The steps that depend on step `i` (ascending); empty for an index out of range.
    pub fn dependents(&self, i: usize) -> &[usize] {
        self.dependents.get(i).map_or(&[], Vec::as_slice)
    }

    /// The steps with no dependencies, which are ready as soon as a run starts.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.deps.is_empty())
            .map(|(i, _)| i)
    }

    pub(super) fn input_validator(&self) -> Option<&jsonschema::Validator> {
        self.input_validator.as_ref()
    }
}

/// One step of a workflow.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique within the workflow.
    pub id: String,
    /// What the step does: run a component, sleep or wait for a signal.
    pub action: Action,
    /// The step's input template (`{}` when the document has none).
    pub input: Template,
    /// The document's `needs`, as written.
    pub needs: Vec<String>,
    /// Every dependency: `needs` plus every step `input` refers to; deduplicated, ascending.
    pub deps: Vec<usize>,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// The per-attempt deadline the document asks for; None means [`DEFAULT_TIMEOUT_MS`].
    pub timeout_ms: Option<u64>,
    /// Per-step resource limits; what is None comes from the tenant's limits.
    pub limits: StepLimits,
    /// Run once per item of a list, when set.
    pub for_each: Option<ForEach>,
    /// Run only when this holds once the dependencies have ended.
    pub when: Option<Condition>,
    /// What the step's failure (after its retries) does to the run.
    pub on_error: OnError,
    /// What undoes the step when the run fails or is cancelled after it succeeded.
    pub compensate: Option<Compensation>,
    /// Hosts the step (and its compensation) may call (`"http": {"allow": [...]}`),
    /// within the tenant's `allowed_hosts`.
    pub http_allow: Vec<HostPattern>,
    /// The tenant's secrets the step (and its compensation) may read.
    pub secrets: Vec<String>,
    /// The queue the step's attempts (and its compensation's) wait in for a
    /// node that serves it; None is the default queue.
    pub queue: Option<String>,
    /// The tenant's rate limit the step's attempts (and its items') start
    /// within.
    pub rate_limit: Option<String>,
    /// At most `limit` attempts of the tenant's steps with the same key run
    /// at once, across the cluster (`"concurrency": {"key", "limit"}`).
    pub concurrency: Option<Concurrency>,
}

/// A step's concurrency key: a template over the run's input, resolved when
/// the run is submitted, and how many attempts with that key may run at once.
#[derive(Debug, Clone)]
pub struct Concurrency {
    pub key: Template,
    pub limit: u32,
}

impl Concurrency {
    /// Longest key, in bytes, once resolved.
    pub const MAX_KEY_BYTES: usize = 256;
    /// Largest `limit`.
    pub const MAX_LIMIT: u32 = 10_000;

    /// The key for a run of `input`: a string as it is, any other value as
    /// compact JSON; why not, when it cannot be resolved or is too long.
    pub fn key_for(&self, input: &serde_json::Value) -> Result<String, String> {
        let lookup = |root| match root {
            super::Root::Input => Some(input),
            _ => None,
        };
        let value = self
            .key
            .resolve_within(&lookup, Self::MAX_KEY_BYTES + 2)
            .map_err(|e| e.to_string())?;
        let key = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if key.len() > Self::MAX_KEY_BYTES {
            return Err(format!(
                "the key is longer than {} bytes",
                Self::MAX_KEY_BYTES
            ));
        }
        if key.is_empty() || key.chars().any(char::is_control) {
            return Err("the key is empty or holds a control character".into());
        }
        Ok(key)
    }
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Runs a component (`component`).
    Run(ComponentRef),
    /// Waits, holding no worker (`sleep_ms` or `sleep_until`); its output is `null`.
    Sleep(Sleep),
    /// Waits for the signal of this name (`signal`); its payload is the
    /// output. The step's `timeout_ms`, if any, fails it `signal_timeout`.
    Signal(String),
    /// Starts a child run of a published workflow template (`workflow`,
    /// `name@requirement`) with the step's input; its output is the child's.
    Workflow(TemplateCall),
}

/// A sub-workflow step's template: its name and version requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateCall {
    pub name: String,
    pub requirement: semver::VersionReq,
}

/// How long a sleep step sleeps.
#[derive(Debug, Clone)]
pub enum Sleep {
    /// `sleep_ms`: this long after the step is reached.
    For(u64),
    /// `sleep_until`: until the RFC 3339 time this resolves to.
    Until(Template),
}

/// A step's `for_each`: the list it runs over and how many items at once.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// Exactly one reference, to an array.
    pub list: Template,
    /// Items running at once, at most.
    pub max_concurrency: u32,
}

/// A step's `on_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// The step's failure fails the run (the default).
    #[default]
    Fail,
    /// The run goes on; the step stays `failed` and its output reads as `null`.
    Continue,
}

/// A step's `compensate`: the component that undoes it.
#[derive(Debug, Clone)]
pub struct Compensation {
    pub component: ComponentRef,
    /// May refer to the input and to any step's output (`null` when it has none).
    pub input: Template,
    /// Three attempts unless it says otherwise.
    pub retry: RetryPolicy,
    pub timeout_ms: Option<u64>,
    pub limits: StepLimits,
}

impl Compensation {
    /// Attempts of a compensation that sets no `retry.max_attempts`.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
}

impl Step {
    /// The per-attempt deadline: `timeout_ms`, or [`DEFAULT_TIMEOUT_MS`].
    pub fn timeout_ms_or_default(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    /// The component the step runs; None for a step that waits.
    pub fn component(&self) -> Option<&ComponentRef> {
        match &self.action {
            Action::Run(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the step waits (sleeps or waits for a signal) instead of running a component.
    pub fn waits(&self) -> bool {
        !matches!(self.action, Action::Run(_))
    }

    /// The template a sub-workflow step starts a child run of.
    pub fn sub_workflow(&self) -> Option<&TemplateCall> {
        match &self.action {
            Action::Workflow(call) => Some(call),
            _ => None,
        }
    }

    /// The signal the step waits for, if it is a signal step.
    pub fn signal(&self) -> Option<&str> {
        match &self.action {
            Action::Signal(name) => Some(name),
            _ => None,
        }
    }
}

/// A component reference, `name@requirement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    /// The component's name.
    pub name: String,
    /// The versions that may run, under the rules of `parse_requirement`.
    pub requirement: VersionReq,
    /// The whole reference as written, e.g. `price@^1.2`.
    pub raw: String,
}

impl ComponentRef {
    /// Parse `name@requirement`; None when the shape is wrong (no `@`, or an invalid name),
    /// which the document schema reports, Some(Err) when the requirement does not parse.
    pub(super) fn parse(raw: &str) -> Option<Result<ComponentRef, String>> {
        let (name, requirement) = raw.split_once('@')?;
        if !super::is_valid_name(name) || requirement.is_empty() {
            return None;
        }
        Some(
            super::parse_requirement(requirement).map(|requirement| ComponentRef {
                name: name.to_owned(),
                requirement,
                raw: raw.to_owned(),
            }),
        )
    }
}

impl fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How a step's failed attempts are retried: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry, in milliseconds.
    pub initial_backoff_ms: u64,
    /// The largest backoff ceiling, in milliseconds.
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    /// Default attempts: one, so nothing is retried unless the step asks.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 1;
    /// Default first backoff ceiling.
    pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 100;
    /// Default largest backoff ceiling.
    pub const DEFAULT_MAX_BACKOFF_MS: u64 = 10_000;
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff_ms: Self::DEFAULT_INITIAL_BACKOFF_MS,
            max_backoff_ms: Self::DEFAULT_MAX_BACKOFF_MS,
        }
    }
}

/// Per-step resource limits; None means the tenant's limit applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepLimits {
    /// Fuel for one attempt.
    pub fuel: Option<u64>,
    /// Linear memory cap for one attempt, in MiB.
    pub memory_mb: Option<u32>,
}
