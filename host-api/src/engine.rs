//! The engine: one wasmtime Engine and Linker for every function, the epoch
//! ticker that enforces call deadlines, and component loading (validate,
//! precompile or fetch from the on-disk cache, link, warm up).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::{self, CompiledCache};
use crate::error::LoadError;
use crate::function::{EngineHooks, Function, FunctionSpec};
use crate::host::{self, HostState};
use crate::world;

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Where precompiled components are kept; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances; call deadlines are whole ticks, so a
    /// call can overrun its timeout by up to one tick.
    pub epoch_tick: Duration,
    /// Enforce call deadlines with epoch interruption. Only benchmarks
    /// turn this off (to measure its cost): without it an endless loop
    /// holds its thread forever.
    pub deadlines: bool,
    /// Count fuel (instructions, roughly) per call, for accounting and
    /// `fuel_per_call` limits. Costs throughput; see docs/functions.md.
    pub fuel: bool,
    /// Most instances alive at once across all functions (pooling
    /// allocator slots).
    pub max_instances: u32,
    /// The largest memory any function may be given.
    pub max_memory_bytes: usize,
    /// Use the pooling allocator (fast instantiation, memory reserved up
    /// front); on-demand allocation otherwise.
    pub pooling: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
            deadlines: true,
            fuel: false,
            max_instances: 1000,
            max_memory_bytes: 1 << 30,
            pooling: true,
        }
    }
}

/// Error building the engine itself (bad settings).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the function engine: {0}")]
pub struct EngineError(String);

/// Loads and runs functions. Cheap to clone; the epoch ticker thread stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    /// Shared with every loaded function, so deadlines keep working while
    /// any function is alive, whatever happens to the `Engine` handle.
    hooks: Arc<EngineHooks>,
    linker: Linker<HostState>,
    cache: Option<CompiledCache>,
    engine_hash: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("engine_hash", &self.inner.engine_hash)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine: wasmtime with the component model, the compiled-component cache and the epoch ticker that enforces call deadlines. Fails only when wasmtime refuses the configuration (or the cache directory cannot be used); build one per process and share it.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        let err = |e: wasmtime::Error| EngineError(format!("{e:#}"));
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            // Component-model async is not used: plain calls are about
            // twice as fast without its bookkeeping.
            .concurrency_support(false)
            .epoch_interruption(config.deadlines)
            .consume_fuel(config.fuel)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(config.max_instances)
                .total_core_instances(config.max_instances.saturating_mul(8))
                .total_memories(config.max_instances.saturating_mul(2))
                .total_tables(config.max_instances.saturating_mul(4))
                .max_memory_size(config.max_memory_bytes);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&wasm).map_err(err)?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(err)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(CompiledCache::open(dir).map_err(|e| {
                EngineError(format!("compiled-component cache {}: {e}", dir.display()))
            })?),
            None => None,
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());

        let stop_ticker = Arc::new(AtomicBool::new(false));
        if config.deadlines {
            spawn_ticker(engine.clone(), config.epoch_tick, stop_ticker.clone());
        }
        Ok(Engine {
            inner: Arc::new(EngineInner {
                hooks: Arc::new(EngineHooks {
                    engine,
                    epoch_tick: config.epoch_tick,
                    deadlines: config.deadlines,
                    fuel: config.fuel,
                    max_memory_bytes: config.max_memory_bytes,
                    stop_ticker,
                }),
                linker,
                cache,
                engine_hash,
            }),
        })
    }

    /// Loads a component for a deployment: validates that it implements
    /// one Sluice world with allowed imports, compiles it (or takes it from
    /// the cache), links it and creates a first instance. Any failure is a
    /// [`LoadError`] meant for the function's author.
    pub fn load(&self, spec: FunctionSpec, bytes: &[u8]) -> Result<Function, LoadError> {
        let inner = &self.inner;
        let engine = &inner.hooks.engine;
        let max = inner.hooks.max_memory_bytes;
        if spec.limits.memory_bytes > max {
            return Err(LoadError::Limits(format!(
                "memory_bytes {} is over the engine's max_memory_bytes {max}",
                spec.limits.memory_bytes
            )));
        }
        if spec.limits.timeout.is_zero() {
            return Err(LoadError::Limits("timeout must be above zero".into()));
        }
        let digest = cache::digest(bytes);
        let component = self.compile(&digest, bytes)?;
        let kind = world::check_component(engine, &component, spec.kind)?;
        let pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let function = Function::new(kind, digest, spec, pre, inner.hooks.clone());
        function.warm_up()?;
        tracing::info!(function = function.name(), kind = %kind, digest = function.digest(), "function loaded");
        Ok(function)
    }

    fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let inner = &self.inner;
        let engine = &inner.hooks.engine;
        if let Some(cache) = &inner.cache
            && let Some(compiled) = cache.get(digest, &inner.engine_hash)
        {
            match deserialize(engine, &compiled) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!("cached component unusable, recompiling: {e:#}"),
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        if let Some(cache) = &inner.cache
            && let Err(e) = cache.put(digest, &inner.engine_hash, &compiled)
        {
            // The component compiled; only the next load will be slower.
            let path = cache.path(digest, &inner.engine_hash);
            tracing::warn!(path = %path.display(), "cannot cache the compiled component: {e}");
        }
        deserialize(engine, &compiled).map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }

    /// [`load`](Self::load) on a blocking thread: compiling a component
    /// takes from milliseconds to seconds.
    pub async fn load_async(
        &self,
        spec: FunctionSpec,
        bytes: Vec<u8>,
    ) -> Result<Function, LoadError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.load(spec, &bytes))
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Instantiate(format!(
                    "the load thread failed: {e}"
                )))
            })
    }

    /// The path a component with this content would be cached under.
    pub fn cached_path(&self, bytes: &[u8]) -> Option<PathBuf> {
        let inner = &self.inner;
        inner
            .cache
            .as_ref()
            .map(|c| c.path(&cache::digest(bytes), &inner.engine_hash))
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &wasmtime::Engine, compiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `compiled` is either what this engine's precompile_component
    // just returned, or a cache entry this engine wrote: the cache directory
    // is created owner-only and must be trusted like the binary itself (its
    // files are native code), and the SHA-256 stored with each entry catches
    // accidental corruption. wasmtime additionally checks that the entry was
    // produced by a compatible engine.
    unsafe { Component::deserialize(engine, compiled) }
}

/// Advances the engine's epoch every `tick` until `stop` is set.
fn spawn_ticker(engine: wasmtime::Engine, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .expect("spawn the epoch ticker thread");
}
