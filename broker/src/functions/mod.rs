//! Functions in the broker: deployments and the wiring of WebAssembly
//! components to topics and groups.
//!
//! A deployment is a named, versioned component with a manifest (where it
//! attaches, its config and limits). This module keeps the registry and
//! starts what each kind needs; the `sluice-host-api` crate runs the
//! guests (this module never touches wasmtime).
//!
//! - [`store`]: component files by content hash, and the metadata column
//!   families (versions, kv, transform progress);
//! - [`filter`]: a filter function as a group's [`BatchFilter`];
//! - [`transform`]: input topic → output topics, exactly once;
//! - [`handler`]: a serverless member of a group;
//! - [`effects`]: output batching and committing a call's side effects;
//! - [`input`]: the batch buffer a call gets;
//! - [`services`]: kv reads, delay lookups, clock and log for guests;
//! - [`logbook`] and [`stats`]: per-function log and metrics.
//!
//! Upgrades: each deployment holds its active version behind a lock that
//! runners read once per batch, so a new version takes over at a batch
//! boundary; a transform commits its position per batch and a handler
//! settles per batch, so nothing is lost or repeated. A deploy that
//! changes where a function attaches restarts its runners instead (they
//! finish their batch first).

pub mod effects;
pub mod filter;
pub mod handler;
pub mod input;
pub mod logbook;
pub mod services;
pub mod stats;
pub mod store;
pub mod transform;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use sluice_host_api::{
    Engine, EngineConfig, EngineError, Function, FunctionLimits, FunctionSpec, LoadError,
};
use sluice_protocol::ops::function::{
    Attach, DeployFunctionResponse, FunctionDescription, FunctionKind, FunctionLogsResponse,
    FunctionManifest, FunctionPosition, FunctionSummary, FunctionVersion, LogLevel,
};
use sluice_protocol::ops::group::INTERNAL_TOPIC_PREFIX;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::groups::{BatchFilter, Groups};
use crate::meta::MetaError;
use crate::sched::Scheduler;
use crate::store::Store;

pub use store::{
    CF_FUNCTION_KV, CF_FUNCTION_STATE, CF_FUNCTIONS, FunctionStore, KEYSPACES, VersionRecord,
};

/// Longest function name.
pub const MAX_NAME_LEN: usize = 128;
/// Instances alive at once across all functions.
const MAX_INSTANCES: u32 = 256;
/// The largest memory a manifest may ask for.
const MAX_MEMORY_BYTES: usize = 512 << 20;
/// Handler members per deployment unless the manifest says otherwise.
const DEFAULT_CONCURRENCY: u32 = 2;
/// Messages per call unless the manifest says otherwise.
pub const DEFAULT_BATCH_MESSAGES: u32 = 1024;
/// Pause before a runner that failed (its topic is gone, storage errors)
/// tries again.
const RUNNER_BACKOFF: Duration = Duration::from_secs(1);

/// The topic a transform's failed inputs go to.
pub fn dead_letter_topic(function: &str) -> String {
    format!("{INTERNAL_TOPIC_PREFIX}fn-dlq.{function}")
}

/// Why an admin request on functions (deploy, rollback, delete, describe,
/// logs) failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("no function named {0:?}")]
    Unknown(String),
    /// The manifest or the request was refused; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The component did not load (a rollback target, say).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A deploy's component did not load.
    #[error("component refused, nothing was deployed: {0}")]
    Refused(#[source] LoadError),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("component {digest} is missing: {source}")]
    MissingComponent {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storing the component: {0}")]
    StoreComponent(#[source] std::io::Error),
    #[error("component of version {version}: {source}")]
    ComponentOfVersion {
        version: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("task failed: {0}")]
    Task(#[from] JoinError),
}

type Result<T, E = FunctionError> = std::result::Result<T, E>;

/// The version a deployment runs now.
#[derive(Debug)]
pub struct Active {
    pub version: u32,
    pub digest: String,
    pub manifest: FunctionManifest,
    pub function: Function,
}

/// A running function: its active version, runners, log and metrics.
#[derive(Debug)]
pub struct Deployment {
    name: String,
    active: RwLock<Arc<Active>>,
    stats: stats::FnStats,
    log: Arc<logbook::LogBook>,
    /// Cancels the runners of the current attachment.
    stop: Mutex<CancellationToken>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    status: Mutex<String>,
    /// Transform progress per input partition (next offset).
    positions: Mutex<BTreeMap<u32, u64>>,
}

impl Deployment {
    /// The version to use for the next batch.
    pub fn active(&self) -> Arc<Active> {
        self.active.read().clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &stats::FnStats {
        &self.stats
    }

    /// A note in the function's log from the broker (failed calls, dead
    /// letters, runner errors).
    pub fn note(&self, now_ms: i64, level: LogLevel, message: &str) {
        let version = self.active().version;
        self.log.broker(now_ms, version, level, message);
    }

    fn set_status(&self, status: impl Into<String>) {
        *self.status.lock() = status.into();
    }
}

/// What runners share: storage, groups, scheduler and the clock.
#[derive(Debug)]
pub struct Shared {
    pub fs: FunctionStore,
    pub groups: Arc<Groups>,
    pub scheduler: Arc<Scheduler>,
    pub clock: Arc<dyn Clock>,
}

impl Shared {
    pub fn store(&self) -> &Arc<Store> {
        self.fs.store()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Every deployment of the broker.
#[derive(Debug)]
pub struct Functions {
    shared: Arc<Shared>,
    /// Created on first use: most brokers never load a function, and the
    /// pooling allocator reserves address space up front.
    engine: OnceLock<Engine>,
    deployments: Mutex<HashMap<String, Arc<Deployment>>>,
    /// Functions whose active version did not load at start, and why:
    /// listed (so an operator sees them), deletable, redeployable.
    failed: Mutex<BTreeMap<String, (VersionRecord, String)>>,
    /// Serialises deploys, rollbacks and deletions.
    admin: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
}

impl Functions {
    pub fn new(
        store: Arc<Store>,
        groups: Arc<Groups>,
        scheduler: Arc<Scheduler>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Functions {
        Functions {
            shared: Arc::new(Shared {
                fs: FunctionStore::new(store),
                groups,
                scheduler,
                clock,
            }),
            engine: OnceLock::new(),
            deployments: Mutex::new(HashMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            shutdown,
        }
    }

    fn engine(&self) -> Result<Engine> {
        if let Some(e) = self.engine.get() {
            return Ok(e.clone());
        }
        let engine = Engine::new(EngineConfig {
            cache_dir: Some(self.shared.fs.compiled_dir()),
            fuel: true,
            max_instances: MAX_INSTANCES,
            max_memory_bytes: MAX_MEMORY_BYTES,
            ..EngineConfig::default()
        })?;
        Ok(self.engine.get_or_init(|| engine).clone())
    }

    /// Loads and starts every deployed function (at broker start). A
    /// function that no longer loads is reported in its status and log.
    pub async fn start(self: &Arc<Self>) {
        let fs = self.shared.fs.clone();
        let active = match tokio::task::spawn_blocking(move || {
            fs.list_active()?
                .into_iter()
                .map(|(name, v)| Ok((name.clone(), fs.version(&name, v)?)))
                .collect::<Result<Vec<_>, MetaError>>()
        })
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the function registry");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "function registry task failed");
                return;
            }
        };
        for (name, record) in active {
            let Some(record) = record else {
                tracing::error!(function = %name, "active version is missing from the registry");
                continue;
            };
            let loaded = match self.shared.fs.component(&record.digest) {
                Ok(bytes) => self.load(&record.manifest, record.version, bytes).await,
                Err(source) => Err(FunctionError::MissingComponent {
                    digest: record.digest.clone(),
                    source,
                }),
            };
            match loaded {
                Ok((function, log)) => {
                    self.install(&record, function, log).await;
                }
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "cannot load a deployed function");
                    // Kept as the text the operator sees in the status.
                    self.failed.lock().insert(name, (record, e.to_string()));
                }
            }
        }
    }

    /// Compiles (or takes from the cache) and instantiates a version.
    async fn load(
        &self,
        manifest: &FunctionManifest,
        version: u32,
        bytes: Vec<u8>,
    ) -> Result<(Function, Arc<logbook::LogBook>)> {
        let log = match self.deployments.lock().get(&manifest.name) {
            Some(d) => d.log.clone(),
            None => Arc::new(logbook::LogBook::new(
                &manifest.name,
                manifest.limits.log_lines_per_sec,
            )),
        };
        let spec = spec_of(&self.shared, manifest, version, log.clone());
        let function = self.engine()?.load_async(spec, bytes).await?;
        Ok((function, log))
    }

    /// Makes `record` (loaded as `function`) the running version: swapped
    /// in at the next batch when the attachment is unchanged, else the
    /// runners restart.
    async fn install(
        self: &Arc<Self>,
        record: &VersionRecord,
        function: Function,
        log: Arc<logbook::LogBook>,
    ) {
        let active = Arc::new(Active {
            version: record.version,
            digest: record.digest.clone(),
            manifest: record.manifest.clone(),
            function,
        });
        let existing = self.deployments.lock().get(&record.manifest.name).cloned();
        let d = match existing {
            Some(d) => {
                let old_attach = d.active().manifest.attach.clone();
                if old_attach == record.manifest.attach {
                    *d.active.write() = active;
                } else {
                    // Runners of the old attachment finish their batch on
                    // the old version before the new ones start: two
                    // runners on one input partition would both commit it.
                    for t in self.stop_runners(&d, &old_attach) {
                        let _ = t.await;
                    }
                    *d.active.write() = active;
                    self.start_runners(&d);
                }
                d
            }
            None => {
                let d = Arc::new(Deployment {
                    name: record.manifest.name.clone(),
                    active: RwLock::new(active),
                    stats: stats::FnStats::default(),
                    log,
                    stop: Mutex::new(self.shutdown.child_token()),
                    tasks: Mutex::new(Vec::new()),
                    status: Mutex::new("starting".into()),
                    positions: Mutex::new(BTreeMap::new()),
                });
                self.deployments.lock().insert(d.name.clone(), d.clone());
                self.start_runners(&d);
                d
            }
        };
        d.note(
            self.shared.now_ms(),
            LogLevel::Info,
            &format!("version {} active", record.version),
        );
    }

    fn start_runners(&self, d: &Arc<Deployment>) {
        let stop = self.shutdown.child_token();
        *d.stop.lock() = stop.clone();
        let manifest = d.active().manifest.clone();
        let mut tasks = d.tasks.lock();
        match &manifest.attach {
            Attach::Filter { group } => {
                let f: Arc<dyn BatchFilter> =
                    Arc::new(filter::GroupFilter::new(d.clone(), self.shared.clone()));
                self.shared.groups.set_filter(group, Some(f));
                d.set_status("running");
            }
            Attach::Transform { input, .. } => {
                let partitions = self
                    .shared
                    .store()
                    .log()
                    .topic(input)
                    .map_or(0, |t| t.partitions().len() as u32);
                for p in 0..partitions {
                    tasks.push(tokio::spawn(transform::run(
                        self.shared.clone(),
                        d.clone(),
                        p,
                        stop.clone(),
                    )));
                }
                d.set_status("running");
            }
            Attach::Handler { concurrency, .. } => {
                let n = if *concurrency == 0 {
                    DEFAULT_CONCURRENCY
                } else {
                    *concurrency
                };
                for i in 0..n {
                    tasks.push(tokio::spawn(handler::run(
                        self.shared.clone(),
                        d.clone(),
                        i,
                        stop.clone(),
                    )));
                }
                d.set_status("running");
            }
        }
    }

    /// Stops the runners of `attach` (the deployment's current one); they
    /// finish the batch in hand first.
    fn stop_runners(&self, d: &Deployment, attach: &Attach) -> Vec<JoinHandle<()>> {
        d.stop.lock().cancel();
        if let Attach::Filter { group } = attach {
            self.shared.groups.set_filter(group, None);
        }
        std::mem::take(&mut *d.tasks.lock())
    }

    // ------------------------------------------------------------ admin

    /// Deploys a new version of `manifest.name`. The component is checked,
    /// compiled and instantiated before anything is stored: a refused
    /// component changes nothing.
    pub async fn deploy(
        self: &Arc<Self>,
        manifest: FunctionManifest,
        component: Bytes,
    ) -> Result<DeployFunctionResponse> {
        let _admin = self.admin.lock().await;
        validate_manifest(self.shared.store(), &manifest)?;
        self.check_one_filter_per_group(&manifest)?;
        let previous = self.deployments.lock().get(&manifest.name).cloned();
        if let Some(d) = &previous {
            check_upgrade(&d.active().manifest, &manifest)?;
        }
        let fs = self.shared.fs.clone();
        let name = manifest.name.clone();
        let versions = blocking(move || fs.versions(&name)).await??;
        let version = versions.last().map_or(1, |v| v.version + 1);
        let (function, log) = self
            .load(&manifest, version, component.to_vec())
            .await
            .map_err(|e| match e {
                FunctionError::Load(e) => FunctionError::Refused(e),
                e => e,
            })?;
        let record = VersionRecord {
            version,
            manifest,
            digest: function.digest().to_owned(),
            size: component.len() as u64,
            deployed_at_ms: self.shared.now_ms(),
        };
        let fs = self.shared.fs.clone();
        let stored = record.clone();
        blocking(move || {
            fs.put_component(&stored.digest, &component)
                .map_err(FunctionError::StoreComponent)?;
            fs.put_version(&stored.manifest.name, &stored)?;
            Ok::<_, FunctionError>(())
        })
        .await??;
        let previous_version = previous.map_or(0, |d| d.active().version);
        self.failed.lock().remove(&record.manifest.name);
        tracing::info!(function = %record.manifest.name, version, digest = %record.digest, "function deployed");
        self.install(&record, function, log).await;
        Ok(DeployFunctionResponse {
            version,
            digest: record.digest,
            previous_version,
        })
    }

    /// Makes an earlier version active again: `to` = 0 means the version
    /// before the active one.
    pub async fn rollback(self: &Arc<Self>, name: &str, to: u32) -> Result<DeployFunctionResponse> {
        let _admin = self.admin.lock().await;
        let d = self.deployment(name)?;
        let current = d.active();
        let fs = self.shared.fs.clone();
        let n = name.to_owned();
        let versions = blocking(move || fs.versions(&n)).await??;
        let target = if to == 0 {
            versions
                .iter()
                .rev()
                .find(|v| v.version < current.version)
                .ok_or_else(|| {
                    FunctionError::Invalid(format!(
                        "{name} has no version before {} to roll back to",
                        current.version
                    ))
                })?
        } else {
            versions
                .iter()
                .find(|v| v.version == to)
                .ok_or_else(|| FunctionError::Invalid(format!("{name} has no version {to}")))?
        }
        .clone();
        check_upgrade(&current.manifest, &target.manifest)?;
        validate_manifest(self.shared.store(), &target.manifest)?;
        self.check_one_filter_per_group(&target.manifest)?;
        let bytes = self.shared.fs.component(&target.digest).map_err(|source| {
            FunctionError::ComponentOfVersion {
                version: target.version,
                source,
            }
        })?;
        let (function, log) = self.load(&target.manifest, target.version, bytes).await?;
        let fs = self.shared.fs.clone();
        let (n, v) = (name.to_owned(), target.version);
        blocking(move || fs.set_active(&n, v)).await??;
        tracing::info!(function = %name, version = target.version, "function rolled back");
        self.install(&target, function, log).await;
        Ok(DeployFunctionResponse {
            version: target.version,
            digest: target.digest,
            previous_version: current.version,
        })
    }

    /// Stops a function and removes its versions, state and kv.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        if self.failed.lock().remove(name).is_none() {
            let d = self.deployment(name)?;
            for t in self.stop_runners(&d, &d.active().manifest.attach) {
                let _ = t.await;
            }
            self.deployments.lock().remove(name);
        }
        let fs = self.shared.fs.clone();
        let n = name.to_owned();
        blocking(move || fs.delete(&n)).await??;
        tracing::info!(function = %name, "function deleted");
        Ok(())
    }

    /// A group has at most one filter function.
    fn check_one_filter_per_group(&self, manifest: &FunctionManifest) -> Result<()> {
        let Attach::Filter { group } = &manifest.attach else {
            return Ok(());
        };
        let deployments = self.deployments.lock();
        let other = deployments.values().find(|d| {
            d.name != manifest.name
                && matches!(&d.active().manifest.attach, Attach::Filter { group: g } if g == group)
        });
        match other {
            Some(other) => Err(FunctionError::Invalid(format!(
                "group {group} already has a filter function, {} (delete it first)",
                other.name
            ))),
            None => Ok(()),
        }
    }

    fn deployment(&self, name: &str) -> Result<Arc<Deployment>> {
        self.deployments
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| FunctionError::Unknown(name.to_owned()))
    }

    pub fn list(&self) -> Vec<FunctionSummary> {
        let mut out: Vec<_> = self
            .deployments
            .lock()
            .values()
            .map(|d| {
                let a = d.active();
                FunctionSummary {
                    name: d.name.clone(),
                    kind: a.manifest.attach.kind(),
                    attach: a.manifest.attach.describe(),
                    version: a.version,
                    status: d.status.lock().clone(),
                    invocations: d.stats.invocations(),
                    errors: d.stats.error_count(),
                }
            })
            .collect();
        out.extend(self.failed.lock().values().map(|(r, e)| FunctionSummary {
            name: r.manifest.name.clone(),
            kind: r.manifest.attach.kind(),
            attach: r.manifest.attach.describe(),
            version: r.version,
            status: format!("failed to load: {e}"),
            invocations: 0,
            errors: 0,
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub async fn describe(&self, name: &str) -> Result<FunctionDescription> {
        if let Some((r, e)) = self.failed.lock().get(name) {
            return Err(FunctionError::Invalid(format!(
                "{name} version {} failed to load when the broker started: {e} (deploy a new version or delete it)",
                r.version
            )));
        }
        let d = self.deployment(name)?;
        let fs = self.shared.fs.clone();
        let n = name.to_owned();
        let versions = blocking(move || fs.versions(&n)).await??;
        let a = d.active();
        let engine_metrics = a.function.metrics();
        let positions = match &a.manifest.attach {
            Attach::Transform { input, .. } => d
                .positions
                .lock()
                .iter()
                .map(|(p, pos)| FunctionPosition {
                    topic: input.clone(),
                    partition: *p,
                    position: *pos,
                    high_watermark: self
                        .shared
                        .store()
                        .log()
                        .partition(input, *p)
                        .map_or(*pos, |part| part.high_watermark()),
                })
                .collect(),
            // A handler's progress is its group's.
            Attach::Handler { group, .. } => {
                let (groups, group) = (self.shared.groups.clone(), group.clone());
                blocking(move || groups.describe(&group))
                    .await?
                    .map(|g| {
                        g.partitions
                            .into_iter()
                            .filter(|p| {
                                p.instance_id.is_empty()
                                    || p.instance_id == handler::instance_id(name)
                            })
                            .map(|p| FunctionPosition {
                                topic: p.topic,
                                partition: p.partition,
                                position: p.committed,
                                high_watermark: p.high_watermark,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Attach::Filter { .. } => Vec::new(),
        };
        Ok(FunctionDescription {
            manifest: a.manifest.clone(),
            version: a.version,
            digest: a.digest.clone(),
            status: d.status.lock().clone(),
            versions: versions
                .into_iter()
                .map(|v| FunctionVersion {
                    version: v.version,
                    digest: v.digest,
                    size: v.size,
                    deployed_at_ms: v.deployed_at_ms,
                })
                .collect(),
            metrics: d.stats.snapshot(Some(&engine_metrics), d.log.counts()),
            positions,
        })
    }

    pub fn logs(&self, name: &str, after_seq: u64, max_lines: u32) -> Result<FunctionLogsResponse> {
        let d = self.deployment(name)?;
        let max = if max_lines == 0 {
            100
        } else {
            max_lines as usize
        };
        let (lines, dropped) = d.log.read(after_seq, max);
        Ok(FunctionLogsResponse { lines, dropped })
    }

    /// Stops every runner and waits for them (broker shutdown).
    pub async fn stop(&self) {
        let all: Vec<_> = self.deployments.lock().values().cloned().collect();
        for d in all {
            for t in self.stop_runners(&d, &d.active().manifest.attach) {
                let _ = t.await;
            }
        }
    }
}

/// Runs a runner's `serve` until `stop`: a failure (its topic is gone, a
/// storage error) is noted in the status and log, and `serve` starts
/// again after [`RUNNER_BACKOFF`]. The error ends here, rendered for the
/// operator.
async fn supervise<F, Fut, E>(
    shared: &Shared,
    d: &Deployment,
    stop: &CancellationToken,
    what: &str,
    mut serve: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    while !stop.is_cancelled() {
        if let Err(e) = serve().await {
            d.set_status(format!("retrying: {e}"));
            d.note(shared.now_ms(), LogLevel::Error, &format!("{what}: {e}"));
            tokio::select! {
                _ = tokio::time::sleep(RUNNER_BACKOFF) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Checks a manifest against the broker: a valid name, existing topics,
/// limits in range.
fn validate_manifest(store: &Store, m: &FunctionManifest) -> Result<()> {
    let invalid = |msg: String| Err(FunctionError::Invalid(msg));
    if m.name.is_empty()
        || m.name.len() > MAX_NAME_LEN
        || !m
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return invalid(format!(
            "function name {:?} must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -",
            m.name
        ));
    }
    if m.limits.memory_bytes as usize > MAX_MEMORY_BYTES {
        return invalid(format!(
            "memory limit {} bytes is over the broker's maximum of {MAX_MEMORY_BYTES}",
            m.limits.memory_bytes
        ));
    }
    let topic = |t: &str| -> Result<()> {
        store
            .log()
            .topic(t)
            .map(|_| ())
            .map_err(|_| FunctionError::UnknownTopic(t.to_owned()))
    };
    match &m.attach {
        Attach::Filter { group } => {
            if group.is_empty() {
                return invalid("a filter needs the group it filters for".into());
            }
        }
        Attach::Transform { input, outputs, .. } => {
            topic(input)?;
            if outputs.is_empty() {
                return invalid("a transform needs at least one output topic".into());
            }
            for o in outputs {
                topic(o)?;
                if o == input {
                    return invalid(format!(
                        "transform output {o:?} is its input: it would transform its own output forever"
                    ));
                }
            }
        }
        Attach::Handler {
            group, settings, ..
        } => {
            if group.is_empty() {
                return invalid("a handler needs the group it consumes as".into());
            }
            topic(&settings.topic)?;
        }
    }
    for t in &m.allowed_topics {
        topic(t)?;
    }
    Ok(())
}

/// What a new version may not change: its kind, and a transform's input
/// (its stored positions are offsets in that topic).
fn check_upgrade(old: &FunctionManifest, new: &FunctionManifest) -> Result<()> {
    if old.attach.kind() != new.attach.kind() {
        return Err(FunctionError::Invalid(format!(
            "{} is a {}; a new version cannot be a {} (delete it first)",
            old.name,
            old.attach.kind(),
            new.attach.kind()
        )));
    }
    if let (Attach::Transform { input: a, .. }, Attach::Transform { input: b, .. }) =
        (&old.attach, &new.attach)
        && a != b
    {
        return Err(FunctionError::Invalid(format!(
            "{} reads {a}; a new version cannot read {b} (its positions are offsets in {a}; delete it first)",
            old.name
        )));
    }
    Ok(())
}

/// The engine's view of a manifest.
fn spec_of(
    shared: &Shared,
    m: &FunctionManifest,
    version: u32,
    log: Arc<logbook::LogBook>,
) -> FunctionSpec {
    let services = services::services(
        &shared.fs,
        shared.scheduler.clone(),
        &m.name,
        version,
        shared.clock.clone(),
        log,
    );
    let mut spec = FunctionSpec::new(m.name.clone(), services);
    spec.kind = Some(match m.attach.kind() {
        FunctionKind::Filter => sluice_host_api::FunctionKind::Filter,
        FunctionKind::Transform => sluice_host_api::FunctionKind::Transform,
        FunctionKind::Handler => sluice_host_api::FunctionKind::Handler,
    });
    spec.config = m.config.iter().cloned().collect();
    let defaults = FunctionLimits::default();
    let l = &m.limits;
    spec.limits = FunctionLimits {
        timeout: if l.timeout_ms == 0 {
            defaults.timeout
        } else {
            Duration::from_millis(l.timeout_ms.into())
        },
        memory_bytes: if l.memory_bytes == 0 {
            defaults.memory_bytes
        } else {
            l.memory_bytes as usize
        },
        fuel_per_call: (l.fuel_per_call > 0).then_some(l.fuel_per_call),
        // Idle instances cost a pooling slot each: keep few per function.
        max_idle_instances: 4,
        recycle_above_memory: defaults.recycle_above_memory.min(if l.memory_bytes == 0 {
            usize::MAX
        } else {
            l.memory_bytes as usize / 2
        }),
        ..defaults
    };
    if !m.allowed_topics.is_empty() {
        let mut allowed: BTreeSet<String> = m.allowed_topics.iter().cloned().collect();
        if let Attach::Transform { outputs, .. } = &m.attach {
            allowed.extend(outputs.iter().cloned());
        }
        spec.allowed_topics = Some(allowed);
    }
    spec
}

/// Messages per call for a deployment.
pub fn batch_messages(m: &FunctionManifest) -> usize {
    match m.limits.max_batch_messages {
        0 => DEFAULT_BATCH_MESSAGES as usize,
        n => n as usize,
    }
}
