//! Log lines kept in the function's bounded log (`sluice fn logs`).
//!
//! The broker keeps recent lines per deployment and drops (and counts) lines
//! beyond the deployment's rate, so logging never blocks a function. Use the
//! [`trace!`](crate::trace!), [`debug!`](crate::debug!), [`info!`](crate::info!),
//! [`warn!`](crate::warn!) and [`error!`](crate::error!) macros, which take
//! `format!` arguments. In native tests the lines are recorded by
//! [`testing::logs`](crate::testing::logs) and printed to stderr (which
//! `cargo test` shows for failing tests).

use std::fmt;

/// How important a log line is, lowest first.
///
/// ```
/// use sluice_guest::log::Level;
/// assert!(Level::Warn > Level::Info);
/// assert_eq!(Level::Error.to_string(), "error");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Most verbose: step-by-step detail, usually filtered out.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation worth noting.
    Info,
    /// Something unexpected that the function coped with.
    Warn,
    /// A failure; operators look at these first.
    Error,
}

impl Level {
    /// The lowercase name, as `sluice fn logs` prints it.
    ///
    /// ```
    /// assert_eq!(sluice_guest::log::Level::Debug.as_str(), "debug");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends one line to the function's log; the macros call this.
///
/// ```
/// use sluice_guest::log::{log, Level};
/// log(Level::Info, "started");
/// assert_eq!(sluice_guest::testing::logs()[0].message, "started");
/// ```
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::imports::sluice::bus::{log as wit, types::Level as W};
        let level = match level {
            Level::Trace => W::Trace,
            Level::Debug => W::Debug,
            Level::Info => W::Info,
            Level::Warn => W::Warn,
            Level::Error => W::Error,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::log(level, message);
}

/// Logs a line at [`Level::Trace`](crate::log::Level::Trace), with `format!` arguments.
///
/// ```
/// sluice_guest::trace!("parsed {} fields", 3);
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)+))
    };
}

/// Logs a line at [`Level::Debug`](crate::log::Level::Debug), with `format!` arguments.
///
/// ```
/// sluice_guest::debug!("cache size {}", 10);
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)+))
    };
}

/// Logs a line at [`Level::Info`](crate::log::Level::Info), with `format!` arguments.
///
/// ```
/// let customer = "c-42";
/// sluice_guest::info!("total for {customer} is {}", 12.5);
/// assert_eq!(sluice_guest::testing::logs()[0].message, "total for c-42 is 12.5");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)+))
    };
}

/// Logs a line at [`Level::Warn`](crate::log::Level::Warn), with `format!` arguments.
///
/// ```
/// sluice_guest::warn!("unknown field {:?} ignored", "colour");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)+))
    };
}

/// Logs a line at [`Level::Error`](crate::log::Level::Error), with `format!` arguments.
///
/// ```
/// sluice_guest::error!("cannot reach {}", "billing");
/// assert_eq!(sluice_guest::testing::logs()[0].level, sluice_guest::log::Level::Error);
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)+))
    };
}
