//! Write Weft workflow steps as plain Rust functions over serde types.
//!
//! A step is a WebAssembly component (`wasm32-wasip2`) that exports the
//! `weft:step` world: one `run` function from a JSON string to a JSON string
//! or a [`StepError`]. This crate hides that contract behind one macro line:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use weft_sdk::{StepError, step};
//!
//! #[derive(Deserialize)]
//! struct Order { lines: Vec<f64> }
//!
//! #[derive(Serialize)]
//! struct Priced { total: f64 }
//!
//! fn run(input: Order) -> Result<Priced, StepError> {
//!     Ok(Priced { total: input.lines.iter().sum() })
//! }
//!
//! step!(run);
//! ```
//!
//! [`step!`] parses the input into the function's input type (failing with
//! code [`StepError::BAD_INPUT`]) and serialises its output (failing with
//! [`StepError::BAD_OUTPUT`]). [`raw_step!`] hands the function the input
//! string as it came and returns its string unchecked.
//!
//! [`invocation`] tells which tenant, run, step and attempt is running,
//! [`log`] writes to the step's log on the host, [`secret`] reads a secret
//! the step lists, and [`http`] sends requests to the hosts it may call.

mod error;
mod host;
pub mod http;
pub mod log;
mod secrets;

pub use error::StepError;
pub use host::{Invocation, invocation};
pub use secrets::secret;

/// Bindings generated from `wit/` (world `step`); used by the macros only.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "__export_step",
        default_bindings_module: "weft_sdk::__bindings",
        generate_all,
    });
}

/// Glue called by the code that [`step!`] and [`raw_step!`] expand to.
#[doc(hidden)]
pub mod __private {
    pub use crate::__bindings::Guest;

    use crate::__bindings::StepError as WitStepError;
    use crate::StepError;
    use serde::{Serialize, de::DeserializeOwned};

    /// Parses `input`, calls `run`, serialises its output.
    pub fn run_json<I, O, E, F>(input: &str, run: F) -> Result<String, StepError>
    where
        I: DeserializeOwned,
        O: Serialize,
        E: Into<StepError>,
        F: FnOnce(I) -> Result<O, E>,
    {
        let input: I = serde_json::from_str(input).map_err(|err| {
            StepError::new(
                StepError::BAD_INPUT,
                format!("input does not fit the step's input type: {err}"),
            )
        })?;
        let output = run(input).map_err(Into::into)?;
        serde_json::to_string(&output).map_err(|err| {
            StepError::new(
                StepError::BAD_OUTPUT,
                format!("output could not be serialised as JSON: {err}"),
            )
        })
    }

    /// [`run_json`] with the error converted to the WIT record.
    pub fn call_json<I, O, E, F>(input: String, run: F) -> Result<String, WitStepError>
    where
        I: DeserializeOwned,
        O: Serialize,
        E: Into<StepError>,
        F: FnOnce(I) -> Result<O, E>,
    {
        run_json(&input, run).map_err(Into::into)
    }

    /// Calls a raw step function, converting its error to the WIT record.
    pub fn call_raw<E, F>(input: String, run: F) -> Result<String, WitStepError>
    where
        E: Into<StepError>,
        F: FnOnce(String) -> Result<String, E>,
    {
        run(input).map_err(|err| err.into().into())
    }
}

/// Exports a function `fn(I) -> Result<O, E>` as the component's `run`.
///
/// `I: serde::de::DeserializeOwned`, `O: serde::Serialize` and
/// `E: Into<StepError>`; `serde_json::Value` works for both sides. Input that
/// does not parse into `I` fails with code `bad_input`, output that does not
/// serialise fails with code `bad_output`; neither is retryable.
///
/// Use it once per component crate, at the top level of `lib.rs`.
#[macro_export]
macro_rules! step {
    ($run:expr $(,)?) => {
        $crate::__export_run!($crate::__private::call_json, $run);
    };
}

/// Exports a function `fn(String) -> Result<String, E>` as the component's
/// `run`, with no JSON handling at all.
///
/// The function gets the input string exactly as the host sent it, and its
/// `Ok` string goes back unchecked (the host still rejects output that is not
/// JSON). For steps that ignore their input, pass it through, or must control
/// every byte of their output.
#[macro_export]
macro_rules! raw_step {
    ($run:expr $(,)?) => {
        $crate::__export_run!($crate::__private::call_raw, $run);
    };
}

/// Implements the generated `Guest` trait by calling `$glue(input, $run)`
/// and exports it.
#[doc(hidden)]
#[macro_export]
#[rustfmt::skip] // rustfmt mangles the indentation of the export call.
macro_rules! __export_run {
    ($glue:path, $run:expr) => {
        const _: () = {
            struct WeftStep;

            impl $crate::__private::Guest for WeftStep {
                fn run(
                    input: ::std::string::String,
                ) -> ::std::result::Result<::std::string::String, $crate::__bindings::StepError> {
                    $glue(input, $run)
                }
            }

            $crate::__bindings::__export_step!(WeftStep with_types_in $crate::__bindings);
        };
    };
}

#[cfg(test)]
mod tests;
