//! Record headers with a meaning to Sluice.
//!
//! A Sluice message is a Kafka record: key and value as they are, and its
//! message id, tags and user properties as record headers. Header names that
//! start with `sluice.` are reserved; every other header is a user property.

/// The message's unique id: 16 bytes, time-ordered (a UUIDv7), set by the producer.
pub const MESSAGE_ID: &str = "sluice.id";
/// One tag per header (UTF-8); a message may carry several.
pub const TAG: &str = "sluice.tag";
/// On a message delivered by the scheduler: the delay id it was scheduled
/// under (a `u64`, 8 bytes big-endian), the id `CancelDelays` takes.
pub const DELAY_ID: &str = "sluice.delay-id";
/// On each delivery of a loop message: which delivery it is (a `u32`,
/// 4 bytes big-endian, 1 for the first).
pub const LOOP_ITERATION: &str = "sluice.loop-iteration";
/// On a message delivered by the scheduler: when it was due (ms since the
/// epoch, an `i64`, 8 bytes big-endian). Never later than the record's
/// timestamp when the timestamp is the delivery time.
pub const DUE_AT: &str = "sluice.due-at";
/// On a consumer group's retry and dead-letter copies: how many deliveries
/// of the message failed so far (a `u32`, 4 bytes big-endian).
pub const ATTEMPT: &str = "sluice.attempt";
/// On retry and dead-letter copies: the topic the message was first
/// consumed from (UTF-8).
pub const ORIGIN_TOPIC: &str = "sluice.origin-topic";
/// On retry and dead-letter copies: its partition there (`u32` BE).
pub const ORIGIN_PARTITION: &str = "sluice.origin-partition";
/// On retry and dead-letter copies: its offset there (`u64` BE).
pub const ORIGIN_OFFSET: &str = "sluice.origin-offset";
/// On a dead letter: why its last delivery failed (UTF-8): the consumer's
/// nack reason (`failed` when it gave none), or `ack timeout`.
pub const DEAD_REASON: &str = "sluice.dead-reason";
/// Prefix of every reserved header name.
pub const RESERVED_PREFIX: &str = "sluice.";

/// Whether a header name is reserved for Sluice (and so not a user property).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}
