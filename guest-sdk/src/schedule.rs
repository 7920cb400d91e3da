//! Publish messages later, through the broker's delay scheduler.
//!
//! Each scheduled message gets a delay id, which [`cancel`] takes while the
//! message is still pending.

use std::time::Duration;

use crate::{HostError, OutMessage};

/// Publishes `msg` to `topic` at `at_ms` (milliseconds since the Unix
/// epoch; a time in the past means now). Returns the delay id.
///
/// ```
/// use sluice_guest::{clock, schedule, testing, OutMessage};
/// let at = clock::now_ms() + 3_600_000;
/// let id = schedule::at("reminders", at, OutMessage::new("call back")).unwrap();
/// assert_eq!(testing::scheduled()[0].id, id);
/// assert_eq!(testing::scheduled()[0].at_ms, at);
/// ```
pub fn at(topic: &str, at_ms: u64, msg: OutMessage) -> Result<String, HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::imports::sluice::bus::{schedule as wit, types::OutgoingMessage};
        wit::schedule_at(topic, at_ms, &OutgoingMessage::from(msg)).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::schedule(topic, None, at_ms, msg)
}

/// Publishes `msg` to `topic` after `delay` (whole milliseconds). Returns
/// the delay id.
///
/// ```
/// use std::time::Duration;
/// use sluice_guest::{clock, schedule, testing, OutMessage};
/// schedule::after("reminders", Duration::from_secs(60), OutMessage::new("ping")).unwrap();
/// assert_eq!(testing::scheduled()[0].at_ms, clock::now_ms() + 60_000);
/// ```
pub fn after(topic: &str, delay: Duration, msg: OutMessage) -> Result<String, HostError> {
    after_ms(
        topic,
        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        msg,
    )
}

/// Publishes `msg` to `topic` after `delay_ms` milliseconds. Returns the
/// delay id.
///
/// ```
/// use sluice_guest::{schedule, testing, OutMessage};
/// let id = schedule::after_ms("reminders", 500, OutMessage::new("ping")).unwrap();
/// assert_eq!(testing::scheduled()[0].id, id);
/// ```
pub fn after_ms(topic: &str, delay_ms: u64, msg: OutMessage) -> Result<String, HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::imports::sluice::bus::{schedule as wit, types::OutgoingMessage};
        wit::schedule_after(topic, delay_ms, &OutgoingMessage::from(msg)).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let at_ms = crate::clock::now_ms().saturating_add(delay_ms);
        crate::testing::mock::schedule(topic, Some(delay_ms), at_ms, msg)
    }
}

/// Cancels a pending delay. `Ok(false)` when the id is unknown or the
/// message was already delivered.
///
/// ```
/// use sluice_guest::{schedule, testing, OutMessage};
/// let id = schedule::after_ms("reminders", 500, OutMessage::new("ping")).unwrap();
/// assert_eq!(schedule::cancel(&id), Ok(true));
/// assert_eq!(schedule::cancel(&id), Ok(false));
/// assert!(testing::scheduled().is_empty());
/// ```
pub fn cancel(id: &str) -> Result<bool, HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::schedule::cancel(id).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::cancel(id)
}
