//! The Sluice broker.
//!
//! A map of the crate, one module per concern:
//!
//! - [`log`]: the partitioned append-only log — segments of record batches,
//!   sparse indexes, group commit, recovery, retention, the tail cache;
//! - [`meta`]: the metadata store, one RocksDB with a column family per kind
//!   of record (topics, group offsets, …);
//! - [`store`]: the two opened together from one data directory, the way the
//!   broker uses them;
//! - [`sched`]: the scheduler — delayed, loop and retry delivery on RocksDB,
//!   dispatched into the log exactly once;
//! - [`groups`]: consumer groups — membership and sticky assignment,
//!   per-partition delivery windows, acks, retries, dead letters, lag;
//! - [`functions`]: deployed WebAssembly functions — the registry, filters
//!   on groups, exactly-once transforms, handlers as group members;
//! - [`broker`]: dispatch — what the broker does with each request (the
//!   layer between the network and storage);
//! - [`net`]: the QUIC listener and its TLS;
//! - [`node`]: a running broker — store, dispatch and listener started together;
//! - [`config`]: broker settings from a TOML file, environment and flags;
//! - [`clock`]: wall-clock time behind a trait so time-driven logic is tested
//!   with a clock the test controls;
//! - [`cli`]: the `sluice` command line (`dev`, `serve`, `topic`, `produce`,
//!   `consume`, `delay`, `group`, `bench`);
//! - [`bench`]: the `sluice bench` programs that produce performance figures
//!   (storage, and producer / consumer / end to end over QUIC).
//!
//! The record-batch format itself lives in the `sluice-protocol` crate, shared
//! with clients.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod functions;
pub mod groups;
pub mod log;
pub mod meta;
pub mod net;
pub mod node;
pub mod sched;
pub mod store;
