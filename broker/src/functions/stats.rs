//! Per-function metrics across all its versions: invocations, messages,
//! errors by kind, call latency (an HDR histogram, in microseconds) and
//! fuel. The engine keeps per-version counters too; these survive upgrades
//! and are what the admin API reports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use sluice_host_api::{CallError, MetricsSnapshot};
use sluice_protocol::ops::function::FunctionMetrics;

#[derive(Debug)]
pub struct FnStats {
    invocations: AtomicU64,
    messages: AtomicU64,
    fuel: AtomicU64,
    busy_us: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency_us: Mutex<Histogram<u64>>,
}

impl Default for FnStats {
    fn default() -> Self {
        FnStats {
            invocations: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
        }
    }
}

impl FnStats {
    /// A successful call over `messages` messages.
    pub fn call(&self, messages: usize, elapsed: Duration, fuel: u64) {
        self.invocations.fetch_add(1, Relaxed);
        self.messages.fetch_add(messages as u64, Relaxed);
        self.fuel.fetch_add(fuel, Relaxed);
        self.latency(elapsed);
    }

    /// A failed call.
    pub fn failed(&self, messages: usize, elapsed: Duration, error: &CallError) {
        self.invocations.fetch_add(1, Relaxed);
        self.messages.fetch_add(messages as u64, Relaxed);
        self.error(error.kind.as_str());
        self.latency(elapsed);
    }

    /// An error that is not a failed call (`commit`: the call's effects
    /// could not be stored; `dead_letter`: a message was given up).
    pub fn error(&self, kind: &str) {
        *self.errors.lock().entry(kind.to_owned()).or_default() += 1;
    }

    fn latency(&self, elapsed: Duration) {
        let us = elapsed.as_micros().clamp(1, u128::from(u64::MAX)) as u64;
        self.busy_us.fetch_add(us, Relaxed);
        self.latency_us.lock().saturating_record(us);
    }

    /// The metrics as the admin API reports them; `engine` adds the
    /// active version's instance counters.
    pub fn snapshot(&self, engine: Option<&MetricsSnapshot>, logs: (u64, u64)) -> FunctionMetrics {
        let h = self.latency_us.lock();
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        FunctionMetrics {
            invocations: self.invocations.load(Relaxed),
            messages: self.messages.load(Relaxed),
            errors: self
                .errors
                .lock()
                .iter()
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            latency_p50_us: q(0.5),
            latency_p99_us: q(0.99),
            latency_max_us: if h.is_empty() { 0 } else { h.max() },
            fuel: self.fuel.load(Relaxed),
            busy_us: self.busy_us.load(Relaxed),
            instances_created: engine.map_or(0, |m| m.instances_created),
            instances_recycled: engine.map_or(0, |m| m.instances_recycled),
            log_lines: logs.0,
            log_dropped: logs.1,
        }
    }

    pub fn invocations(&self) -> u64 {
        self.invocations.load(Relaxed)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.lock().values().sum()
    }
}
