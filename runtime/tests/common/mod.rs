//! What the integration tests share: brokers to test against (in process,
//! or a child process to SIGKILL), producing and reading messages, group
//! members' polling, waiting for a state, and running the `sluice` binary.
//!
//! Each test binary includes this module (`mod common;`) and uses its own
//! part of it: the rest, re-exports included, is unused there.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod child;
pub mod cli;
pub mod client;
pub mod groups;
pub mod records;
pub mod store;

pub use broker::{AsyncBroker, Broker};
pub use cli::{cells, describe, exits, fails, ok, run, run_with_stdin, sluice};
pub use client::{WAIT, produce, wait_for};
