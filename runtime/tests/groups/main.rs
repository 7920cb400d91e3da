//! Consumer groups end to end: a real broker started in process (on a temp
//! data dir, some on a manual clock), the real client, and one crash test
//! with the broker as a child process SIGKILLed after acks.
//!
//! Nothing here sleeps to wait for a timeout: time-dependent tests move a
//! `ManualClock` (the broker's group upkeep runs every 50 ms of real time
//! and reads it), and every wait polls for a state with a generous deadline.
//!
//! One binary, a module per concern; [`matrix`] runs every combination of
//! delivery mode, ordering and filter through the same checks.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod crash;
mod failures;
mod filters;
mod matrix;
mod order;
mod push;
mod sharing;
