//! Why a host call failed.

use std::fmt;

/// Why a host call ([`emit`](crate::emit()), [`schedule`](crate::schedule),
/// [`kv`](crate::kv)) failed; mirrors the WIT `host-error` variant.
///
/// Only [`HostError::Unavailable`] is worth retrying. In a handler, `?`-style
/// conversion into an [`Outcome`](crate::Outcome) does the usual thing:
/// unavailable → retry after the group's backoff, anything else → dead-letter.
///
/// ```
/// use sluice_guest::{HostError, Outcome};
/// let e = HostError::Unavailable("kv store is compacting".into());
/// assert!(e.is_retryable());
/// assert_eq!(Outcome::from(e), Outcome::retry());
/// let e = HostError::Denied("topic payments is not an allowed output".into());
/// assert_eq!(e.to_string(), "denied: topic payments is not an allowed output");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostError {
    /// The deployment does not grant this (for example emitting to a topic
    /// outside its allowed outputs).
    Denied(String),
    /// An argument is invalid (unknown topic, time beyond the scheduler's
    /// horizon, oversized value ...).
    Invalid(String),
    /// A per-call budget is spent (emitted bytes, kv entries ...).
    LimitExceeded(String),
    /// The host could not do it now; retrying the message may succeed.
    Unavailable(String),
}

impl HostError {
    /// Whether retrying the message may succeed.
    ///
    /// ```
    /// assert!(!sluice_guest::HostError::Invalid("bad topic".into()).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, HostError::Unavailable(_))
    }

    /// The host's explanation, without the kind.
    ///
    /// ```
    /// let e = sluice_guest::HostError::LimitExceeded("1000 kv entries".into());
    /// assert_eq!(e.message(), "1000 kv entries");
    /// ```
    pub fn message(&self) -> &str {
        match self {
            HostError::Denied(m)
            | HostError::Invalid(m)
            | HostError::LimitExceeded(m)
            | HostError::Unavailable(m) => m,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            HostError::Denied(_) => "denied",
            HostError::Invalid(_) => "invalid",
            HostError::LimitExceeded(_) => "limit exceeded",
            HostError::Unavailable(_) => "unavailable",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for HostError {}

impl From<crate::bindings::WitHostError> for HostError {
    fn from(e: crate::bindings::WitHostError) -> Self {
        use crate::bindings::WitHostError as W;
        match e {
            W::Denied(m) => HostError::Denied(m),
            W::Invalid(m) => HostError::Invalid(m),
            W::LimitExceeded(m) => HostError::LimitExceeded(m),
            W::Unavailable(m) => HostError::Unavailable(m),
        }
    }
}
