//! Functions: deploy a WebAssembly component the broker runs, list and
//! describe them, read their logs, delete one, roll one back to an earlier
//! version.
//!
//! A function is a named, versioned component plus a manifest saying where
//! it attaches:
//!
//! - a **filter** runs server-side before delivery to every member of one
//!   consumer group and decides which messages the group sees;
//! - a **transform** reads a topic and writes what it returns to its output
//!   topics, exactly once, keeping its own position;
//! - a **handler** is a member of a consumer group: it is given batches and
//!   acks or nacks them like any member.
//!
//! Each deploy under a name adds a version (numbered from 1) and makes it
//! the active one; the broker keeps earlier versions so a rollback needs no
//! upload. The manifest travels with each version: a rollback restores the
//! version's component *and* its manifest.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;

use super::OffsetSpec;
use super::group::GroupSettings;
use crate::codec::{DecodeError, Reader, Wire, Writer};
use crate::{wire_struct, wire_u8_enum};

// ---------------------------------------------------------------- manifest

/// What a function does with messages; follows from its [`Attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// Decides, per message, whether a consumer group sees it.
    Filter,
    /// Turns messages of one topic into messages of others.
    Transform,
    /// Consumes a topic as a member of a consumer group.
    Handler,
}

impl FunctionKind {
    /// Every kind, in wire order.
    pub const ALL: [FunctionKind; 3] = [
        FunctionKind::Filter,
        FunctionKind::Transform,
        FunctionKind::Handler,
    ];

    /// The lowercase name (`filter`, `transform`, `handler`), as the CLI and
    /// manifests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionKind::Filter => "filter",
            FunctionKind::Transform => "transform",
            FunctionKind::Handler => "handler",
        }
    }

    /// The wire tag: 0 filter, 1 transform, 2 handler.
    pub fn to_u8(self) -> u8 {
        match self {
            FunctionKind::Filter => 0,
            FunctionKind::Transform => 1,
            FunctionKind::Handler => 2,
        }
    }

    /// Reads the wire tag; any other value is [`DecodeError::InvalidValue`].
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(FunctionKind::Filter),
            1 => Ok(FunctionKind::Transform),
            2 => Ok(FunctionKind::Handler),
            v => Err(DecodeError::InvalidValue {
                what: "function kind",
                value: v.into(),
            }),
        }
    }
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not `filter`, `transform` or `handler`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown function kind {0:?}: expected filter, transform or handler")]
pub struct UnknownFunctionKind(pub String);

impl FromStr for FunctionKind {
    type Err = UnknownFunctionKind;

    /// Parses `filter`, `transform` or `handler` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FunctionKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownFunctionKind(s.to_owned()))
    }
}

/// Where a function attaches, and so what kind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Tag 0: evaluated server-side before delivery to every member of
    /// `group` (the group must exist or be joined later; the filter applies
    /// whichever member receives).
    Filter {
        /// The consumer group whose deliveries it filters.
        group: String,
    },
    /// Tag 1: reads `input`, writes to `outputs` (the first is the default
    /// output), exactly once; `start` is where it starts when it has no
    /// stored position yet (a redeploy keeps the position).
    Transform {
        /// The topic it reads.
        input: String,
        /// The topics it writes; at least one, not `input` itself.
        outputs: Vec<String>,
        /// Where it starts without a stored position (earliest, latest or a timestamp).
        start: OffsetSpec,
    },
    /// Tag 2: runs as a member of `group`, joining with `settings` (so a
    /// handler and ordinary members of the same group must agree on them);
    /// `concurrency` is how many batches it has in flight at once (0 = the
    /// broker's default).
    Handler {
        /// The group it consumes as a member of.
        group: String,
        /// The settings it joins with (topic, retries, ordering, filter, start).
        settings: GroupSettings,
        /// Batches in flight at once; 0 = the broker's default.
        concurrency: u32,
    },
}

impl Attach {
    /// The kind of function this attachment makes.
    pub fn kind(&self) -> FunctionKind {
        match self {
            Attach::Filter { .. } => FunctionKind::Filter,
            Attach::Transform { .. } => FunctionKind::Transform,
            Attach::Handler { .. } => FunctionKind::Handler,
        }
    }

    /// One line for listings: `filter on group g`, `transform a -> b, c`,
    /// `handler on group g (topic t)`.
    pub fn describe(&self) -> String {
        match self {
            Attach::Filter { group } => format!("filter on group {group}"),
            Attach::Transform { input, outputs, .. } => {
                format!("transform {input} -> {}", outputs.join(", "))
            }
            Attach::Handler {
                group, settings, ..
            } => format!("handler on group {group} (topic {})", settings.topic),
        }
    }
}

/// Encodes: `u8 tag`, then per tag —
/// 0: `string group`;
/// 1: `string input, array<string> outputs, i64 start`;
/// 2: `string group, GroupSettings, u32 concurrency`.
impl Wire for Attach {
    const MIN_LEN: usize = 3;
    fn encode_to(&self, w: &mut Writer) {
        match self {
            Attach::Filter { group } => {
                w.u8(0).string(group);
            }
            Attach::Transform {
                input,
                outputs,
                start,
            } => {
                w.u8(1).string(input);
                outputs.encode_to(w);
                start.encode_to(w);
            }
            Attach::Handler {
                group,
                settings,
                concurrency,
            } => {
                w.u8(2).string(group);
                settings.encode_to(w);
                w.u32(*concurrency);
            }
        }
    }

    fn decode_from(r: &mut Reader, _: &'static str) -> Result<Self, DecodeError> {
        match r.u8("attach kind")? {
            0 => Ok(Attach::Filter {
                group: r.string("group")?,
            }),
            1 => Ok(Attach::Transform {
                input: r.string("input topic")?,
                outputs: Wire::decode_from(r, "output topics")?,
                start: Wire::decode_from(r, "start position")?,
            }),
            2 => Ok(Attach::Handler {
                group: r.string("group")?,
                settings: Wire::decode_from(r, "group settings")?,
                concurrency: r.u32("concurrency")?,
            }),
            v => Err(DecodeError::InvalidValue {
                what: "attach kind",
                value: v.into(),
            }),
        }
    }
}

/// Per-function resource limits. 0 in any field means the broker's
/// default, so a manifest only names what it wants different, and the
/// broker can raise its defaults without redeploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionLimitsSpec {
    /// Wall-clock budget of one call (a batch), in milliseconds.
    pub timeout_ms: u32,
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: u64,
    /// Wasm fuel (roughly, instructions) one call may burn.
    pub fuel_per_call: u64,
    /// Most messages handed to one call.
    pub max_batch_messages: u32,
    /// Log lines per second the function may write before lines are dropped
    /// (and counted).
    pub log_lines_per_sec: u32,
}

/// What a deploy says about the component beside its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionManifest {
    /// The function's name: a deploy under an existing name adds a version.
    pub name: String,
    /// Where it attaches; the kind is `attach.kind()`.
    pub attach: Attach,
    /// Key/value pairs the function reads through the host's config API.
    pub config: Vec<(String, String)>,
    /// Per-call limits; 0 in a field means the broker's default, so a manifest names only what it wants different.
    pub limits: FunctionLimitsSpec,
    /// Topics emit/schedule may name (transforms may also always write
    /// their outputs); empty = any topic.
    pub allowed_topics: Vec<String>,
}

impl FunctionManifest {
    /// A manifest with this name and attachment, empty config, default
    /// limits and no topic restriction.
    pub fn new(name: impl Into<String>, attach: Attach) -> Self {
        FunctionManifest {
            name: name.into(),
            attach,
            config: Vec::new(),
            limits: FunctionLimitsSpec::default(),
            allowed_topics: Vec::new(),
        }
    }

    /// A filter on consumer group `group`.
    pub fn filter(name: impl Into<String>, group: impl Into<String>) -> Self {
        Self::new(
            name,
            Attach::Filter {
                group: group.into(),
            },
        )
    }

    /// A transform from `input` to `outputs` (the first is the default
    /// output), starting at the latest offset the first time it runs; see
    /// [`FunctionManifest::start`].
    pub fn transform<S: Into<String>>(
        name: impl Into<String>,
        input: impl Into<String>,
        outputs: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::new(
            name,
            Attach::Transform {
                input: input.into(),
                outputs: outputs.into_iter().map(Into::into).collect(),
                start: OffsetSpec::Latest,
            },
        )
    }

    /// A handler joining `group` with `settings` (its topic, retries,
    /// ordering, ...), at the broker's default concurrency.
    pub fn handler(
        name: impl Into<String>,
        group: impl Into<String>,
        settings: GroupSettings,
    ) -> Self {
        Self::new(
            name,
            Attach::Handler {
                group: group.into(),
                settings,
                concurrency: 0,
            },
        )
    }

    /// The function's kind.
    pub fn kind(&self) -> FunctionKind {
        self.attach.kind()
    }

    /// Adds a config entry (a key given again replaces the earlier value).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.config.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.config.push((key, value)),
        }
        self
    }

    /// Allows emit/schedule to write to `topic` (once any topic is allowed,
    /// only allowed topics are).
    pub fn allow_topic(mut self, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        if !self.allowed_topics.contains(&topic) {
            self.allowed_topics.push(topic);
        }
        self
    }

    /// Per-call time budget, rounded up to whole milliseconds (so a tiny
    /// non-zero budget does not become 0, "the default").
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout_ms = duration_ms(timeout);
        self
    }

    /// Largest memory an instance may use.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.limits.memory_bytes = bytes;
        self
    }

    /// Fuel one call may burn.
    pub fn fuel_per_call(mut self, fuel: u64) -> Self {
        self.limits.fuel_per_call = fuel;
        self
    }

    /// Most messages handed to one call.
    pub fn max_batch_messages(mut self, n: u32) -> Self {
        self.limits.max_batch_messages = n;
        self
    }

    /// Log lines per second before lines are dropped.
    pub fn log_lines_per_sec(mut self, n: u32) -> Self {
        self.limits.log_lines_per_sec = n;
        self
    }

    /// Where a transform starts when it has no stored position. No effect
    /// on other kinds.
    pub fn start(mut self, start: OffsetSpec) -> Self {
        if let Attach::Transform { start: s, .. } = &mut self.attach {
            *s = start;
        }
        self
    }

    /// Batches a handler has in flight at once (0 = the broker's default).
    /// No effect on other kinds.
    pub fn concurrency(mut self, n: u32) -> Self {
        if let Attach::Handler { concurrency, .. } = &mut self.attach {
            *concurrency = n;
        }
        self
    }
}

/// `d` in whole milliseconds, rounded up, saturating at `u32::MAX`.
fn duration_ms(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------- deploy

/// Deploys a component under `manifest.name`: a new function, or a new
/// version of an existing one (which replaces the active version once the
/// new one has been validated and instantiated). A component the broker
/// refuses (not a valid component, the wrong world for its kind, a bad
/// manifest) fails with `INVALID_FUNCTION` and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFunctionRequest {
    /// Name, attachment, config and limits of the new version.
    pub manifest: FunctionManifest,
    /// The component's bytes (a WebAssembly component binary).
    pub component: Bytes,
}

/// The version a deploy or rollback made active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFunctionResponse {
    /// The version now active (1 for a new function).
    pub version: u32,
    /// The component's SHA-256 in lowercase hex, so a client can tell
    /// whether a deploy changed anything.
    pub digest: String,
    /// The version it replaced; 0 = none (a new function).
    pub previous_version: u32,
}

// ---------------------------------------------------------------- list

/// Lists the deployed functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListFunctionsRequest;

/// One function, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSummary {
    /// Function name.
    pub name: String,
    /// Filter, transform or handler.
    pub kind: FunctionKind,
    /// [`Attach::describe`] of the active version.
    pub attach: String,
    /// The active version.
    pub version: u32,
    /// The broker's word for its state (`running`, `failed: ...`, ...).
    pub status: String,
    /// Calls since the broker started.
    pub invocations: u64,
    /// Failed calls since the broker started.
    pub errors: u64,
}

/// Answers a list of functions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListFunctionsResponse {
    /// Every deployed function.
    pub functions: Vec<FunctionSummary>,
}

// ---------------------------------------------------------------- describe

/// Describes one function: its active manifest, versions, metrics and (for
/// transforms and handlers) positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeFunctionRequest {
    /// Function name.
    pub name: String,
}

/// A stored version of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionVersion {
    /// Version number, from 1.
    pub version: u32,
    /// Its component's SHA-256, lowercase hex.
    pub digest: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was deployed, ms since the epoch.
    pub deployed_at_ms: i64,
}

/// What a function has done since the broker started (all versions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionMetrics {
    /// Calls (each gets a batch of one or more messages).
    pub invocations: u64,
    /// Messages handed to calls.
    pub messages: u64,
    /// Failed calls by kind of failure (`trap`, `timeout`, `memory`,
    /// `output_limit`, `invalid_output`, ...), as the engine names them.
    pub errors: Vec<(String, u64)>,
    /// Median call time, µs.
    pub latency_p50_us: u64,
    /// 99th percentile call time, µs.
    pub latency_p99_us: u64,
    /// Longest call, µs.
    pub latency_max_us: u64,
    /// Fuel burnt.
    pub fuel: u64,
    /// Time spent running calls, in microseconds.
    pub busy_us: u64,
    /// WebAssembly instances created.
    pub instances_created: u64,
    /// Instances dropped (after a failure, a call budget or memory growth).
    pub instances_recycled: u64,
    /// Log lines kept.
    pub log_lines: u64,
    /// Log lines dropped by the rate limit.
    pub log_dropped: u64,
}

impl FunctionMetrics {
    /// Failed calls, all kinds together.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }
}

/// Where a transform (its input) or handler (its group) is in one
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionPosition {
    /// Topic: a transform's input, or a handler group's topic or retry topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// The first offset not yet done.
    pub position: u64,
    /// The partition's high watermark; lag is `high_watermark - position`.
    pub high_watermark: u64,
}

impl FunctionPosition {
    /// Messages not yet done: `high_watermark - position`.
    pub fn lag(&self) -> u64 {
        self.high_watermark.saturating_sub(self.position)
    }
}

/// A function as DescribeFunction answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDescription {
    /// The active version's manifest.
    pub manifest: FunctionManifest,
    /// The active version.
    pub version: u32,
    /// The active version's component digest (SHA-256, hex).
    pub digest: String,
    /// The broker's word for its state, as in [`FunctionSummary::status`].
    pub status: String,
    /// Every stored version, oldest first.
    pub versions: Vec<FunctionVersion>,
    /// What it has done since the broker started.
    pub metrics: FunctionMetrics,
    /// Empty for filters (they have no position of their own).
    pub positions: Vec<FunctionPosition>,
}

impl FunctionDescription {
    /// Total lag over the positions.
    pub fn total_lag(&self) -> u64 {
        self.positions.iter().map(FunctionPosition::lag).sum()
    }
}

// ---------------------------------------------------------------- logs

/// The level of a function's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Step-by-step detail (wire value 0), the most verbose.
    Trace,
    /// Debugging detail (1).
    Debug,
    /// Normal operation worth noting (2).
    Info,
    /// Something unexpected that the function coped with (3).
    Warn,
    /// A failure (4), the most severe.
    Error,
}

impl LogLevel {
    /// The wire value, 0 (trace) to 4 (error).
    pub fn to_u8(self) -> u8 {
        match self {
            LogLevel::Trace => 0,
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
        }
    }

    /// Reads the wire value; above 4 is [`DecodeError::InvalidValue`].
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(LogLevel::Trace),
            1 => Ok(LogLevel::Debug),
            2 => Ok(LogLevel::Info),
            3 => Ok(LogLevel::Warn),
            4 => Ok(LogLevel::Error),
            v => Err(DecodeError::InvalidValue {
                what: "log level",
                value: v.into(),
            }),
        }
    }

    /// The lowercase name (`trace` ... `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so `{:5}` aligns columns.
        f.pad(self.as_str())
    }
}

/// Reads a function's log: up to `max_lines` lines with a sequence number
/// above `after_seq` (0 = from the oldest the broker still keeps), oldest
/// first. To follow a log, ask again with the last line's `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLogsRequest {
    /// Function name.
    pub name: String,
    /// Only lines numbered above this; 0 = from the oldest kept.
    pub after_seq: u64,
    /// 0 = the broker's default page size.
    pub max_lines: u32,
}

/// One line a function logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLogLine {
    /// Increases by one per line kept for the function (starting at 1).
    pub seq: u64,
    /// When it was logged, ms since the epoch.
    pub at_ms: i64,
    /// The level the guest (or the broker, for its own notes) logged at.
    pub level: LogLevel,
    /// The version that logged it.
    pub version: u32,
    /// The text.
    pub message: String,
}

/// Answers a log read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionLogsResponse {
    /// Oldest first; a jump in `seq` means lines rotated out in between.
    pub lines: Vec<FunctionLogLine>,
    /// Lines dropped by the rate limit (or rotated out before they could be
    /// read) since the broker started.
    pub dropped: u64,
}

impl FunctionLogsResponse {
    /// The `after_seq` to ask for next: the last line's seq, or `after` when
    /// there was none.
    pub fn next_after(&self, after: u64) -> u64 {
        self.lines.last().map_or(after, |l| l.seq.max(after))
    }
}

// ---------------------------------------------------------------- delete, rollback

/// Stops a function and forgets it: every version, its position and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFunctionRequest {
    /// Function name.
    pub name: String,
}

/// Makes a stored version the active one again (component and manifest).
/// Answers like a deploy: `version` is the version now active,
/// `previous_version` the one it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackFunctionRequest {
    /// Function name.
    pub name: String,
    /// 0 = the version before the active one.
    pub to_version: u32,
}

wire_u8_enum!(FunctionKind, LogLevel);
wire_struct!(FunctionLimitsSpec {
    timeout_ms,
    memory_bytes,
    fuel_per_call,
    max_batch_messages,
    log_lines_per_sec
});
// Also the broker's storage encoding of a manifest.
wire_struct!(FunctionManifest {
    name,
    attach,
    config,
    limits,
    allowed_topics
});
wire_struct!(DeployFunctionRequest {
    manifest,
    component
});
wire_struct!(DeployFunctionResponse {
    version,
    digest,
    previous_version
});
wire_struct!(ListFunctionsRequest);
wire_struct!(FunctionSummary {
    name,
    kind,
    attach,
    version,
    status,
    invocations,
    errors
});
wire_struct!(ListFunctionsResponse { functions });
wire_struct!(DescribeFunctionRequest { name });
wire_struct!(FunctionVersion {
    version,
    digest,
    size,
    deployed_at_ms
});
wire_struct!(FunctionMetrics {
    invocations,
    messages,
    errors,
    latency_p50_us,
    latency_p99_us,
    latency_max_us,
    fuel,
    busy_us,
    instances_created,
    instances_recycled,
    log_lines,
    log_dropped
});
wire_struct!(FunctionPosition {
    topic,
    partition,
    position,
    high_watermark
});
wire_struct!(FunctionDescription {
    manifest,
    version,
    digest,
    status,
    versions,
    metrics,
    positions
});
wire_struct!(FunctionLogsRequest {
    name,
    after_seq,
    max_lines
});
wire_struct!(FunctionLogLine {
    seq,
    at_ms,
    level,
    version,
    message
});
wire_struct!(FunctionLogsResponse { lines, dropped });
wire_struct!(DeleteFunctionRequest { name });
wire_struct!(RollbackFunctionRequest { name, to_version });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::group::GroupMode;
    use crate::ops::{Op, Payload, RequestPayload};

    fn round_trip<P: Payload + PartialEq + std::fmt::Debug>(p: P) {
        let bytes = p.encode();
        assert_eq!(P::decode(bytes.clone()).unwrap(), p);
        // Every strict prefix is refused, never panics.
        for cut in 0..bytes.len() {
            assert!(P::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    fn handler_settings() -> GroupSettings {
        GroupSettings {
            topic: "orders".into(),
            mode: GroupMode::Clustering,
            ordered: true,
            tag_filter: "vip".into(),
            start: OffsetSpec::Earliest,
            ack_timeout_ms: 10_000,
            max_attempts: 5,
            retry_ladder_ms: vec![1000, 5000],
            max_in_flight: 500,
        }
    }

    fn attaches() -> Vec<Attach> {
        vec![
            Attach::Filter {
                group: "billing".into(),
            },
            Attach::Transform {
                input: "raw".into(),
                outputs: vec!["clean".into(), "rejects".into()],
                start: OffsetSpec::Timestamp(1_700_000_000_000),
            },
            Attach::Transform {
                input: "raw".into(),
                outputs: vec![],
                start: OffsetSpec::Earliest,
            },
            Attach::Handler {
                group: "mailer".into(),
                settings: handler_settings(),
                concurrency: 4,
            },
        ]
    }

    fn manifest(attach: Attach) -> FunctionManifest {
        FunctionManifest {
            name: "f".into(),
            attach,
            config: vec![("threshold".into(), "10".into()), ("k".into(), "".into())],
            limits: FunctionLimitsSpec {
                timeout_ms: 1000,
                memory_bytes: 64 << 20,
                fuel_per_call: 1_000_000,
                max_batch_messages: 100,
                log_lines_per_sec: 50,
            },
            allowed_topics: vec!["audit".into()],
        }
    }

    #[test]
    fn every_attach_round_trips() {
        for attach in attaches() {
            round_trip(manifest(attach.clone()));
            round_trip(FunctionManifest::new("g", attach.clone()));
            round_trip(DeployFunctionRequest {
                manifest: manifest(attach),
                component: Bytes::from_static(b"\0asm\x0d\0\x01\0"),
            });
        }
    }

    #[test]
    fn function_payloads_round_trip() {
        round_trip(DeployFunctionResponse {
            version: 3,
            digest: "sha256:abcd".into(),
            previous_version: 2,
        });
        round_trip(ListFunctionsRequest);
        round_trip(ListFunctionsResponse {
            functions: FunctionKind::ALL
                .into_iter()
                .enumerate()
                .map(|(i, kind)| FunctionSummary {
                    name: format!("f{i}"),
                    kind,
                    attach: "filter on group g".into(),
                    version: i as u32 + 1,
                    status: "running".into(),
                    invocations: 100,
                    errors: 2,
                })
                .collect(),
        });
        round_trip(ListFunctionsResponse::default());
        round_trip(DescribeFunctionRequest { name: "f".into() });
        round_trip(FunctionDescription {
            manifest: manifest(attaches().remove(1)),
            version: 2,
            digest: "sha256:ef".into(),
            status: "running".into(),
            versions: vec![
                FunctionVersion {
                    version: 1,
                    digest: "sha256:01".into(),
                    size: 12_345,
                    deployed_at_ms: 1_700_000_000_000,
                },
                FunctionVersion {
                    version: 2,
                    digest: "sha256:ef".into(),
                    size: 12_400,
                    deployed_at_ms: 1_700_000_100_000,
                },
            ],
            metrics: FunctionMetrics {
                invocations: 10,
                messages: 1000,
                errors: vec![("trap".into(), 1), ("timeout".into(), 2)],
                latency_p50_us: 50,
                latency_p99_us: 900,
                latency_max_us: 4000,
                fuel: 123_456,
                busy_us: 5000,
                instances_created: 2,
                instances_recycled: 1,
                log_lines: 7,
                log_dropped: 0,
            },
            positions: vec![FunctionPosition {
                topic: "raw".into(),
                partition: 1,
                position: 40,
                high_watermark: 50,
            }],
        });
        round_trip(FunctionDescription {
            manifest: FunctionManifest::filter("f", "g"),
            version: 1,
            digest: String::new(),
            status: String::new(),
            versions: vec![],
            metrics: FunctionMetrics::default(),
            positions: vec![],
        });
        round_trip(FunctionLogsRequest {
            name: "f".into(),
            after_seq: 41,
            max_lines: 100,
        });
        round_trip(FunctionLogsResponse {
            lines: [
                LogLevel::Trace,
                LogLevel::Debug,
                LogLevel::Info,
                LogLevel::Warn,
                LogLevel::Error,
            ]
            .into_iter()
            .enumerate()
            .map(|(i, level)| FunctionLogLine {
                seq: 42 + i as u64,
                at_ms: 1_700_000_000_000,
                level,
                version: 2,
                message: format!("line {i} ünïcödé"),
            })
            .collect(),
            dropped: 3,
        });
        round_trip(DeleteFunctionRequest { name: "f".into() });
        round_trip(RollbackFunctionRequest {
            name: "f".into(),
            to_version: 0,
        });
    }

    #[test]
    fn ops_are_registered() {
        assert_eq!(DeployFunctionRequest::OP as u16, 0x0070);
        assert_eq!(ListFunctionsRequest::OP as u16, 0x0071);
        assert_eq!(DescribeFunctionRequest::OP as u16, 0x0072);
        assert_eq!(FunctionLogsRequest::OP as u16, 0x0073);
        assert_eq!(DeleteFunctionRequest::OP as u16, 0x0074);
        assert_eq!(RollbackFunctionRequest::OP as u16, 0x0075);
        for op in 0x0070..=0x0075u16 {
            assert_eq!(Op::from_u16(op).map(|o| o as u16), Some(op));
        }
        assert_eq!(Op::from_u16(0x0076), None);
        let req = super::super::Request::decode(
            0x0074,
            DeleteFunctionRequest { name: "f".into() }.encode(),
        )
        .unwrap();
        assert_eq!(
            req,
            super::super::Request::DeleteFunction(DeleteFunctionRequest { name: "f".into() })
        );
    }

    #[test]
    fn bad_enums_are_refused() {
        // Attach tag 3.
        let mut w = Writer::new();
        w.string("f").u8(3).string("g");
        assert_eq!(
            FunctionManifest::decode(w.finish()),
            Err(DecodeError::InvalidValue {
                what: "attach kind",
                value: 3
            })
        );
        // A transform's start that is no offset spec.
        let mut w = Writer::new();
        w.u8(1).string("in").count(0).i64(-7);
        assert!(matches!(
            Attach::read(&mut Reader::new(w.finish())),
            Err(DecodeError::InvalidValue {
                what: "offset spec",
                value: -7
            })
        ));
        // Function kind 3 in a listing.
        let mut w = Writer::new();
        w.count(1)
            .string("f")
            .u8(3)
            .string("")
            .u32(1)
            .string("")
            .u64(0)
            .u64(0);
        assert_eq!(
            ListFunctionsResponse::decode(w.finish()),
            Err(DecodeError::InvalidValue {
                what: "function kind",
                value: 3
            })
        );
        // Log level 5.
        let mut w = Writer::new();
        w.count(1).u64(1).i64(0).u8(5).u32(1).string("x").u64(0);
        assert_eq!(
            FunctionLogsResponse::decode(w.finish()),
            Err(DecodeError::InvalidValue {
                what: "log level",
                value: 5
            })
        );
    }

    #[test]
    fn kinds_and_levels_have_names() {
        for kind in FunctionKind::ALL {
            assert_eq!(kind.to_string().parse::<FunctionKind>(), Ok(kind));
            assert_eq!(FunctionKind::from_u8(kind.to_u8()), Ok(kind));
        }
        assert_eq!("Handler".parse(), Ok(FunctionKind::Handler));
        let err = "map".parse::<FunctionKind>().unwrap_err();
        assert!(err.to_string().contains("filter, transform or handler"));
        assert_eq!(LogLevel::Warn.to_string(), "warn");
        assert_eq!(format!("{:5}|", LogLevel::Info), "info |");
        assert!(LogLevel::Error > LogLevel::Info);
    }

    #[test]
    fn attach_describes_itself() {
        let a = attaches();
        assert_eq!(a[0].kind(), FunctionKind::Filter);
        assert_eq!(a[0].describe(), "filter on group billing");
        assert_eq!(a[1].kind(), FunctionKind::Transform);
        assert_eq!(a[1].describe(), "transform raw -> clean, rejects");
        assert_eq!(a[3].kind(), FunctionKind::Handler);
        assert_eq!(a[3].describe(), "handler on group mailer (topic orders)");
    }

    #[test]
    fn builders_fill_the_manifest() {
        let m = FunctionManifest::transform("t", "raw", ["clean", "rejects"])
            .start(OffsetSpec::Earliest)
            .config("a", "1")
            .config("b", "2")
            .config("a", "3")
            .allow_topic("audit")
            .allow_topic("audit")
            .timeout(Duration::from_micros(1500))
            .memory_bytes(1 << 20)
            .fuel_per_call(99)
            .max_batch_messages(7)
            .log_lines_per_sec(5)
            .concurrency(9);
        assert_eq!(
            m.attach,
            Attach::Transform {
                input: "raw".into(),
                outputs: vec!["clean".into(), "rejects".into()],
                start: OffsetSpec::Earliest,
            }
        );
        assert_eq!(
            m.config,
            [("a".into(), "3".into()), ("b".into(), "2".into())]
        );
        assert_eq!(m.allowed_topics, ["audit"]);
        assert_eq!(
            m.limits,
            FunctionLimitsSpec {
                timeout_ms: 2,
                memory_bytes: 1 << 20,
                fuel_per_call: 99,
                max_batch_messages: 7,
                log_lines_per_sec: 5,
            }
        );
        let h = FunctionManifest::handler("h", "g", handler_settings()).concurrency(3);
        assert_eq!(h.kind(), FunctionKind::Handler);
        assert!(matches!(h.attach, Attach::Handler { concurrency: 3, .. }));
        let f = FunctionManifest::filter("f", "g").timeout(Duration::from_secs(u64::MAX));
        assert_eq!(f.limits.timeout_ms, u32::MAX);
    }

    #[test]
    fn manifest_bytes_match_the_docs() {
        // docs/protocol.md, "Function manifest": a filter `vip` on group
        // `billing`, nothing else.
        let expected: &[u8] = &[
            0x00, 0x03, b'v', b'i', b'p', // name
            0x00, // attach: filter
            0x00, 0x07, b'b', b'i', b'l', b'l', b'i', b'n', b'g', // group
            0, 0, 0, 0, // config
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, // limits
            0, 0, 0, 0, // allowed topics
        ];
        let bytes = FunctionManifest::filter("vip", "billing").encode();
        assert_eq!(bytes.len(), 51);
        assert_eq!(&bytes[..], expected);
    }

    #[test]
    fn log_paging_continues_after_the_last_line() {
        let mut r = FunctionLogsResponse::default();
        assert_eq!(r.next_after(7), 7);
        r.lines.push(FunctionLogLine {
            seq: 9,
            at_ms: 0,
            level: LogLevel::Info,
            version: 1,
            message: String::new(),
        });
        assert_eq!(r.next_after(7), 9);
    }
}
