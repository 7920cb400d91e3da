//! Per-function counters: cheap atomics updated on every call, read as a
//! [`MetricsSnapshot`] by the broker's admin API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::ErrorKind;

/// Live counters of one function.
#[derive(Debug, Default)]
pub struct FunctionMetrics {
    calls: AtomicU64,
    messages: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    busy_ns: AtomicU64,
    fuel: AtomicU64,
    instances_created: AtomicU64,
    instances_recycled: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Calls made, failed ones included.
    pub calls: u64,
    /// Messages passed in those calls.
    pub messages: u64,
    /// Failed calls by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Time spent in calls (instance checkout included).
    pub busy: Duration,
    /// Fuel consumed (0 unless the engine counts fuel).
    pub fuel: u64,
    /// Instances created, and recycled (dropped after a trap, after their
    /// call budget or above their memory threshold).
    pub instances_created: u64,
    /// Instances dropped after a trap, their call budget, or growing above the memory threshold.
    pub instances_recycled: u64,
}

impl MetricsSnapshot {
    /// Failed calls of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl FunctionMetrics {
    pub(crate) fn record_call(&self, messages: usize, busy: Duration, fuel: u64) {
        self.calls.fetch_add(1, Relaxed);
        self.messages.fetch_add(messages as u64, Relaxed);
        self.busy_ns.fetch_add(busy.as_nanos() as u64, Relaxed);
        self.fuel.fetch_add(fuel, Relaxed);
    }

    pub(crate) fn record_error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// Zeroes the call counters (not the instance counters).
    pub(crate) fn reset_calls(&self) {
        for counter in [&self.calls, &self.messages, &self.busy_ns, &self.fuel]
            .into_iter()
            .chain(&self.errors)
        {
            counter.store(0, Relaxed);
        }
    }

    pub(crate) fn instance_created(&self) {
        self.instances_created.fetch_add(1, Relaxed);
    }

    pub(crate) fn instance_recycled(&self) {
        self.instances_recycled.fetch_add(1, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            calls: self.calls.load(Relaxed),
            messages: self.messages.load(Relaxed),
            errors: ErrorKind::ALL
                .iter()
                .zip(&self.errors)
                .map(|(k, n)| (*k, n.load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            busy: Duration::from_nanos(self.busy_ns.load(Relaxed)),
            fuel: self.fuel.load(Relaxed),
            instances_created: self.instances_created.load(Relaxed),
            instances_recycled: self.instances_recycled.load(Relaxed),
        }
    }
}
