//! The broker side of the host capabilities: what a guest's reads and log
//! lines reach while it runs. Writes (emit, schedule, kv set/delete,
//! cancel) come back from the call as `Effects` and are committed by the
//! runners with the batch they belong to.

use std::sync::Arc;

use sluice_host_api::{Clock, DelayLookup, HostError, KvStore, Level, LogSink, Services};
use sluice_protocol::ops::function::LogLevel;

use super::logbook::LogBook;
use super::store::FunctionStore;
use crate::sched::Scheduler;

/// The services of one version of one function: its kv namespace, its
/// delay ids, the broker's clock, its log.
pub fn services(
    store: &FunctionStore,
    scheduler: Arc<Scheduler>,
    name: &str,
    version: u32,
    clock: Arc<dyn crate::clock::Clock>,
    log: Arc<LogBook>,
) -> Services {
    let scoped = Arc::new(Scoped {
        store: store.clone(),
        scheduler,
        name: name.to_owned(),
        version,
        clock,
        log,
    });
    Services {
        kv: scoped.clone(),
        delays: scoped.clone(),
        clock: scoped.clone(),
        log: scoped,
    }
}

struct Scoped {
    store: FunctionStore,
    scheduler: Arc<Scheduler>,
    name: String,
    version: u32,
    clock: Arc<dyn crate::clock::Clock>,
    log: Arc<LogBook>,
}

fn unavailable(e: impl std::fmt::Display) -> HostError {
    HostError::Unavailable(e.to_string())
}

impl KvStore for Scoped {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.store.kv_get(&self.name, key).map_err(unavailable)
    }
}

impl DelayLookup for Scoped {
    fn is_pending(&self, id: &str) -> Result<bool, HostError> {
        match self.store.delay(&self.name, id).map_err(unavailable)? {
            Some(delay_id) => self.scheduler.is_pending(delay_id).map_err(unavailable),
            None => Ok(false),
        }
    }
}

impl Clock for Scoped {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms().max(0) as u64
    }
}

impl LogSink for Scoped {
    fn log(&self, _function: &str, level: Level, message: &str) {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.log
            .guest(self.clock.now_ms(), self.version, level, message);
    }
}
