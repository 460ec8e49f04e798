//! The error a step returns instead of output.

use std::fmt;

use crate::__bindings::StepError as WitStepError;

/// Why a step failed: a machine-readable code, a message for people, and
/// whether the scheduler may try the step again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// Machine-readable, e.g. `"bad_input"`; workflows and retries key on it.
    pub code: String,
    /// What went wrong, for people reading the run.
    pub message: String,
    /// May the scheduler try this step again (within the step's `retry`)?
    pub retryable: bool,
}

impl StepError {
    /// Code of the error the SDK returns when the input does not fit the
    /// step function's input type.
    pub const BAD_INPUT: &'static str = "bad_input";
    /// Code of the error the SDK returns when the step function's output
    /// cannot be serialised as JSON.
    pub const BAD_OUTPUT: &'static str = "bad_output";

    /// A failure that trying again will not fix.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that may go away on another attempt (a busy dependency,
    /// a transient condition).
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(code, message).with_retryable(true)
    }

    /// A `bad_input` error, not retryable: the same input fails the same way.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Self::BAD_INPUT, message)
    }

    /// This error with `retryable` set as given.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the scheduler may try again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for StepError {}

/// A JSON error inside a step almost always means a value did not have the
/// expected shape (`serde_json::from_value(..)?`), so it becomes `bad_input`.
impl From<serde_json::Error> for StepError {
    fn from(err: serde_json::Error) -> Self {
        Self::bad_input(err.to_string())
    }
}

impl From<StepError> for WitStepError {
    fn from(err: StepError) -> Self {
        Self {
            code: err.code,
            message: err.message,
            retryable: err.retryable,
        }
    }
}
