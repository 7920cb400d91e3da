//! Error codes: every error on the wire is a code plus a human message.
//!
//! Codes are stable: a client branches on the code (retry, fail, treat as
//! success) and shows the message. New codes may be added; a client treats
//! an unknown code as a non-retriable error.

/// The wire error codes (a `u16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No error.
    None,
    /// Something unexpected on the broker; the message says what.
    Internal,
    /// The payload does not decode for its op.
    MalformedRequest,
    /// The frame is over the limit or its length is impossible; the stream is closed.
    MalformedFrame,
    /// The op is unknown to this broker.
    UnknownOp,
    /// No protocol version both sides speak.
    UnsupportedVersion,
    /// The token was refused.
    AuthenticationFailed,
    /// A request came before a successful handshake.
    NotAuthenticated,
    /// No topic of that name.
    UnknownTopic,
    /// The topic has no partition of that id.
    UnknownPartition,
    /// CreateTopic of a topic that already exists.
    TopicAlreadyExists,
    /// A topic name or setting is not valid.
    InvalidConfig,
    /// A batch or message is over the size limit.
    MessageTooLarge,
    /// A batch failed its checks (CRC, layout, compression).
    InvalidBatch,
    /// The offset is before the log start or after its end.
    OffsetOutOfRange,
    /// The batch's producer sequence does not follow the last one written.
    OutOfOrderSequence,
    /// The producer's epoch is older than one already seen.
    ProducerFenced,
    /// Storage failed (I/O, fsync); the partition may refuse writes until
    /// restart, so it is not retried automatically.
    StorageError,
    /// The broker is shutting down; retry against it once it is back.
    ShuttingDown,
    /// A limit (connections, streams, in-flight requests) was hit.
    LimitExceeded,
    /// The request timed out on the broker.
    Timeout,
    /// A request field is out of range or inconsistent (a delivery time
    /// beyond the scheduler's horizon, invalid loop parameters, ...); the
    /// message says which.
    InvalidArgument,
    /// No such consumer group.
    UnknownGroup,
    /// The member is not (or no longer) in the group: its session expired,
    /// it left, or the broker restarted. Join again.
    UnknownMember,
    /// A join asks for settings (topic, mode, filter, ...) that differ from
    /// those of the group's live members.
    InconsistentGroup,
    /// No such function.
    UnknownFunction,
    /// A function deploy was refused: the component fails validation, does
    /// not implement the world its kind needs, or the manifest is invalid;
    /// the message says which.
    InvalidFunction,
    /// A code this client does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::Internal => 1,
            ErrorCode::MalformedRequest => 2,
            ErrorCode::MalformedFrame => 3,
            ErrorCode::UnknownOp => 4,
            ErrorCode::UnsupportedVersion => 5,
            ErrorCode::AuthenticationFailed => 6,
            ErrorCode::NotAuthenticated => 7,
            ErrorCode::UnknownTopic => 8,
            ErrorCode::UnknownPartition => 9,
            ErrorCode::TopicAlreadyExists => 10,
            ErrorCode::InvalidConfig => 11,
            ErrorCode::MessageTooLarge => 12,
            ErrorCode::InvalidBatch => 13,
            ErrorCode::OffsetOutOfRange => 14,
            ErrorCode::OutOfOrderSequence => 15,
            ErrorCode::ProducerFenced => 16,
            ErrorCode::StorageError => 17,
            ErrorCode::ShuttingDown => 18,
            ErrorCode::LimitExceeded => 19,
            ErrorCode::Timeout => 20,
            ErrorCode::InvalidArgument => 21,
            ErrorCode::UnknownGroup => 22,
            ErrorCode::UnknownMember => 23,
            ErrorCode::InconsistentGroup => 24,
            ErrorCode::UnknownFunction => 25,
            ErrorCode::InvalidFunction => 26,
            ErrorCode::Unknown(c) => c,
        }
    }

    /// The code for a number off the wire; numbers this build does not know become [`ErrorCode::Unknown`] (not retriable).
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => ErrorCode::None,
            1 => ErrorCode::Internal,
            2 => ErrorCode::MalformedRequest,
            3 => ErrorCode::MalformedFrame,
            4 => ErrorCode::UnknownOp,
            5 => ErrorCode::UnsupportedVersion,
            6 => ErrorCode::AuthenticationFailed,
            7 => ErrorCode::NotAuthenticated,
            8 => ErrorCode::UnknownTopic,
            9 => ErrorCode::UnknownPartition,
            10 => ErrorCode::TopicAlreadyExists,
            11 => ErrorCode::InvalidConfig,
            12 => ErrorCode::MessageTooLarge,
            13 => ErrorCode::InvalidBatch,
            14 => ErrorCode::OffsetOutOfRange,
            15 => ErrorCode::OutOfOrderSequence,
            16 => ErrorCode::ProducerFenced,
            17 => ErrorCode::StorageError,
            18 => ErrorCode::ShuttingDown,
            19 => ErrorCode::LimitExceeded,
            20 => ErrorCode::Timeout,
            21 => ErrorCode::InvalidArgument,
            22 => ErrorCode::UnknownGroup,
            23 => ErrorCode::UnknownMember,
            24 => ErrorCode::InconsistentGroup,
            25 => ErrorCode::UnknownFunction,
            26 => ErrorCode::InvalidFunction,
            c => ErrorCode::Unknown(c),
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::ShuttingDown | ErrorCode::Timeout | ErrorCode::LimitExceeded
        )
    }

    /// A short stable name, as docs/protocol.md lists it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::MalformedRequest => "MALFORMED_REQUEST",
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::NotAuthenticated => "NOT_AUTHENTICATED",
            ErrorCode::UnknownTopic => "UNKNOWN_TOPIC",
            ErrorCode::UnknownPartition => "UNKNOWN_PARTITION",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::InvalidBatch => "INVALID_BATCH",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            ErrorCode::ProducerFenced => "PRODUCER_FENCED",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::UnknownGroup => "UNKNOWN_GROUP",
            ErrorCode::UnknownMember => "UNKNOWN_MEMBER",
            ErrorCode::InconsistentGroup => "INCONSISTENT_GROUP",
            ErrorCode::UnknownFunction => "UNKNOWN_FUNCTION",
            ErrorCode::InvalidFunction => "INVALID_FUNCTION",
            ErrorCode::Unknown(_) => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.to_u16())
    }
}

/// An error as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// What went wrong, for a client to branch on.
    pub code: ErrorCode,
    /// Detail for people; do not parse it.
    pub message: String,
}

impl WireError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in 0..=30u16 {
            assert_eq!(ErrorCode::from_u16(c).to_u16(), c);
        }
        for c in 1..=26u16 {
            assert!(
                !matches!(ErrorCode::from_u16(c), ErrorCode::Unknown(_)),
                "{c}"
            );
        }
        assert_eq!(ErrorCode::from_u16(27), ErrorCode::Unknown(27));
    }

    #[test]
    fn function_codes_have_names_and_are_final() {
        assert_eq!(
            ErrorCode::UnknownFunction.to_string(),
            "UNKNOWN_FUNCTION (25)"
        );
        assert_eq!(
            ErrorCode::InvalidFunction.to_string(),
            "INVALID_FUNCTION (26)"
        );
        assert!(!ErrorCode::UnknownFunction.is_retriable());
        assert!(!ErrorCode::InvalidFunction.is_retriable());
    }
}
