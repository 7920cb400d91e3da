//! Runs Sluice functions: WebAssembly components that filter, transform and
//! handle messages next to the log.
//!
//! This crate knows wasmtime and the `sluice:bus` WIT package, not topics or
//! QUIC: the broker hands it record-batch bytes and gets answers and side
//! effects back.
//!
//! - [`engine`]: one wasmtime engine for all functions — validation,
//!   precompilation with an on-disk cache, the epoch ticker behind call
//!   deadlines, the pooling allocator;
//! - [`function`]: a loaded function, its pool of ready instances, and the
//!   batch calls (`filter`, `transform`, `handle`, and `*_async` variants that
//!   run on blocking threads);
//! - [`world`]: the three worlds and the import/export check;
//! - [`services`]: the capabilities host calls reach (kv reads, delay
//!   cancellation, clock, log) as traits the broker implements, with an
//!   in-memory implementation; emits, schedules and kv writes come back as
//!   per-call [`Effects`] to commit with the batch;
//! - [`metrics`]: per-function counters;
//! - [`error`]: [`LoadError`] for deployments and [`CallError`] for calls;
//! - `host` and `cache` (private): the Store state and host-call
//!   implementations, and the compiled-component cache.
//!
//! ```no_run
//! use sluice_host_api::{BatchContext, Engine, EngineConfig, FunctionSpec, Services};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(EngineConfig::default())?;
//! let (services, _memory) = Services::in_memory();
//! let mut spec = FunctionSpec::new("only-red", services);
//! spec.config.insert("tags".into(), "red".into());
//! let filter = engine.load(spec, &std::fs::read("tag_filter.wasm")?)?;
//! # let batch: Vec<u8> = Vec::new();
//! let context = BatchContext { topic: "orders".into(), partition: 0, group: None };
//! let verdicts = filter.filter(&context, &batch)?.answer;
//! println!("{} of {} messages kept", verdicts.kept(), verdicts.len());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod engine;
pub mod error;
pub mod function;
pub mod metrics;
pub mod services;
pub mod world;

mod cache;
mod guest_output;
mod host;

pub use engine::{Engine, EngineConfig, EngineError};
pub use error::{CallError, ErrorKind, LoadError};
pub use function::{
    BatchContext, CallOutput, FilterVerdicts, Function, FunctionLimits, FunctionSpec, Outcome,
    TransformOutput,
};
pub use metrics::{FunctionMetrics, MetricsSnapshot};
pub use services::{
    Clock, DelayLookup, Effects, Emitted, Header, HostError, InMemoryServices, KvStore, Level,
    LogSink, OutgoingMessage, Scheduled, Services, SystemClock,
};
pub use world::FunctionKind;

/// The content digest a loaded [`Function`] reports (SHA-256, lowercase
/// hex): lets a caller tell whether bytes are already deployed.
pub fn component_digest(bytes: &[u8]) -> String {
    cache::digest(bytes)
}
