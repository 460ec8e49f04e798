//! Writing to the step's log on the host.
//!
//! Each call becomes one log record of the running step, with its level.
//! The macros [`trace!`](crate::trace), [`debug!`](crate::debug),
//! [`info!`](crate::info), [`warn!`](crate::warn) and
//! [`error!`](crate::error) take `format!` arguments.

/// How important a log record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Useful when debugging the step.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the step handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` to the step's log at `level`.
///
/// Outside a component (native unit tests) it goes to stderr instead.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::__bindings::weft::step::host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("[{level:?}] {message}");
    }
}

/// Writes `message` to the step's log at level trace.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes `message` to the step's log at level debug.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes `message` to the step's log at level info.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes `message` to the step's log at level warn.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes `message` to the step's log at level error.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a `format!` message at level trace.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at level debug.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at level info.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at level warn.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at level error.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}
