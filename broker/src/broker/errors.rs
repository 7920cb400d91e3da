//! The one place domain errors become wire errors.
//!
//! Each error type a request can fail with says, through [`ToWire`], which
//! [`ErrorCode`] a client gets for it and with what message. Dispatch calls
//! `.to_wire()` at the edge and nothing else picks codes, so a code a
//! client acts on (docs/protocol.md lists them per op) changes here or
//! nowhere. Wrapping errors delegate to what they wrap, so a log error
//! inside a group error gets the log error's code.

use sluice_protocol::{ErrorCode, WireError};
use tokio::task::JoinError;

use crate::functions::FunctionError;
use crate::groups::GroupError;
use crate::log::{LogError, SetError};
use crate::meta::MetaError;
use crate::sched::SchedError;
use crate::store::StoreError;

/// A domain error as the client sees it: a code it can act on and a message.
pub trait ToWire {
    fn to_wire(&self) -> WireError;
}

/// `e.to_wire()`, as a function for `map_err`.
pub fn to_wire<E: ToWire>(e: E) -> WireError {
    e.to_wire()
}

impl ToWire for LogError {
    fn to_wire(&self) -> WireError {
        let code = match self {
            LogError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            LogError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            LogError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            LogError::InvalidTopicName { .. } | LogError::InvalidConfig(_) => {
                ErrorCode::InvalidConfig
            }
            LogError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            LogError::InvalidBatch(_) => ErrorCode::InvalidBatch,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            LogError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            LogError::Corrupt { .. } | LogError::AlreadyWritten => ErrorCode::Internal,
            LogError::Failed { .. } | LogError::Io { .. } => ErrorCode::StorageError,
        };
        WireError::new(code, self.to_string())
    }
}

/// A topic setting a create request carries that the log refused.
impl ToWire for SetError {
    fn to_wire(&self) -> WireError {
        WireError::new(ErrorCode::InvalidConfig, self.to_string())
    }
}

impl ToWire for MetaError {
    fn to_wire(&self) -> WireError {
        WireError::new(ErrorCode::StorageError, self.to_string())
    }
}

impl ToWire for StoreError {
    fn to_wire(&self) -> WireError {
        match self {
            StoreError::Log(e) => e.to_wire(),
            // A name the metadata store cannot hold is the caller's mistake.
            StoreError::Meta(MetaError::InvalidName(n)) => {
                WireError::new(ErrorCode::InvalidConfig, n.clone())
            }
            StoreError::Meta(e) => e.to_wire(),
        }
    }
}

impl ToWire for GroupError {
    fn to_wire(&self) -> WireError {
        match self {
            GroupError::UnknownGroup(_) => {
                WireError::new(ErrorCode::UnknownGroup, self.to_string())
            }
            GroupError::UnknownMember { .. } => {
                WireError::new(ErrorCode::UnknownMember, self.to_string())
            }
            GroupError::Inconsistent(m) => WireError::new(ErrorCode::InconsistentGroup, m.clone()),
            GroupError::Invalid(m) => WireError::new(ErrorCode::InvalidArgument, m.clone()),
            GroupError::Internal(m) => WireError::new(ErrorCode::Internal, m.clone()),
            GroupError::Log(e) => e.to_wire(),
            GroupError::Meta(e) => e.to_wire(),
            GroupError::Store(e) => e.to_wire(),
            GroupError::Sched(e) => e.to_wire(),
        }
    }
}

impl ToWire for SchedError {
    fn to_wire(&self) -> WireError {
        match self {
            SchedError::Invalid(m) => WireError::new(ErrorCode::InvalidArgument, m.clone()),
            SchedError::Loop(e) => WireError::new(ErrorCode::InvalidArgument, e.to_string()),
            SchedError::TooLarge(m) => WireError::new(ErrorCode::MessageTooLarge, m.clone()),
            SchedError::Unavailable(m) => WireError::new(ErrorCode::StorageError, m.clone()),
            SchedError::Log(e) => e.to_wire(),
            SchedError::Meta(e) => e.to_wire(),
            SchedError::Rocks(_) | SchedError::Corrupt(_) => {
                WireError::new(ErrorCode::StorageError, self.to_string())
            }
        }
    }
}

impl ToWire for FunctionError {
    fn to_wire(&self) -> WireError {
        let code = match self {
            FunctionError::Unknown(_) => ErrorCode::UnknownFunction,
            FunctionError::Invalid(_) | FunctionError::Load(_) | FunctionError::Refused(_) => {
                ErrorCode::InvalidFunction
            }
            FunctionError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            FunctionError::Meta(_)
            | FunctionError::Engine(_)
            | FunctionError::MissingComponent { .. }
            | FunctionError::StoreComponent(_)
            | FunctionError::ComponentOfVersion { .. }
            | FunctionError::Task(_) => ErrorCode::StorageError,
        };
        WireError::new(code, self.to_string())
    }
}

/// A blocking task that panicked or was cancelled: the broker's fault.
impl ToWire for JoinError {
    fn to_wire(&self) -> WireError {
        WireError::new(ErrorCode::Internal, format!("task failed: {self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_the_code_of_what_they_wrap() {
        let log = || LogError::UnknownTopic("t".into());
        let direct = log().to_wire();
        assert_eq!(direct.code, ErrorCode::UnknownTopic);
        for wrapped in [
            GroupError::Log(log()).to_wire(),
            GroupError::Store(StoreError::Log(log())).to_wire(),
            SchedError::Log(log()).to_wire(),
            StoreError::Log(log()).to_wire(),
        ] {
            assert_eq!(wrapped, direct);
        }
    }

    #[test]
    fn codes_of_messages_carried_as_text() {
        let e = StoreError::Meta(MetaError::InvalidName("bad name".into())).to_wire();
        assert_eq!(
            e,
            WireError::new(ErrorCode::InvalidConfig, "bad name".to_owned())
        );
        let e = GroupError::Inconsistent("differs".into()).to_wire();
        assert_eq!(
            e,
            WireError::new(ErrorCode::InconsistentGroup, "differs".to_owned())
        );
        let e = SchedError::TooLarge("big".into()).to_wire();
        assert_eq!(e.code, ErrorCode::MessageTooLarge);
        let e = FunctionError::Unknown("f".into()).to_wire();
        assert_eq!(e.code, ErrorCode::UnknownFunction);
    }
}
