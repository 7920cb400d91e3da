//! Record headers with a meaning to Sluice.
//!
//! A Sluice message is a Kafka record: key and value as they are, and its
//! message id, tags and user properties as record headers. Header names that
//! start with `sluice.` are reserved; every other header is a user property.

/// The message's unique id: 16 bytes, time-ordered (a UUIDv7), set by the producer.
pub const MESSAGE_ID: &str = "sluice.id";
/// One tag per header (UTF-8); a message may carry several.
pub const TAG: &str = "sluice.tag";
/// Prefix of every reserved header name.
pub const RESERVED_PREFIX: &str = "sluice.";

/// Whether a header name is reserved for Sluice (and so not a user property).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}
