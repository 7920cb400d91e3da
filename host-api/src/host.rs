//! The state of one guest instance's Store and the host side of the
//! `sluice:bus` interfaces.
//!
//! Host calls never block on the network: `emit`, `schedule` and kv writes
//! are buffered into the call's [`Effects`] (see `services`), reads go to the
//! [`Services`]. Budgets bound what one call can buffer; going past them is a
//! `limit-exceeded` error the guest sees, and the call fails with
//! [`ErrorKind::OutputLimit`](crate::ErrorKind::OutputLimit).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::guest_output::GuestOutput;

use crate::function::FunctionShared;
use crate::services::{self, Effects, Emitted, HostError, Level, OutgoingMessage, Scheduled};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "imports",
});

use sluice::bus::types as wit;

/// How much of what its guest prints one call keeps (panic messages fit).
const OUTPUT_PER_CALL: usize = 16 * 1024;

/// Store data: everything a host call can see.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) function: Arc<FunctionShared>,
    /// Effects of the call in progress.
    pub(crate) effects: Effects,
    effect_bytes: usize,
    /// Set when the call ran past a budget; the call fails even if the
    /// guest swallowed the error.
    pub(crate) over_budget: Option<String>,
    output: GuestOutput,
}

impl HostState {
    pub(crate) fn new(function: Arc<FunctionShared>) -> Self {
        let output = GuestOutput::new(OUTPUT_PER_CALL);
        // No preopened directories, environment, arguments or network: a
        // function reaches the world only through sluice:bus.
        let wasi = WasiCtxBuilder::new()
            .stderr(output.clone())
            .stdout(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(function.limits.memory_bytes),
            function,
            effects: Effects::default(),
            effect_bytes: 0,
            over_budget: None,
            output,
        }
    }

    /// Prepares for a call: no effects, no budget spent.
    pub(crate) fn begin_call(&mut self) {
        self.effects = Effects::default();
        self.effect_bytes = 0;
        self.over_budget = None;
        self.limiter.denied = None;
    }

    /// What the guest printed (stdout and stderr) since the last look: a
    /// panic message, typically.
    pub(crate) fn take_stderr(&mut self) -> String {
        self.output.take()
    }

    fn spend(&mut self, bytes: usize, emits: usize) -> Result<(), HostError> {
        let limits = &self.function.limits;
        let count = self.effects.emitted.len() + self.effects.scheduled.len() + emits;
        if count > limits.max_effects_per_call {
            let why = format!(
                "more than {} emitted or scheduled messages in one call",
                limits.max_effects_per_call
            );
            self.over_budget = Some(why.clone());
            return Err(HostError::LimitExceeded(why));
        }
        if self.effect_bytes + bytes > limits.max_effect_bytes {
            let why = format!(
                "more than {} bytes of emitted, scheduled or kv data in one call",
                limits.max_effect_bytes
            );
            self.over_budget = Some(why.clone());
            return Err(HostError::LimitExceeded(why));
        }
        self.effect_bytes += bytes;
        Ok(())
    }

    fn check_topic(&self, topic: &str) -> Result<(), HostError> {
        if topic.is_empty() {
            return Err(HostError::Invalid("empty topic name".into()));
        }
        match &self.function.allowed_topics {
            Some(allowed) if !allowed.contains(topic) => Err(HostError::Denied(format!(
                "the deployment may not publish to `{topic}`"
            ))),
            _ => Ok(()),
        }
    }

    fn schedule(
        &mut self,
        topic: String,
        at_ms: u64,
        message: wit::OutgoingMessage,
    ) -> Result<String, HostError> {
        self.check_topic(&topic)?;
        let now = self.function.services.clock.now_ms();
        let horizon = self.function.limits.max_schedule_horizon_ms;
        if at_ms > now.saturating_add(horizon) {
            return Err(HostError::Invalid(format!(
                "due time {at_ms} is more than {horizon} ms ahead"
            )));
        }
        let message = from_wit(message);
        self.spend(message.size() + topic.len(), 1)?;
        let id = uuid::Uuid::now_v7().to_string();
        self.effects.scheduled.push(Scheduled {
            id: id.clone(),
            topic,
            at_ms,
            message,
        });
        Ok(id)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn from_wit(m: wit::OutgoingMessage) -> OutgoingMessage {
    OutgoingMessage {
        key: m.key,
        value: m.value,
        headers: m
            .headers
            .into_iter()
            .map(|h| services::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
    }
}

fn to_wit(e: HostError) -> wit::HostError {
    match e {
        HostError::Denied(m) => wit::HostError::Denied(m),
        HostError::Invalid(m) => wit::HostError::Invalid(m),
        HostError::LimitExceeded(m) => wit::HostError::LimitExceeded(m),
        HostError::Unavailable(m) => wit::HostError::Unavailable(m),
    }
}

impl wit::Host for HostState {}

impl sluice::bus::log::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        let level = match level {
            wit::Level::Trace => Level::Trace,
            wit::Level::Debug => Level::Debug,
            wit::Level::Info => Level::Info,
            wit::Level::Warn => Level::Warn,
            wit::Level::Error => Level::Error,
        };
        let f = &self.function;
        f.services.log.log(&f.name, level, &message);
    }
}

impl sluice::bus::emit::Host for HostState {
    fn emit(&mut self, topic: String, message: wit::OutgoingMessage) -> Result<(), wit::HostError> {
        (|| {
            self.check_topic(&topic)?;
            let message = from_wit(message);
            self.spend(message.size() + topic.len(), 1)?;
            self.effects.emitted.push(Emitted { topic, message });
            Ok(())
        })()
        .map_err(to_wit)
    }
}

impl sluice::bus::schedule::Host for HostState {
    fn schedule_at(
        &mut self,
        topic: String,
        at_ms: u64,
        message: wit::OutgoingMessage,
    ) -> Result<String, wit::HostError> {
        self.schedule(topic, at_ms, message).map_err(to_wit)
    }

    fn schedule_after(
        &mut self,
        topic: String,
        delay_ms: u64,
        message: wit::OutgoingMessage,
    ) -> Result<String, wit::HostError> {
        let at = self
            .function
            .services
            .clock
            .now_ms()
            .saturating_add(delay_ms);
        self.schedule(topic, at, message).map_err(to_wit)
    }

    fn cancel(&mut self, id: String) -> Result<bool, wit::HostError> {
        // A delay scheduled earlier in this same call is not committed yet.
        if let Some(pos) = self.effects.scheduled.iter().position(|s| s.id == id) {
            self.effects.scheduled.remove(pos);
            return Ok(true);
        }
        if self.effects.cancelled.contains(&id) {
            return Ok(false);
        }
        // Like every other effect, the cancellation commits with the batch.
        let pending = self
            .function
            .services
            .delays
            .is_pending(&id)
            .map_err(to_wit)?;
        if pending {
            self.spend(id.len(), 0).map_err(to_wit)?;
            self.effects.cancelled.push(id);
        }
        Ok(pending)
    }
}

impl sluice::bus::kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, wit::HostError> {
        // Reads see this call's own writes first.
        if let Some(pending) = self.effects.kv_writes.get(&key) {
            return Ok(pending.clone());
        }
        self.function.services.kv.get(&key).map_err(to_wit)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), wit::HostError> {
        (|| {
            if value.len() > self.function.limits.max_kv_value_bytes {
                return Err(HostError::Invalid(format!(
                    "kv value of {} bytes is over the {} byte limit",
                    value.len(),
                    self.function.limits.max_kv_value_bytes
                )));
            }
            self.spend(key.len() + value.len(), 0)?;
            self.effects.kv_writes.insert(key, Some(value));
            Ok(())
        })()
        .map_err(to_wit)
    }

    fn delete(&mut self, key: String) -> Result<(), wit::HostError> {
        self.spend(key.len(), 0).map_err(to_wit)?;
        self.effects.kv_writes.insert(key, None);
        Ok(())
    }
}

impl sluice::bus::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.function.config.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.function
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl sluice::bus::clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        self.function.services.clock.now_ms()
    }
}

/// Adds the sluice:bus interfaces and a sandboxed WASI 0.2 to `linker`.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    forbid_blocking(linker)?;
    Imports::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |s| s)
}

/// The error a guest gets for waiting in WASI.
#[derive(Debug, thiserror::Error)]
#[error(
    "a function may not block: the guest waited in wasi:io/poll (std::thread::sleep or blocking I/O); epoch deadlines cannot interrupt host code"
)]
pub(crate) struct BlockingForbidden;

/// Replaces WASI's waiting functions with ones that trap. Epoch deadlines
/// interrupt only WebAssembly code, so a guest sleeping in the host
/// (`std::thread::sleep` waits in `wasi:io/poll`) would otherwise hold its
/// thread past any timeout. Nothing a function may do needs to wait: its
/// streams (stdout, stderr) are always ready.
fn forbid_blocking(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    for name in ["poll", "[method]pollable.block"] {
        poll.func_new(name, |_, _, _, _| Err(BlockingForbidden.into()))?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The `wasi:io/poll` instance wasmtime-wasi defines (semver-compatible
/// imports of other 0.2 versions resolve to it).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// Caps a guest's linear memory and remembers a refused growth, so a memory
/// bomb is reported as such rather than as the trap it turns into.
pub(crate) struct MemoryLimiter {
    cap: usize,
    /// The largest memory the instance has grown to.
    pub(crate) high_water: usize,
    /// The size a refused growth asked for, in the current call.
    pub(crate) denied: Option<usize>,
}

impl MemoryLimiter {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            high_water: 0,
            denied: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = Some(desired);
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
