//! Time as the broker sees it.
//!
//! Use this rather than `std::time::SystemTime`: the broker controls it
//! (tests and replays can pin it), and in native tests it is
//! [`testing`](crate::testing)'s clock, which starts at
//! [`testing::DEFAULT_NOW_MS`](crate::testing::DEFAULT_NOW_MS) and only moves
//! when the test moves it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
///
/// ```
/// sluice_guest::testing::set_now_ms(1_700_000_000_000);
/// assert_eq!(sluice_guest::clock::now_ms(), 1_700_000_000_000);
/// ```
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::clock::now_ms()
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::now_ms()
}

/// The current time as a [`SystemTime`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// sluice_guest::testing::set_now_ms(1_000);
/// assert_eq!(sluice_guest::clock::now(), UNIX_EPOCH + Duration::from_secs(1));
/// ```
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(now_ms())
}
