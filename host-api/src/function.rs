//! A loaded function: its pool of ready instances and the batch calls.
//!
//! Each instance owns one Store, reused across batches (instantiating costs
//! far more than a call) and recycled — dropped and later replaced — after a
//! failed call, after `max_calls_per_instance` calls, or once its memory
//! grew past `recycle_above_memory`. Every call runs under an epoch deadline
//! and a memory cap, so a bad guest costs only its own batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::transform_output::{OutputEntry, OutputReader};
use wasmtime::component::{ComponentType, Func, InstancePre, Lift, Lower};
use wasmtime::{Store, Trap};

use crate::error::{AnswerError, CallError, ErrorKind};
use crate::host::HostState;
use crate::metrics::FunctionMetrics;
use crate::services::{Effects, Services};
use crate::world::FunctionKind;

/// Where a batch comes from; the guest sees it as `batch-context`.
#[derive(Debug, Clone, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub struct BatchContext {
    /// The topic the batch was read from.
    pub topic: String,
    /// The partition the batch was read from.
    pub partition: u32,
    /// The consumer group served (filters and handlers).
    pub group: Option<String>,
}

/// A handler's answer for one message.
#[derive(Debug, Clone, PartialEq, Eq, ComponentType, Lift)]
#[component(variant)]
pub enum Outcome {
    /// Consumed.
    #[component(name = "ack")]
    Ack,
    /// Deliver again after this many milliseconds, or after the group's
    /// backoff when `None`.
    #[component(name = "retry")]
    Retry(Option<u64>),
    /// Move to the dead-letter topic with this reason.
    #[component(name = "dead-letter")]
    DeadLetter(String),
}

/// Limits of one deployed function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLimits {
    /// Wall time one call may take.
    pub timeout: Duration,
    /// The most linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// Largest answer (transform output buffer) one call may return.
    pub max_output_bytes: usize,
    /// Most messages one call may emit or schedule.
    pub max_effects_per_call: usize,
    /// Most bytes one call may emit, schedule or write to kv.
    pub max_effect_bytes: usize,
    /// Largest kv value.
    pub max_kv_value_bytes: usize,
    /// Furthest ahead a message may be scheduled.
    pub max_schedule_horizon_ms: u64,
    /// Fuel one call may burn, when the engine counts fuel.
    pub fuel_per_call: Option<u64>,
    /// Calls after which an instance is replaced by a fresh one.
    pub max_calls_per_instance: u64,
    /// Memory size above which an instance is replaced after its call.
    pub recycle_above_memory: usize,
    /// Ready instances kept between calls.
    pub max_idle_instances: usize,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            max_output_bytes: 16 << 20,
            max_effects_per_call: 10_000,
            max_effect_bytes: 16 << 20,
            max_kv_value_bytes: 1 << 20,
            max_schedule_horizon_ms: 2 * 365 * 24 * 3600 * 1000,
            fuel_per_call: None,
            max_calls_per_instance: 1_000_000,
            recycle_above_memory: 32 << 20,
            max_idle_instances: 16,
        }
    }
}

/// What the broker deploys: a name, parameters, limits, and the services
/// host calls reach.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name; it names the function in logs, metrics and [`crate::CallError`]s.
    pub name: String,
    /// The world the deployment expects; `None` accepts any.
    pub kind: Option<FunctionKind>,
    /// Parameters the guest reads through `config`.
    pub config: BTreeMap<String, String>,
    /// Per-call and per-instance limits.
    pub limits: FunctionLimits,
    /// Topics `emit`, `schedule` and transform outputs may name; `None`
    /// allows any.
    pub allowed_topics: Option<BTreeSet<String>>,
    /// What host calls reach: kv, delay lookup, clock, log sink.
    pub services: Services,
}

impl FunctionSpec {
    /// A spec with default limits, no parameters, any topic.
    pub fn new(name: impl Into<String>, services: Services) -> Self {
        Self {
            name: name.into(),
            kind: None,
            config: BTreeMap::new(),
            limits: FunctionLimits::default(),
            allowed_topics: None,
            services,
        }
    }
}

/// A successful call: the answer and the effects to commit with it.
#[derive(Debug, Clone)]
pub struct CallOutput<T> {
    /// The guest's answer: [`FilterVerdicts`], a [`TransformOutput`] or one [`Outcome`] per message.
    pub answer: T,
    /// Emits, schedules, kv writes and cancellations of the call, to commit with the batch (or drop when the batch is not committed).
    pub effects: Effects,
    /// Messages in the batch.
    pub messages: usize,
    /// Fuel burned (0 unless the engine counts fuel).
    pub fuel: u64,
    /// Wall time of the call, instance checkout included.
    pub elapsed: Duration,
}

/// A filter's answer: which messages to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterVerdicts(Vec<u8>);

impl FilterVerdicts {
    /// Whether message `i` of the batch (in batch order) is delivered.
    pub fn keep(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|v| *v != 0)
    }

    /// One flag per message.
    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        self.0.iter().map(|v| *v != 0)
    }

    /// Messages delivered.
    pub fn kept(&self) -> usize {
        self.0.iter().filter(|v| **v != 0).count()
    }

    /// Number of messages answered for (the batch's record count).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the batch had no messages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A transform's answer, validated: every entry parses, names an input of
/// the batch, comes in input order and names an allowed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOutput(Vec<u8>);

impl TransformOutput {
    /// The entries (output messages and failures), in input order.
    pub fn entries(&self) -> impl Iterator<Item = OutputEntry<'_>> {
        OutputReader::new(&self.0).map_while(Result::ok)
    }

    /// The raw buffer, in the layout of `transform_output`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Shared by every instance of a function (the store data points here).
#[derive(Debug)]
pub(crate) struct FunctionShared {
    pub(crate) name: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) limits: FunctionLimits,
    pub(crate) allowed_topics: Option<BTreeSet<String>>,
    pub(crate) services: Services,
}

/// A ready instance: its Store and the export to call.
struct Instance {
    store: Store<HostState>,
    export: Func,
    calls: u64,
}

/// What a function needs of its engine; shared by the engine and every
/// function loaded into it.
pub(crate) struct EngineHooks {
    pub(crate) engine: wasmtime::Engine,
    /// Epoch ticks per call deadline is `timeout / tick`, rounded up.
    pub(crate) epoch_tick: Duration,
    pub(crate) deadlines: bool,
    pub(crate) fuel: bool,
    pub(crate) max_memory_bytes: usize,
    /// Stops the epoch ticker once neither the engine nor any function
    /// needs it.
    pub(crate) stop_ticker: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for EngineHooks {
    fn drop(&mut self) {
        self.stop_ticker
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A loaded function; cheap to clone, safe to call from many threads (each
/// call takes its own instance).
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

struct FunctionInner {
    kind: FunctionKind,
    digest: String,
    shared: Arc<FunctionShared>,
    pre: InstancePre<HostState>,
    hooks: Arc<EngineHooks>,
    idle: Mutex<Vec<Instance>>,
    metrics: FunctionMetrics,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.inner.shared.name)
            .field("kind", &self.inner.kind)
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

impl Function {
    pub(crate) fn new(
        kind: FunctionKind,
        digest: String,
        spec: FunctionSpec,
        pre: InstancePre<HostState>,
        hooks: Arc<EngineHooks>,
    ) -> Self {
        let shared = Arc::new(FunctionShared {
            name: spec.name,
            config: spec.config,
            limits: spec.limits,
            allowed_topics: spec.allowed_topics,
            services: spec.services,
        });
        Function {
            inner: Arc::new(FunctionInner {
                kind,
                digest,
                shared,
                pre,
                hooks,
                idle: Mutex::new(Vec::new()),
                metrics: FunctionMetrics::default(),
            }),
        }
    }

    /// The deployment name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The world the component implements.
    pub fn kind(&self) -> FunctionKind {
        self.inner.kind
    }

    /// SHA-256 of the component bytes, hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The function's counters.
    pub fn metrics(&self) -> crate::MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Instances ready in the pool.
    pub fn idle_instances(&self) -> usize {
        self.inner.idle.lock().len()
    }

    /// Fills the pool with up to `n` ready instances, so the first batches
    /// after a deployment do not pay for instantiation.
    pub fn prewarm(&self, n: usize) -> Result<(), CallError> {
        let n = n.min(self.inner.shared.limits.max_idle_instances);
        for _ in self.idle_instances()..n {
            let instance = self.instantiate()?;
            self.checkin(instance);
        }
        Ok(())
    }

    /// Drops every idle instance (the next call instantiates afresh).
    pub fn drain_pool(&self) {
        let drained = std::mem::take(&mut *self.inner.idle.lock());
        for _ in drained {
            self.inner.metrics.instance_recycled();
        }
    }

    /// Creates one instance and drops it; for measuring instantiation.
    #[doc(hidden)]
    pub fn instantiate_and_drop(&self) -> Result<(), CallError> {
        self.instantiate().map(drop)
    }

    /// Takes an idle instance and puts it back; for measuring the pool.
    #[doc(hidden)]
    pub fn checkout_and_return(&self) -> Result<(), CallError> {
        let instance = self.checkout()?;
        self.checkin(instance);
        Ok(())
    }

    /// Creates an instance, checks its export's signature and makes one
    /// call with an empty batch (which runs the guest's initialisation, so a
    /// function whose configuration it rejects fails to deploy rather than
    /// failing every batch). The engine does this once at load.
    pub(crate) fn warm_up(&self) -> Result<(), crate::LoadError> {
        let instance = self
            .instantiate()
            .map_err(|e| crate::LoadError::Instantiate(e.message))?;
        let kind = self.inner.kind;
        let typecheck = match kind {
            FunctionKind::Filter | FunctionKind::Transform => instance
                .export
                .typed::<(&BatchContext, &[u8]), (Vec<u8>,)>(&instance.store)
                .map(drop),
            FunctionKind::Handler => instance
                .export
                .typed::<(&BatchContext, &[u8]), (Vec<Outcome>,)>(&instance.store)
                .map(drop),
        };
        typecheck.map_err(|e| crate::LoadError::BadExport {
            kind,
            export: kind.export(),
            message: format!("{e:#}"),
        })?;
        self.checkin(instance);
        let context = BatchContext {
            topic: String::new(),
            partition: 0,
            group: None,
        };
        let first = match kind {
            FunctionKind::Filter => self.filter(&context, &[]).map(drop),
            FunctionKind::Transform => self.transform(&context, &[]).map(drop),
            FunctionKind::Handler => self.handle(&context, &[]).map(drop),
        };
        first.map_err(|e| crate::LoadError::Init(format!("{}: {}", e.kind, e.message)))?;
        // The check is not traffic: it counts neither in the metrics nor
        // against the instance's call budget.
        for instance in self.inner.idle.lock().iter_mut() {
            instance.calls = 0;
        }
        self.inner.metrics.reset_calls();
        Ok(())
    }

    /// Runs a filter over `batch` (one or more record batches).
    ///
    /// Blocks for up to the function's timeout: call it from a blocking
    /// thread, never a tokio worker (use [`filter_async`](Self::filter_async)
    /// there; WASI's output streams also refuse to run on a worker).
    pub fn filter(
        &self,
        context: &BatchContext,
        batch: &[u8],
    ) -> Result<CallOutput<FilterVerdicts>, CallError> {
        self.expect_kind(FunctionKind::Filter)?;
        let messages = self.count_messages(batch)?;
        self.call(context, batch, messages, |f, inst, context, batch| {
            let (verdicts,) = f
                .typed::<(&BatchContext, &[u8]), (Vec<u8>,)>(&inst.store)?
                .call(&mut inst.store, (context, batch))?;
            Ok(verdicts)
        })
        .and_then(|out| {
            self.map_answer(out, |verdicts| {
                if verdicts.len() != messages {
                    return Err(AnswerError::Verdicts {
                        got: verdicts.len(),
                        messages,
                    });
                }
                Ok(FilterVerdicts(verdicts))
            })
        })
    }

    /// Runs a transform over `batch`. Blocks like [`filter`](Self::filter).
    pub fn transform(
        &self,
        context: &BatchContext,
        batch: &[u8],
    ) -> Result<CallOutput<TransformOutput>, CallError> {
        self.expect_kind(FunctionKind::Transform)?;
        let messages = self.count_messages(batch)?;
        let out = self.call(context, batch, messages, |f, inst, context, batch| {
            let (buf,) = f
                .typed::<(&BatchContext, &[u8]), (Vec<u8>,)>(&inst.store)?
                .call(&mut inst.store, (context, batch))?;
            Ok(buf)
        })?;
        let limit = self.inner.shared.limits.max_output_bytes;
        if out.answer.len() > limit {
            return Err(self.fail(
                ErrorKind::OutputLimit,
                format!(
                    "the transform returned {} bytes of output, over the {limit} byte limit",
                    out.answer.len()
                ),
            ));
        }
        self.map_answer(out, |buf| {
            self.validate_transform(&buf, messages)?;
            Ok(TransformOutput(buf))
        })
    }

    /// Runs a handler over `batch`. Blocks like [`filter`](Self::filter).
    pub fn handle(
        &self,
        context: &BatchContext,
        batch: &[u8],
    ) -> Result<CallOutput<Vec<Outcome>>, CallError> {
        self.expect_kind(FunctionKind::Handler)?;
        let messages = self.count_messages(batch)?;
        self.call(context, batch, messages, |f, inst, context, batch| {
            let (outcomes,) = f
                .typed::<(&BatchContext, &[u8]), (Vec<Outcome>,)>(&inst.store)?
                .call(&mut inst.store, (context, batch))?;
            Ok(outcomes)
        })
        .and_then(|out| {
            self.map_answer(out, |outcomes| {
                if outcomes.len() != messages {
                    return Err(AnswerError::Outcomes {
                        got: outcomes.len(),
                        messages,
                    });
                }
                Ok(outcomes)
            })
        })
    }

    /// [`filter`](Self::filter) on a blocking thread, so guest code never
    /// runs on a tokio worker.
    pub async fn filter_async(
        &self,
        context: BatchContext,
        batch: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<CallOutput<FilterVerdicts>, CallError> {
        let this = self.clone();
        self.blocking(move || this.filter(&context, batch.as_ref()))
            .await
    }

    /// [`transform`](Self::transform) on a blocking thread.
    pub async fn transform_async(
        &self,
        context: BatchContext,
        batch: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<CallOutput<TransformOutput>, CallError> {
        let this = self.clone();
        self.blocking(move || this.transform(&context, batch.as_ref()))
            .await
    }

    /// [`handle`](Self::handle) on a blocking thread.
    pub async fn handle_async(
        &self,
        context: BatchContext,
        batch: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<CallOutput<Vec<Outcome>>, CallError> {
        let this = self.clone();
        self.blocking(move || this.handle(&context, batch.as_ref()))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
            Err(self.fail(ErrorKind::Trap, format!("the call's thread failed: {e}")))
        })
    }

    fn expect_kind(&self, kind: FunctionKind) -> Result<(), CallError> {
        if self.inner.kind == kind {
            Ok(())
        } else {
            Err(self.fail(
                ErrorKind::InvalidInput,
                format!("called as a {kind} but it is a {}", self.inner.kind),
            ))
        }
    }

    /// Messages a guest will see: records of every non-control batch.
    fn count_messages(&self, batch: &[u8]) -> Result<usize, CallError> {
        let mut n = 0usize;
        for view in BatchIter::new(batch) {
            let view = view.map_err(|e| {
                self.fail(ErrorKind::InvalidInput, format!("bad record batch: {e}"))
            })?;
            if !view.header().is_control() {
                n += view.header().record_count as usize;
            }
        }
        Ok(n)
    }

    fn validate_transform(&self, buf: &[u8], messages: usize) -> Result<(), AnswerError> {
        let mut last_input = 0u32;
        for entry in OutputReader::new(buf) {
            let entry = entry?;
            let (input, topic) = match entry {
                OutputEntry::Message { input, topic, .. } => (input, topic),
                OutputEntry::Failure { input, .. } => (input, ""),
            };
            if input as usize >= messages {
                return Err(AnswerError::NoSuchInput { input, messages });
            }
            if input < last_input {
                return Err(AnswerError::OutOfOrder {
                    input,
                    last: last_input,
                });
            }
            last_input = input;
            if let Some(allowed) = &self.inner.shared.allowed_topics
                && !topic.is_empty()
                && !allowed.contains(topic)
            {
                return Err(AnswerError::TopicNotAllowed(topic.to_owned()));
            }
        }
        Ok(())
    }

    fn map_answer<A, B>(
        &self,
        out: CallOutput<A>,
        f: impl FnOnce(A) -> Result<B, AnswerError>,
    ) -> Result<CallOutput<B>, CallError> {
        // A call error carries its message as text: this is where it ends.
        let answer =
            f(out.answer).map_err(|e| self.fail(ErrorKind::InvalidOutput, e.to_string()))?;
        Ok(CallOutput {
            answer,
            effects: out.effects,
            messages: out.messages,
            fuel: out.fuel,
            elapsed: out.elapsed,
        })
    }

    fn fail(&self, kind: ErrorKind, message: String) -> CallError {
        self.inner.metrics.record_error(kind);
        let err = CallError {
            function: self.name().to_owned(),
            kind,
            message,
        };
        tracing::debug!(function = %err.function, kind = %kind, "call failed: {}", err.message);
        err
    }

    /// Checks out an instance, makes the call under its deadline, and
    /// classifies what went wrong.
    fn call<T>(
        &self,
        context: &BatchContext,
        batch: &[u8],
        messages: usize,
        invoke: impl FnOnce(&Func, &mut Instance, &BatchContext, &[u8]) -> wasmtime::Result<T>,
    ) -> Result<CallOutput<T>, CallError> {
        let started = Instant::now();
        let mut instance = self.checkout()?;
        self.arm(&mut instance.store);
        instance.store.data_mut().begin_call();
        let export = instance.export;
        let result = invoke(&export, &mut instance, context, batch);
        instance.calls += 1;
        let fuel = self.fuel_used(&instance.store);
        let elapsed = started.elapsed();
        self.inner.metrics.record_call(messages, elapsed, fuel);
        match result {
            Ok(answer) => {
                let state = instance.store.data_mut();
                let over_budget = state.over_budget.take();
                let effects = std::mem::take(&mut state.effects);
                let stderr = state.take_stderr();
                self.log_stderr(&stderr);
                self.checkin(instance);
                if let Some(why) = over_budget {
                    return Err(self.fail(ErrorKind::OutputLimit, why));
                }
                Ok(CallOutput {
                    answer,
                    effects,
                    messages,
                    fuel,
                    elapsed,
                })
            }
            Err(e) => {
                let state = instance.store.data_mut();
                let stderr = state.take_stderr();
                self.log_stderr(&stderr);
                let (kind, mut message) = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => (
                        ErrorKind::Timeout,
                        format!(
                            "the call ran past its {:?} deadline",
                            self.inner.shared.limits.timeout
                        ),
                    ),
                    Some(Trap::OutOfFuel) => (
                        ErrorKind::Timeout,
                        "the call burned its fuel budget".to_owned(),
                    ),
                    _ => match state.limiter.denied {
                        Some(asked) => (
                            ErrorKind::Memory,
                            format!(
                                "the guest asked for {asked} bytes of memory, over its {} byte cap",
                                self.inner.shared.limits.memory_bytes
                            ),
                        ),
                        None => match state.over_budget.take() {
                            Some(why) => (ErrorKind::OutputLimit, why),
                            None => {
                                tracing::debug!(function = self.name(), "guest trapped: {e:?}");
                                let what = match e.downcast_ref::<Trap>() {
                                    Some(trap) => format!("wasm trap: {trap}"),
                                    None => format!("{e:#}"),
                                };
                                (ErrorKind::Trap, what)
                            }
                        },
                    },
                };
                if !stderr.is_empty() {
                    message = format!("{message}; guest stderr: {stderr}");
                }
                // A failed instance may be in any state: never reuse it.
                drop(instance);
                self.inner.metrics.instance_recycled();
                Err(self.fail(kind, message))
            }
        }
    }

    fn log_stderr(&self, stderr: &str) {
        if !stderr.is_empty() {
            let s = &self.inner.shared;
            s.services
                .log
                .log(&s.name, crate::services::Level::Warn, stderr);
        }
    }

    /// Sets the deadline and fuel for the next call.
    fn arm(&self, store: &mut Store<HostState>) {
        let hooks = &self.inner.hooks;
        let limits = &self.inner.shared.limits;
        if hooks.deadlines {
            let tick = hooks.epoch_tick.as_nanos().max(1);
            let ticks = limits.timeout.as_nanos().div_ceil(tick) as u64;
            // One extra tick: the first may come at any moment after arming.
            store.set_epoch_deadline(ticks + 1);
        }
        if hooks.fuel {
            let fuel = limits.fuel_per_call.unwrap_or(u64::MAX / 2);
            store.set_fuel(fuel).expect("fuel is enabled");
        }
    }

    fn fuel_used(&self, store: &Store<HostState>) -> u64 {
        if !self.inner.hooks.fuel {
            return 0;
        }
        let budget = self
            .inner
            .shared
            .limits
            .fuel_per_call
            .unwrap_or(u64::MAX / 2);
        budget.saturating_sub(store.get_fuel().unwrap_or(0))
    }

    fn checkout(&self) -> Result<Instance, CallError> {
        if let Some(instance) = self.inner.idle.lock().pop() {
            return Ok(instance);
        }
        self.instantiate()
    }

    fn checkin(&self, instance: Instance) {
        let limits = &self.inner.shared.limits;
        let worn = instance.calls >= limits.max_calls_per_instance
            || instance.store.data().limiter.high_water > limits.recycle_above_memory;
        if worn {
            self.inner.metrics.instance_recycled();
            return;
        }
        let mut idle = self.inner.idle.lock();
        if idle.len() < limits.max_idle_instances {
            idle.push(instance);
        }
    }

    fn instantiate(&self) -> Result<Instance, CallError> {
        let engine = &self.inner.hooks.engine;
        let mut store = Store::new(engine, HostState::new(self.inner.shared.clone()));
        store.limiter(|s| &mut s.limiter);
        if self.inner.hooks.deadlines {
            store.epoch_deadline_trap();
        }
        self.arm(&mut store);
        let instance = self.inner.pre.instantiate(&mut store).map_err(|e| {
            let stderr = store.data_mut().take_stderr();
            let kind = match e.downcast_ref::<Trap>() {
                Some(Trap::Interrupt | Trap::OutOfFuel) => ErrorKind::Timeout,
                _ => ErrorKind::Instantiate,
            };
            self.fail(
                kind,
                format!("could not create an instance: {e:#} {stderr}")
                    .trim_end()
                    .to_owned(),
            )
        })?;
        let export_name = self.inner.kind.export();
        let export = instance.get_func(&mut store, export_name).ok_or_else(|| {
            self.fail(
                ErrorKind::Instantiate,
                format!("the instance has no `{export_name}` export"),
            )
        })?;
        self.inner.metrics.instance_created();
        Ok(Instance {
            store,
            export,
            calls: 0,
        })
    }
}
