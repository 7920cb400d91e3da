//! Publish messages now.

use crate::{HostError, OutMessage};

/// Publishes `msg` to `topic` now. The message is durable once the batch
/// that caused it is committed; the deployment must allow `topic` as an
/// output.
///
/// A transform should return its outputs through
/// [`Outputs`](crate::Outputs) instead: those commit atomically with the
/// input's offset, while `emit` is for side messages (audit trails,
/// notifications) from any kind of function.
///
/// ```
/// use sluice_guest::{emit, testing, OutMessage};
/// emit("audit", OutMessage::new("order 42 paid").tag("payments")).unwrap();
/// let sent = testing::emitted();
/// assert_eq!(sent[0].topic, "audit");
/// assert_eq!(sent[0].message.value, b"order 42 paid");
/// ```
pub fn emit(topic: &str, msg: OutMessage) -> Result<(), HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::imports::sluice::bus::{emit as wit, types::OutgoingMessage};
        wit::emit(topic, &OutgoingMessage::from(msg)).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::emit(topic, msg)
}
