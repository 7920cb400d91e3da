//! The Sluice broker: everything between the network and storage.
//!
//! The house, from the ground up (each crate imports only those below it):
//!
//! ```text
//! sluice (runtime/)   the binary: cli, bench, the embedded demo
//!   sluice-broker     this crate
//!     sluice-log      the partitioned append-only log      (protocol only)
//!     sluice-meta     the metadata store (RocksDB)          (nobody)
//!     sluice-quic     UDP socket and QUIC windows, shared with the client
//!     sluice-host-api the wasm engine functions run in
//!     sluice-protocol frames, codec, batches and ops, shared with clients
//! ```
//!
//! A map of this crate, one module per concern, lower layers first:
//!
//! - [`store`]: the log and the metadata store opened together from one data
//!   directory, and the [`store::catalog`] of topics and group offsets;
//! - [`sched`]: the scheduler — delayed, loop and retry delivery on RocksDB,
//!   dispatched into the log exactly once;
//! - [`groups`]: consumer groups — membership and sticky assignment,
//!   per-partition delivery windows, acks, retries, dead letters, lag;
//! - [`functions`]: deployed WebAssembly functions — the registry, filters
//!   on groups, exactly-once transforms, handlers as group members;
//! - [`broker`]: dispatch — what the broker does with each request;
//! - [`net`]: the QUIC listener and its TLS;
//! - [`node`]: a running broker — store, dispatch and listener started together;
//! - [`config`]: broker settings from a TOML file, environment and flags.
//!
//! Each subsystem declares the metadata column families it keeps
//! ([`KEYSPACES`] lists them all) and reaches them through typed tables; the
//! metadata store itself knows none of them. The lower crates are re-exported
//! under their module names ([`log`], [`meta`], [`clock`]) so the broker's
//! own code and its users name them one way.

pub use sluice_log as log;
pub use sluice_log::clock;
pub use sluice_meta as meta;

pub mod broker;
pub mod config;
pub mod functions;
pub mod groups;
pub mod net;
pub mod node;
pub mod sched;
pub mod store;

/// Every column family the broker's subsystems keep in the metadata store
/// (the catalog's are added by [`store::Store::open`]).
pub fn keyspaces() -> Vec<meta::Keyspace> {
    [groups::KEYSPACES, sched::KEYSPACES, functions::KEYSPACES].concat()
}
