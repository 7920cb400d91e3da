//! The `sluice` binary's library: the command line and the benchmark
//! programs, over the broker crates.
//!
//! - [`cli`]: the `sluice` command line (`dev`, `serve`, `topic`, `produce`,
//!   `consume`, `delay`, `group`, `fn`, `bench`);
//! - [`bench`]: the `sluice bench` programs that produce performance figures
//!   (storage, and producer / consumer / end to end over QUIC, groups, the
//!   scheduler, functions).
//!
//! The broker itself is the `sluice-broker` crate (its lib.rs draws the
//! layers); the sample functions embedded for `sluice dev --demo` and
//! `sluice bench fn` come in with the `demo` feature, on by default.

pub mod bench;
pub mod cli;
