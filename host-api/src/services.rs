//! What a function may ask of its host, as traits the broker implements.
//!
//! Side effects are *transactional per call*: `emit`, `schedule` and kv
//! writes made during a call are buffered in the call's [`Effects`] and
//! handed back with its answer. The broker commits them together with the
//! batch's outcome (and its input position), or drops them when the call
//! failed — so a retried batch never publishes twice and a trapped guest
//! leaves no half-written state; delay cancellations likewise. Only reads
//! (`kv.get`, pending delays, `clock`, `config`) and logging reach the
//! services during the call. They run on the call's thread: implementations
//! must answer quickly (a cache or a RocksDB read, not a network round
//! trip), as the call's deadline cannot interrupt them.
//!
//! [`InMemoryServices`] implements every trait for tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A message header: name and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (UTF-8).
    pub name: String,
    /// Header value, raw bytes.
    pub value: Vec<u8>,
}

/// A message a function publishes through `emit` or `schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// The record key; `None` for a null key (the broker then picks the partition without one).
    pub key: Option<Vec<u8>>,
    /// The record value.
    pub value: Vec<u8>,
    /// User headers and `sluice.tag` headers, in order.
    pub headers: Vec<Header>,
}

impl OutgoingMessage {
    /// Bytes the message occupies (key, value, header names and values).
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len())
                .sum::<usize>()
    }
}

/// Why a host call failed; the guest sees it as the WIT `host-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The deployment does not grant this (emitting to a topic outside its allowed topics, say).
    #[error("denied: {0}")]
    Denied(String),
    /// An argument is invalid (unknown topic, a time beyond the scheduler's horizon, an oversized value ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A per-call budget is spent (emitted messages or bytes, kv bytes ...).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The host could not do it now; retrying the message may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Log levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Most verbose.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the function handled.
    Warn,
    /// A failure.
    Error,
}

/// A message published now, buffered until the call's batch commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The topic to publish to (checked against the allowed topics).
    pub topic: String,
    /// The message.
    pub message: OutgoingMessage,
}

/// A message to publish later, buffered until the call's batch commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// The delay id returned to the guest (a UUIDv7, so ids sort by time).
    pub id: String,
    /// The topic to publish to when due.
    pub topic: String,
    /// Due time in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The message.
    pub message: OutgoingMessage,
}

/// Side effects of one successful call, to commit with its batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Messages to publish now, in call order.
    pub emitted: Vec<Emitted>,
    /// Messages to publish later, in call order.
    pub scheduled: Vec<Scheduled>,
    /// Final kv state of every key the call wrote: `None` means deleted.
    pub kv_writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Pending delays the call cancelled.
    pub cancelled: Vec<String>,
}

impl Effects {
    /// Whether the call had no side effects.
    pub fn is_empty(&self) -> bool {
        self.emitted.is_empty()
            && self.scheduled.is_empty()
            && self.kv_writes.is_empty()
            && self.cancelled.is_empty()
    }
}

/// Reads the function's durable key-value state (writes arrive as
/// [`Effects::kv_writes`]).
pub trait KvStore: Send + Sync {
    /// The value stored under `key` in the function's namespace, `None` when absent; [`HostError::Unavailable`] when the store fails (the guest may retry the message).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError>;
}

/// Looks up pending delayed messages (a guest's `cancel` answers from it;
/// the cancellation itself arrives as [`Effects::cancelled`]).
pub trait DelayLookup: Send + Sync {
    /// Whether `id` is scheduled and not yet delivered.
    fn is_pending(&self, id: &str) -> Result<bool, HostError>;
}

/// Time as the broker sees it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// Receives the function's log lines (guest `log` calls and whatever it
/// writes to stderr, such as panic messages).
pub trait LogSink: Send + Sync {
    /// Records one line of function `function`'s log; must not block the call for long (the broker rate-limits and rings lines).
    fn log(&self, function: &str, level: Level, message: &str);
}

/// The services one deployed function uses; the broker builds one per
/// deployment (its kv namespaced to the function).
#[derive(Clone)]
pub struct Services {
    /// The function's durable key-value reads.
    pub kv: Arc<dyn KvStore>,
    /// Whether delay ids a guest cancels are pending.
    pub delays: Arc<dyn DelayLookup>,
    /// The time `now` host calls and schedule deadlines use.
    pub clock: Arc<dyn Clock>,
    /// Where guest log lines and stderr go.
    pub log: Arc<dyn LogSink>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Services backed by one [`InMemoryServices`], returned for inspection.
    pub fn in_memory() -> (Self, Arc<InMemoryServices>) {
        let mem = Arc::new(InMemoryServices::default());
        let services = Services {
            kv: mem.clone(),
            delays: mem.clone(),
            clock: mem.clone(),
            log: mem.clone(),
        };
        (services, mem)
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Every service in memory, for tests and benchmarks: a kv map (apply a
/// call's effects with [`InMemoryServices::commit`]), a settable clock, a
/// set of pending delay ids and the log lines.
#[derive(Debug, Default)]
pub struct InMemoryServices {
    kv: Mutex<HashMap<String, Vec<u8>>>,
    pending_delays: Mutex<HashMap<String, Scheduled>>,
    emitted: Mutex<Vec<Emitted>>,
    logs: Mutex<Vec<(String, Level, String)>>,
    now_ms: AtomicU64,
    /// When set, kv reads fail with `unavailable`.
    kv_down: AtomicBool,
}

impl InMemoryServices {
    /// Commits a call's effects the way the broker would.
    pub fn commit(&self, effects: &Effects) {
        let mut kv = self.kv.lock();
        for (key, value) in &effects.kv_writes {
            match value {
                Some(v) => kv.insert(key.clone(), v.clone()),
                None => kv.remove(key),
            };
        }
        drop(kv);
        let mut pending = self.pending_delays.lock();
        for s in &effects.scheduled {
            pending.insert(s.id.clone(), s.clone());
        }
        for id in &effects.cancelled {
            pending.remove(id);
        }
        self.emitted.lock().extend(effects.emitted.iter().cloned());
    }

    /// The committed value of `key`.
    pub fn kv_value(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.lock().get(key).cloned()
    }

    /// Every message committed through [`commit`](Self::commit)'s emits.
    pub fn emitted(&self) -> Vec<Emitted> {
        self.emitted.lock().clone()
    }

    /// Delayed messages committed and not cancelled.
    pub fn pending_delays(&self) -> Vec<Scheduled> {
        let mut v: Vec<_> = self.pending_delays.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Log lines as `(function, level, message)`.
    pub fn logs(&self) -> Vec<(String, Level, String)> {
        self.logs.lock().clone()
    }

    /// Sets the clock; 0 (the default) means the wall clock.
    pub fn set_now_ms(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::Relaxed);
    }

    /// Makes kv reads fail with `unavailable` (or work again).
    pub fn set_kv_unavailable(&self, down: bool) {
        self.kv_down.store(down, Ordering::Relaxed);
    }
}

impl KvStore for InMemoryServices {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        if self.kv_down.load(Ordering::Relaxed) {
            return Err(HostError::Unavailable("kv store is down".into()));
        }
        Ok(self.kv.lock().get(key).cloned())
    }
}

impl DelayLookup for InMemoryServices {
    fn is_pending(&self, id: &str) -> Result<bool, HostError> {
        Ok(self.pending_delays.lock().contains_key(id))
    }
}

impl Clock for InMemoryServices {
    fn now_ms(&self) -> u64 {
        match self.now_ms.load(Ordering::Relaxed) {
            0 => SystemClock.now_ms(),
            ms => ms,
        }
    }
}

impl LogSink for InMemoryServices {
    fn log(&self, function: &str, level: Level, message: &str) {
        self.logs
            .lock()
            .push((function.to_owned(), level, message.to_owned()));
    }
}
