//! Functions end to end: the sample components deployed on a real broker
//! (in process, temp data dir) through the real client, and crash tests
//! that SIGKILL a broker child process.
//!
//! Nothing here sleeps to wait for a timeout: the reminder test moves a
//! `ManualClock`, every wait polls for a state with a generous deadline,
//! and guests that never return get a short per-call deadline. The one
//! bounded window is the reminder's "not before it is due" check, which
//! has to outlast a turn of the scheduler (at most a second).
//!
//! One binary, a module per concern.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod guests;
mod load;
mod outputs;
mod samples;
mod support;
