//! `sluice fn deploy|list|describe|logs|delete|rollback`: WebAssembly
//! functions the broker runs (see docs/functions.md).
//!
//! A deploy is described by flags, by a TOML manifest (`--manifest`), or
//! both: the manifest holds what rarely changes, and flags given on the
//! command line override it field by field. Merging is pure (no broker, no
//! files but the manifest) so it is unit-tested here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sluice_client::{
    Attach, Client, DeployFunctionResponse, FunctionDescription, FunctionKind, FunctionLogLine,
    FunctionManifest, FunctionSummary, GroupSettings, OffsetSpec, SeekTo,
};

use super::consume::{StartAt, parse_from};
use super::delay::parse_duration;
use super::topic::{human_bytes, table};
use super::{ConnectArgs, block_on, is_broken_pipe, parse_pair};

#[derive(Debug, Subcommand)]
pub enum FnCommand {
    Deploy(Box<DeployArgs>),
    /// List the deployed functions: kind, active version, status,
    /// attachment, calls and failed calls.
    List(ListArgs),
    /// Show a function: its manifest, stored versions, metrics (errors by
    /// kind, latency, fuel, instances) and, for transforms and handlers,
    /// position and lag per partition.
    Describe(DescribeArgs),
    Logs(LogsArgs),
    /// Stop a function and forget it: every version, its positions and
    /// its logs. What it already wrote stays.
    Delete(NameArgs),
    /// Make an earlier version active again (its component and manifest).
    ///
    /// Example: sluice fn rollback redact --to 2
    Rollback(RollbackArgs),
}

/// Deploy a WebAssembly component as a function, or as a new version of one
///
/// The function attaches one of three ways:
///   filter     --filter-group GROUP
///              decides which messages the group's members receive
///   transform  --transform-input TOPIC --output TOPIC [--output TOPIC ...]
///              [--start WHERE]
///              writes what it makes of each input to the outputs (the first
///              is its default output), exactly once
///   handler    --handler-group GROUP --topic TOPIC [--concurrency N]
///              [--max-attempts N] [--retry LADDER] [--ordered] [--tags EXPR]
///              [--ack-timeout DURATION] [--start WHERE]
///              consumes TOPIC as a member of GROUP
///
/// --manifest FILE.toml gives the same settings in a file (see docs/cli.md):
///   name = "redact"
///   component = "pii_redact.wasm"        # relative to the manifest
///   allowed_topics = ["audit"]
///   [attach]
///   kind = "transform"
///   input = "raw"
///   outputs = ["clean", "rejects"]
///   start = "earliest"
///   [config]
///   fields = "email,phone"
///   [limits]
///   timeout = "500ms"
///   memory = "64MiB"
/// Flags override the manifest: a scalar flag replaces its field, each
/// --config KEY=VALUE replaces that key, --output and --allow-topic replace
/// the whole list, and an attach flag of another kind replaces [attach].
///
/// DURATION: 250ms, 1s, 1m30s, ...   SIZE: bytes, or N KiB/MiB/GiB.
/// WHERE: earliest, latest, time:<ms since the epoch> or ago:<N>(s|m|h|d).
/// Limits not given take the broker's defaults.
///
/// Prints the version made active, the component's digest and the version
/// it replaced.
///
/// Examples:
///   sluice fn deploy vip_filter.wasm --name vip --filter-group billing --config tag=vip
///   sluice fn deploy redact.wasm --name redact --transform-input raw --output clean --start earliest
///   sluice fn deploy mailer.wasm --name mailer --handler-group mail --topic orders --retry 1s,5s,30s
///   sluice fn deploy --manifest functions/redact.toml --timeout 2s
#[derive(Debug, Args)]
#[command(
    verbatim_doc_comment,
    group(ArgGroup::new("attach_kind").args(["filter_group", "transform_input", "handler_group"]))
)]
pub struct DeployArgs {
    /// The component to deploy [default: the manifest's `component`]
    #[arg(value_name = "COMPONENT.wasm")]
    pub component: Option<PathBuf>,
    /// A TOML manifest with the function's settings; flags override it.
    #[arg(long, value_name = "FILE.toml")]
    pub manifest: Option<PathBuf>,
    /// Name of the function [default: the manifest's `name`]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Attach as a filter on this consumer group.
    #[arg(long, value_name = "GROUP", help_heading = "Filter")]
    pub filter_group: Option<String>,

    /// Attach as a transform reading this topic.
    #[arg(long, value_name = "TOPIC", help_heading = "Transform")]
    pub transform_input: Option<String>,
    /// A transform's output topic (repeatable; the first is the default).
    #[arg(long = "output", value_name = "TOPIC", help_heading = "Transform")]
    pub outputs: Vec<String>,
    /// Where a transform or handler starts the first time [default: latest]
    #[arg(
        long,
        value_name = "WHERE",
        value_parser = parse_start,
        help_heading = "Transform"
    )]
    pub start: Option<OffsetSpec>,

    /// Attach as a handler: a member of this consumer group.
    #[arg(long, value_name = "GROUP", help_heading = "Handler")]
    pub handler_group: Option<String>,
    /// The topic a handler's group reads.
    #[arg(long, value_name = "TOPIC", help_heading = "Handler")]
    pub topic: Option<String>,
    /// Batches a handler has in flight at once [default: the broker's]
    #[arg(long, value_name = "N", help_heading = "Handler")]
    pub concurrency: Option<u32>,
    /// Deliveries before a failing message is dead-lettered [default: 16]
    #[arg(long, value_name = "N", help_heading = "Handler")]
    pub max_attempts: Option<u16>,
    /// Retry delays, e.g. 1s,5s,30s (the last repeats) [default: the broker's]
    #[arg(
        long = "retry",
        value_name = "LADDER",
        value_parser = parse_ladder,
        help_heading = "Handler"
    )]
    pub retry: Option<Ladder>,
    /// Per-key order (--ordered=false turns off a manifest's).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        help_heading = "Handler"
    )]
    pub ordered: Option<bool>,
    /// Tag filter expression of the handler's group, e.g. 'a AND NOT b'.
    #[arg(long, value_name = "EXPR", help_heading = "Handler")]
    pub tags: Option<String>,
    /// A batch not answered within this is delivered again [default: 30s]
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_duration,
        help_heading = "Handler"
    )]
    pub ack_timeout: Option<Duration>,

    /// A config entry the function reads (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// A topic the function may emit or schedule to (repeatable)
    /// [default: any topic]
    #[arg(long = "allow-topic", value_name = "TOPIC")]
    pub allowed_topics: Vec<String>,
    /// Time limit of one call.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Memory limit of an instance, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Fuel one call may burn.
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Most messages per call.
    #[arg(long, value_name = "N")]
    pub max_batch: Option<u32>,
    /// Log lines per second before lines are dropped.
    #[arg(long, value_name = "N")]
    pub log_rate: Option<u32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A parsed `--retry` ladder, in milliseconds (a newtype so clap takes the
/// whole list as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(pub Vec<u32>);

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON (an array of objects).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Name of the function.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Name of the function.
    pub name: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Print a function's log lines
///
/// One line each: <time> <level> v<version> <message>, oldest first, from
/// the oldest line the broker keeps (or after --after SEQ). Without
/// --follow the command stops once it has caught up; with --follow it polls
/// for new lines every 500 ms until Ctrl-C. Lines dropped by the function's
/// log rate are counted on stderr.
///
/// Examples:
///   sluice fn logs redact
///   sluice fn logs redact --follow
///   sluice fn logs redact --after 1200 --limit 50 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LogsArgs {
    /// Name of the function.
    pub name: String,
    /// Keep polling for new lines until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines with a sequence number above this.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after: u64,
    /// Stop after this many lines.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<u64>,
    /// Print one JSON object per line: {"seq", "time" (ms since the
    /// epoch), "level", "version", "message"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Name of the function.
    pub name: String,
    /// The version to make active [default: the one before the active one]
    #[arg(long, value_name = "VERSION")]
    pub to: Option<u32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(cmd: FnCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            FnCommand::Deploy(args) => deploy(*args).await,
            FnCommand::List(args) => list(args).await,
            FnCommand::Describe(args) => describe(args).await,
            FnCommand::Logs(args) => logs(args).await,
            FnCommand::Delete(args) => {
                args.connect
                    .with_client(async |c| {
                        c.delete_function(&args.name)
                            .await
                            .with_context(|| format!("cannot delete function {}", args.name))
                    })
                    .await?;
                println!("deleted function {}", args.name);
                Ok(())
            }
            FnCommand::Rollback(args) => {
                let r = args
                    .connect
                    .with_client(async |c| {
                        c.rollback_function(&args.name, args.to)
                            .await
                            .with_context(|| format!("cannot roll back function {}", args.name))
                    })
                    .await?;
                println!("rolled back {} to {}", args.name, version_line(&r));
                Ok(())
            }
        }
    })
}

// ---------------------------------------------------------------- value parsers

/// Parses `--start`: earliest, latest, time:<ms> or ago:<N><U> (an offset
/// means nothing to a function that reads several partitions).
pub fn parse_start(s: &str) -> Result<OffsetSpec, String> {
    match parse_from(s)? {
        StartAt::Offset(_) => Err(format!(
            "a function starts at earliest, latest, time:<ms> or ago:<N><U>, not at an offset ({s:?})"
        )),
        at => Ok(match at.seek_to() {
            SeekTo::Earliest => OffsetSpec::Earliest,
            SeekTo::Latest => OffsetSpec::Latest,
            SeekTo::Timestamp(t) => OffsetSpec::Timestamp(t),
            SeekTo::Offset(_) => unreachable!("offsets are refused above"),
        }),
    }
}

/// Parses a SIZE: a number of bytes, optionally followed by `B`, `KiB`,
/// `MiB` or `GiB` (any case, space allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || format!("expected a size like 65536, 512KiB, 64MiB or 1GiB, got {s:?}");
    let n: u64 = n.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "k" | "kb" | "m" | "mb" | "g" | "gb" => {
            return Err(format!(
                "{}: write KiB, MiB or GiB (sizes are powers of 1024)",
                bad()
            ));
        }
        _ => return Err(bad()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a retry ladder: durations separated by commas (`1s,5s,30s`).
pub fn parse_ladder(s: &str) -> Result<Ladder, String> {
    s.split(',')
        .map(|d| duration_ms(parse_duration(d.trim())?, "a retry delay"))
        .collect::<Result<Vec<_>, _>>()
        .map(Ladder)
}

/// `d` in milliseconds, refused when over `u32::MAX` ms (49 days).
fn duration_ms(d: Duration, what: &str) -> Result<u32, String> {
    u32::try_from(d.as_millis())
        .map_err(|_| format!("{what} of {} is too long", humantime::format_duration(d)))
}

// ---------------------------------------------------------------- the manifest file

/// A manifest file as written (see docs/cli.md): every field optional, so
/// flags can supply what the file leaves out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub name: Option<String>,
    /// The component, relative to the manifest's directory.
    pub component: Option<PathBuf>,
    pub attach: Option<AttachFile>,
    /// Values may be strings, numbers or booleans; the function reads them
    /// as strings.
    #[serde(default)]
    pub config: toml::Table,
    #[serde(default)]
    pub limits: LimitsFile,
    pub allowed_topics: Option<Vec<String>>,
}

/// `[attach]`: `kind` and the fields of that kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachFile {
    pub kind: String,
    pub group: Option<String>,
    pub input: Option<String>,
    pub outputs: Option<Vec<String>>,
    pub start: Option<String>,
    pub topic: Option<String>,
    pub concurrency: Option<u32>,
    pub max_attempts: Option<u16>,
    /// `["1s", "5s"]` or `"1s,5s"`.
    pub retry: Option<toml::Value>,
    pub ordered: Option<bool>,
    pub tags: Option<String>,
    /// A duration string, or an integer of milliseconds.
    pub ack_timeout: Option<toml::Value>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// A duration string, or an integer of milliseconds.
    pub timeout: Option<toml::Value>,
    /// A size string (`"64MiB"`), or an integer of bytes.
    pub memory: Option<toml::Value>,
    pub fuel: Option<u64>,
    pub max_batch: Option<u32>,
    pub log_rate: Option<u32>,
}

/// Parses a manifest's text.
pub fn parse_manifest(text: &str) -> anyhow::Result<ManifestFile> {
    Ok(toml::from_str(text)?)
}

fn read_manifest(path: &Path) -> anyhow::Result<ManifestFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    parse_manifest(&text).with_context(|| format!("invalid manifest {}", path.display()))
}

/// A duration field: `"1s"`, or an integer of milliseconds.
fn toml_duration(v: &toml::Value, key: &str) -> anyhow::Result<Duration> {
    match v {
        toml::Value::String(s) => parse_duration(s).map_err(|e| anyhow::anyhow!("{key}: {e}")),
        toml::Value::Integer(ms) if *ms >= 0 => Ok(Duration::from_millis(*ms as u64)),
        other => bail!(
            "{key} must be a duration like \"500ms\" or \"2s\" (or milliseconds), not {other}"
        ),
    }
}

/// A size field: `"64MiB"`, or an integer of bytes.
fn toml_size(v: &toml::Value, key: &str) -> anyhow::Result<u64> {
    match v {
        toml::Value::String(s) => parse_size(s).map_err(|e| anyhow::anyhow!("{key}: {e}")),
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        other => bail!("{key} must be a size like \"64MiB\" (or bytes), not {other}"),
    }
}

/// A retry ladder field: `["1s", "5s"]` (or milliseconds) or `"1s,5s"`.
fn toml_ladder(v: &toml::Value) -> anyhow::Result<Vec<u32>> {
    match v {
        toml::Value::String(s) => Ok(parse_ladder(s)
            .map_err(|e| anyhow::anyhow!("retry: {e}"))?
            .0),
        toml::Value::Array(items) => items
            .iter()
            .map(|d| {
                let d = toml_duration(d, "retry")?;
                duration_ms(d, "a retry delay").map_err(anyhow::Error::msg)
            })
            .collect(),
        other => bail!("retry must be a list of durations like [\"1s\", \"5s\"], not {other}"),
    }
}

/// A `[config]` value as the function reads it.
fn config_value(key: &str, v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            bail!("config.{key} must be a string, number or boolean")
        }
    })
}

// ---------------------------------------------------------------- merging

/// The attachment as far as the file and the flags say, before it is
/// checked: each field set or not.
#[derive(Debug, Default, Clone, PartialEq)]
struct AttachFields {
    kind: Option<FunctionKind>,
    group: Option<String>,
    input: Option<String>,
    outputs: Option<Vec<String>>,
    start: Option<OffsetSpec>,
    topic: Option<String>,
    concurrency: Option<u32>,
    max_attempts: Option<u16>,
    retry_ms: Option<Vec<u32>>,
    ordered: Option<bool>,
    tags: Option<String>,
    ack_timeout_ms: Option<u32>,
}

impl AttachFields {
    fn from_file(f: &AttachFile) -> anyhow::Result<Self> {
        Ok(AttachFields {
            kind: Some(f.kind.parse().context("attach.kind")?),
            group: f.group.clone(),
            input: f.input.clone(),
            outputs: f.outputs.clone(),
            start: f
                .start
                .as_deref()
                .map(parse_start)
                .transpose()
                .map_err(|e| anyhow::anyhow!("attach.start: {e}"))?,
            topic: f.topic.clone(),
            concurrency: f.concurrency,
            max_attempts: f.max_attempts,
            retry_ms: f.retry.as_ref().map(toml_ladder).transpose()?,
            ordered: f.ordered,
            tags: f.tags.clone(),
            ack_timeout_ms: f
                .ack_timeout
                .as_ref()
                .map(|v| {
                    let d = toml_duration(v, "attach.ack_timeout")?;
                    duration_ms(d, "attach.ack_timeout").map_err(anyhow::Error::msg)
                })
                .transpose()?,
        })
    }

    fn from_flags(a: &DeployArgs) -> anyhow::Result<Self> {
        let (kind, group, input) = match (&a.filter_group, &a.transform_input, &a.handler_group) {
            (Some(g), _, _) => (Some(FunctionKind::Filter), Some(g.clone()), None),
            (_, Some(i), _) => (Some(FunctionKind::Transform), None, Some(i.clone())),
            (_, _, Some(g)) => (Some(FunctionKind::Handler), Some(g.clone()), None),
            _ => (None, None, None),
        };
        Ok(AttachFields {
            kind,
            group,
            input,
            outputs: (!a.outputs.is_empty()).then(|| a.outputs.clone()),
            start: a.start,
            topic: a.topic.clone(),
            concurrency: a.concurrency,
            max_attempts: a.max_attempts,
            retry_ms: a.retry.as_ref().map(|l| l.0.clone()),
            ordered: a.ordered,
            tags: a.tags.clone(),
            ack_timeout_ms: a
                .ack_timeout
                .map(|d| duration_ms(d, "--ack-timeout"))
                .transpose()
                .map_err(anyhow::Error::msg)?,
        })
    }

    /// `over`'s fields replace these; an `over` of another kind replaces
    /// them all (a filter's group is not a handler's).
    fn overlay(self, over: AttachFields) -> AttachFields {
        if over.kind.is_some() && over.kind != self.kind {
            return over;
        }
        AttachFields {
            kind: over.kind.or(self.kind),
            group: over.group.or(self.group),
            input: over.input.or(self.input),
            outputs: over.outputs.or(self.outputs),
            start: over.start.or(self.start),
            topic: over.topic.or(self.topic),
            concurrency: over.concurrency.or(self.concurrency),
            max_attempts: over.max_attempts.or(self.max_attempts),
            retry_ms: over.retry_ms.or(self.retry_ms),
            ordered: over.ordered.or(self.ordered),
            tags: over.tags.or(self.tags),
            ack_timeout_ms: over.ack_timeout_ms.or(self.ack_timeout_ms),
        }
    }

    /// The attachment, or what is missing or out of place.
    fn build(self) -> anyhow::Result<Attach> {
        let Some(kind) = self.kind else {
            bail!(
                "say where the function attaches: --filter-group GROUP, --transform-input TOPIC \
                 or --handler-group GROUP (or [attach] in the manifest)"
            );
        };
        use FunctionKind::{Handler as H, Transform as T};
        // (is set, flag, manifest key, the kinds it belongs to)
        let fields: [(bool, &str, &str, &[FunctionKind]); 10] = [
            (self.input.is_some(), "--transform-input", "input", &[T]),
            (self.outputs.is_some(), "--output", "outputs", &[T]),
            (self.start.is_some(), "--start", "start", &[T, H]),
            (self.topic.is_some(), "--topic", "topic", &[H]),
            (
                self.concurrency.is_some(),
                "--concurrency",
                "concurrency",
                &[H],
            ),
            (
                self.max_attempts.is_some(),
                "--max-attempts",
                "max_attempts",
                &[H],
            ),
            (self.retry_ms.is_some(), "--retry", "retry", &[H]),
            (self.ordered.is_some(), "--ordered", "ordered", &[H]),
            (self.tags.is_some(), "--tags", "tags", &[H]),
            (
                self.ack_timeout_ms.is_some(),
                "--ack-timeout",
                "ack_timeout",
                &[H],
            ),
        ];
        for (set, flag, key, kinds) in fields {
            if set && !kinds.contains(&kind) {
                let for_kinds: Vec<String> = kinds.iter().map(|k| format!("{k}s")).collect();
                bail!(
                    "{flag} (manifest attach.{key}) is for {}, not for a {kind}",
                    for_kinds.join(" and ")
                );
            }
        }
        let need = |v: Option<String>, flag: &str, key: &str| match v {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(anyhow::anyhow!(
                "a {kind} needs {flag} (or attach.{key} in the manifest)"
            )),
        };
        Ok(match kind {
            FunctionKind::Filter => Attach::Filter {
                group: need(self.group, "--filter-group GROUP", "group")?,
            },
            FunctionKind::Transform => {
                let input = need(self.input, "--transform-input TOPIC", "input")?;
                let outputs = self.outputs.unwrap_or_default();
                if outputs.is_empty() {
                    bail!("a transform needs at least one --output TOPIC (or attach.outputs)");
                }
                Attach::Transform {
                    input,
                    outputs,
                    start: self.start.unwrap_or(OffsetSpec::Latest),
                }
            }
            FunctionKind::Handler => {
                let group = need(self.group, "--handler-group GROUP", "group")?;
                let defaults = GroupSettings::default();
                Attach::Handler {
                    group,
                    settings: GroupSettings {
                        topic: need(self.topic, "--topic TOPIC", "topic")?,
                        ordered: self.ordered.unwrap_or(defaults.ordered),
                        tag_filter: self.tags.unwrap_or_default(),
                        start: self.start.unwrap_or(defaults.start),
                        ack_timeout_ms: self.ack_timeout_ms.unwrap_or(defaults.ack_timeout_ms),
                        max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
                        retry_ladder_ms: self.retry_ms.unwrap_or_default(),
                        ..defaults
                    },
                    concurrency: self.concurrency.unwrap_or(0),
                }
            }
        })
    }
}

/// What a deploy sends: the manifest, and where the component is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    pub manifest: FunctionManifest,
    pub component: PathBuf,
}

/// Merges the manifest file (if any; `manifest_path` resolves its relative
/// component path) with the flags, the flags winning.
pub fn plan_deploy(
    args: &DeployArgs,
    file: Option<&ManifestFile>,
    manifest_path: Option<&Path>,
) -> anyhow::Result<DeployPlan> {
    let empty = ManifestFile::default();
    let file = file.unwrap_or(&empty);
    let name = match args.name.as_ref().or(file.name.as_ref()) {
        Some(n) if !n.is_empty() => n.clone(),
        _ => bail!("give the function a name: --name NAME (or name in the manifest)"),
    };
    let component = match (&args.component, &file.component) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => match manifest_path.and_then(Path::parent) {
            Some(dir) if c.is_relative() => dir.join(c),
            _ => c.clone(),
        },
        (None, None) => bail!(
            "give the component: sluice fn deploy COMPONENT.wasm ... (or component in the manifest)"
        ),
    };
    let from_file = match &file.attach {
        Some(a) => AttachFields::from_file(a)?,
        None => AttachFields::default(),
    };
    let attach = from_file.overlay(AttachFields::from_flags(args)?).build()?;
    let mut manifest = FunctionManifest::new(name, attach);

    let mut file_config = file
        .config
        .iter()
        .map(|(k, v)| Ok((k.clone(), config_value(k, v)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    file_config.sort();
    for (k, v) in file_config {
        manifest = manifest.config(k, v);
    }
    for pair in &args.config {
        let (k, v) = parse_pair(pair, "--config")?;
        manifest = manifest.config(k, v);
    }

    manifest.allowed_topics = if !args.allowed_topics.is_empty() {
        args.allowed_topics.clone()
    } else {
        file.allowed_topics.clone().unwrap_or_default()
    };

    let l = &file.limits;
    let timeout = match args.timeout {
        Some(t) => Some(t),
        None => l
            .timeout
            .as_ref()
            .map(|v| toml_duration(v, "limits.timeout"))
            .transpose()?,
    };
    if let Some(t) = timeout {
        manifest = manifest.timeout(t);
    }
    let memory = match args.memory {
        Some(m) => Some(m),
        None => l
            .memory
            .as_ref()
            .map(|v| toml_size(v, "limits.memory"))
            .transpose()?,
    };
    manifest.limits.memory_bytes = memory.unwrap_or(0);
    manifest.limits.fuel_per_call = args.fuel.or(l.fuel).unwrap_or(0);
    manifest.limits.max_batch_messages = args.max_batch.or(l.max_batch).unwrap_or(0);
    manifest.limits.log_lines_per_sec = args.log_rate.or(l.log_rate).unwrap_or(0);
    Ok(DeployPlan {
        manifest,
        component,
    })
}

// ---------------------------------------------------------------- commands

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let file = args.manifest.as_deref().map(read_manifest).transpose()?;
    let plan = plan_deploy(&args, file.as_ref(), args.manifest.as_deref())?;
    let bytes = std::fs::read(&plan.component)
        .with_context(|| format!("cannot read the component {}", plan.component.display()))?;
    let name = plan.manifest.name.clone();
    let r = args
        .connect
        .with_client(async |c| {
            c.deploy_function(plan.manifest, bytes)
                .await
                .with_context(|| format!("cannot deploy function {name}"))
        })
        .await?;
    println!("deployed {name} {}", version_line(&r));
    Ok(())
}

/// `version 3 (0123456789ab), replacing version 2`; without the last part
/// for a new function.
fn version_line(r: &DeployFunctionResponse) -> String {
    let mut line = format!("version {} ({})", r.version, short_digest(&r.digest));
    if r.previous_version != 0 {
        line.push_str(&format!(", replacing version {}", r.previous_version));
    }
    line
}

/// The first 12 characters of a digest, after any `algorithm:` prefix.
fn short_digest(digest: &str) -> &str {
    let hex = digest.rsplit_once(':').map_or(digest, |(_, h)| h);
    match hex.char_indices().nth(12) {
        Some((i, _)) => &hex[..i],
        None => hex,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut functions = args
        .connect
        .with_client(async |c| {
            c.list_functions()
                .await
                .context("cannot list the functions")
        })
        .await?;
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    if args.json {
        println!("{}", list_json(&functions));
    } else {
        print!("{}", list_text(functions));
    }
    Ok(())
}

/// The table `sluice fn list` prints.
fn list_text(functions: Vec<FunctionSummary>) -> String {
    if functions.is_empty() {
        return "no functions\n".into();
    }
    let rows = functions
        .into_iter()
        .map(|f| {
            vec![
                f.name,
                f.kind.to_string(),
                f.version.to_string(),
                f.status,
                f.attach,
                f.invocations.to_string(),
                f.errors.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "VERSION",
            "STATUS",
            "ATTACH",
            "INVOCATIONS",
            "ERRORS",
        ],
        rows,
    )
}

fn list_json(functions: &[FunctionSummary]) -> String {
    let items: Vec<Json> = functions
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": f.kind.as_str(),
                "version": f.version,
                "status": f.status,
                "attach": f.attach,
                "invocations": f.invocations,
                "errors": f.errors,
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("JSON values serialise")
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let d = args
        .connect
        .with_client(async |c| {
            c.describe_function(&args.name)
                .await
                .with_context(|| format!("cannot describe function {}", args.name))
        })
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&describe_json(&d)).expect("JSON values serialise")
        );
    } else {
        print!("{}", describe_text(&d));
    }
    Ok(())
}

/// `earliest`, `latest` or `time:<ms>`, as `--start` takes it.
fn start_str(s: OffsetSpec) -> String {
    match s {
        OffsetSpec::Earliest => "earliest".into(),
        OffsetSpec::Latest => "latest".into(),
        OffsetSpec::Timestamp(t) => format!("time:{t}"),
    }
}

/// A limit, or `default` for 0.
fn or_default(v: u64, show: impl Fn(u64) -> String) -> String {
    if v == 0 { "default".into() } else { show(v) }
}

/// Microseconds as people read them: `850µs`, `12.5ms`, `3.20s`.
fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// The text `sluice fn describe` prints.
pub fn describe_text(d: &FunctionDescription) -> String {
    let m = &d.manifest;
    let mut out = format!(
        "function {} ({}), version {} ({}), status {}\n",
        m.name,
        m.kind(),
        d.version,
        short_digest(&d.digest),
        d.status
    );
    out.push_str(&format!("attach: {}\n", m.attach.describe()));
    match &m.attach {
        Attach::Filter { .. } => {}
        Attach::Transform { start, .. } => {
            out.push_str(&format!("  starts at {}\n", start_str(*start)));
        }
        Attach::Handler {
            settings: s,
            concurrency,
            ..
        } => {
            let ladder: Vec<String> = s
                .retry_ladder_ms
                .iter()
                .map(|ms| humantime::format_duration(Duration::from_millis(*ms as u64)).to_string())
                .collect();
            out.push_str(&format!(
                "  {}tags {}, starts at {}, ack timeout {} ms, max attempts {}, retry {}, concurrency {}\n",
                if s.ordered { "ordered, " } else { "" },
                if s.tag_filter.is_empty() {
                    "*".to_owned()
                } else {
                    format!("'{}'", s.tag_filter)
                },
                start_str(s.start),
                s.ack_timeout_ms,
                s.max_attempts,
                if ladder.is_empty() {
                    "default".to_owned()
                } else {
                    ladder.join(",")
                },
                or_default((*concurrency).into(), |n| n.to_string()),
            ));
        }
    }
    let config: Vec<String> = m.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&format!(
        "config: {}\n",
        if config.is_empty() {
            "none".to_owned()
        } else {
            config.join(", ")
        }
    ));
    out.push_str(&format!(
        "allowed topics: {}\n",
        if m.allowed_topics.is_empty() {
            "any".to_owned()
        } else {
            m.allowed_topics.join(", ")
        }
    ));
    let l = &m.limits;
    out.push_str(&format!(
        "limits: timeout {}, memory {}, fuel {}, max batch {}, log rate {}\n\n",
        or_default(l.timeout_ms.into(), |ms| format!("{ms} ms")),
        or_default(l.memory_bytes, human_bytes),
        or_default(l.fuel_per_call, |n| n.to_string()),
        or_default(l.max_batch_messages.into(), |n| n.to_string()),
        or_default(l.log_lines_per_sec.into(), |n| format!("{n}/s")),
    ));

    let rows = d
        .versions
        .iter()
        .map(|v| {
            let mut version = v.version.to_string();
            if v.version == d.version {
                version.push_str(" (active)");
            }
            vec![
                version,
                short_digest(&v.digest).to_owned(),
                human_bytes(v.size),
                rfc3339(v.deployed_at_ms),
            ]
        })
        .collect();
    out.push_str(&table(&["VERSION", "DIGEST", "SIZE", "DEPLOYED"], rows));
    out.push('\n');

    let mt = &d.metrics;
    let mut errors: Vec<&(String, u64)> = mt.errors.iter().collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let by_kind: Vec<String> = errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out.push_str(&format!(
        "invocations {}, messages {}, errors {}{}\n",
        mt.invocations,
        mt.messages,
        mt.total_errors(),
        if by_kind.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_kind.join(", "))
        }
    ));
    out.push_str(&format!(
        "latency p50 {}, p99 {}, max {}; busy {}; fuel {}\n",
        micros(mt.latency_p50_us),
        micros(mt.latency_p99_us),
        micros(mt.latency_max_us),
        micros(mt.busy_us),
        mt.fuel
    ));
    out.push_str(&format!(
        "instances created {}, recycled {}; log lines {}, dropped {}\n",
        mt.instances_created, mt.instances_recycled, mt.log_lines, mt.log_dropped
    ));
    if !d.positions.is_empty() {
        out.push('\n');
        let rows = d
            .positions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.position.to_string(),
                    p.high_watermark.to_string(),
                    p.lag().to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["TOPIC", "PARTITION", "POSITION", "HIGH-WATERMARK", "LAG"],
            rows,
        ));
        out.push_str(&format!("total lag {}\n", d.total_lag()));
    }
    out
}

fn attach_json(a: &Attach) -> Json {
    match a {
        Attach::Filter { group } => json!({ "kind": "filter", "group": group }),
        Attach::Transform {
            input,
            outputs,
            start,
        } => json!({
            "kind": "transform",
            "input": input,
            "outputs": outputs,
            "start": start_str(*start),
        }),
        Attach::Handler {
            group,
            settings: s,
            concurrency,
        } => json!({
            "kind": "handler",
            "group": group,
            "topic": s.topic,
            "mode": s.mode.to_string(),
            "ordered": s.ordered,
            "tags": s.tag_filter,
            "start": start_str(s.start),
            "ack_timeout_ms": s.ack_timeout_ms,
            "max_attempts": s.max_attempts,
            "retry_ms": s.retry_ladder_ms,
            "max_in_flight": s.max_in_flight,
            "concurrency": concurrency,
        }),
    }
}

/// What `sluice fn describe --json` prints.
fn describe_json(d: &FunctionDescription) -> Json {
    let m = &d.manifest;
    let l = &m.limits;
    let mt = &d.metrics;
    let config: serde_json::Map<String, Json> = m
        .config
        .iter()
        .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
        .collect();
    let errors: serde_json::Map<String, Json> = mt
        .errors
        .iter()
        .map(|(k, n)| (k.clone(), Json::from(*n)))
        .collect();
    json!({
        "name": m.name,
        "kind": m.kind().as_str(),
        "version": d.version,
        "digest": d.digest,
        "status": d.status,
        "attach": attach_json(&m.attach),
        "config": config,
        "allowed_topics": m.allowed_topics,
        "limits": {
            "timeout_ms": l.timeout_ms,
            "memory_bytes": l.memory_bytes,
            "fuel_per_call": l.fuel_per_call,
            "max_batch_messages": l.max_batch_messages,
            "log_lines_per_sec": l.log_lines_per_sec,
        },
        "versions": d.versions.iter().map(|v| json!({
            "version": v.version,
            "digest": v.digest,
            "size": v.size,
            "deployed_at_ms": v.deployed_at_ms,
        })).collect::<Vec<_>>(),
        "metrics": {
            "invocations": mt.invocations,
            "messages": mt.messages,
            "errors": errors,
            "latency_p50_us": mt.latency_p50_us,
            "latency_p99_us": mt.latency_p99_us,
            "latency_max_us": mt.latency_max_us,
            "fuel": mt.fuel,
            "busy_us": mt.busy_us,
            "instances_created": mt.instances_created,
            "instances_recycled": mt.instances_recycled,
            "log_lines": mt.log_lines,
            "log_dropped": mt.log_dropped,
        },
        "positions": d.positions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "position": p.position,
            "high_watermark": p.high_watermark,
            "lag": p.lag(),
        })).collect::<Vec<_>>(),
    })
}

/// Lines asked for per logs request.
const LOG_PAGE: u64 = 1000;
/// How often `--follow` asks for new lines.
const LOG_POLL: Duration = Duration::from_millis(500);

async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    args.connect
        .with_client(async |c| print_logs(c, &args).await)
        .await
}

/// Pages through the log (and with --follow keeps polling) until caught up,
/// the limit, Ctrl-C, or a closed stdout.
async fn print_logs(client: &Client, args: &LogsArgs) -> anyhow::Result<()> {
    let mut after = args.after;
    let mut printed = 0u64;
    let mut dropped: Option<u64> = None;
    loop {
        let want = match args.limit {
            Some(limit) if printed >= limit => return Ok(()),
            Some(limit) => (limit - printed).min(LOG_PAGE),
            None => LOG_PAGE,
        };
        let page = client
            .function_logs(&args.name, after, want as u32)
            .await
            .with_context(|| format!("cannot read the logs of function {}", args.name))?;
        match dropped {
            None if page.dropped > 0 => eprintln!(
                "({} log lines of {} dropped by its log rate so far)",
                page.dropped, args.name
            ),
            Some(before) if page.dropped > before => {
                eprintln!("({} log lines dropped)", page.dropped - before)
            }
            _ => {}
        }
        dropped = Some(page.dropped);
        let mut text = String::new();
        let mut new = 0u64;
        for line in page.lines.iter().filter(|l| l.seq > after) {
            if args.limit.is_some_and(|limit| printed + new >= limit) {
                break;
            }
            text.push_str(&if args.json {
                log_json(line)
            } else {
                log_text(line)
            });
            text.push('\n');
            new += 1;
        }
        if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
            return if is_broken_pipe(&e) {
                Ok(())
            } else {
                Err(e.into())
            };
        }
        printed += new;
        after = page.next_after(after);
        if new == 0 {
            if !args.follow {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(LOG_POLL) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

/// `2026-03-01T09:00:00.250Z info  v3 message`.
fn log_text(l: &FunctionLogLine) -> String {
    format!(
        "{} {:5} v{} {}",
        rfc3339(l.at_ms),
        l.level,
        l.version,
        l.message
    )
}

fn log_json(l: &FunctionLogLine) -> String {
    json!({
        "seq": l.seq,
        "time": l.at_ms,
        "level": l.level.as_str(),
        "version": l.version,
        "message": l.message,
    })
    .to_string()
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the millisecond.
fn rfc3339(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sluice_client::{
        FunctionLimitsSpec, FunctionMetrics, FunctionPosition, FunctionVersion, LogLevel,
    };

    use super::*;

    /// `sluice fn <line>` as the binary parses it (words split at spaces).
    fn parse(line: &str) -> Result<FnCommand, clap::Error> {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: FnCommand,
        }
        Cli::try_parse_from(std::iter::once("fn").chain(line.split_whitespace())).map(|c| c.command)
    }

    /// Plans `sluice fn deploy <line>`, with a manifest's text as if read
    /// from /etc/fns/m.toml.
    fn plan(line: &str, toml: Option<&str>) -> anyhow::Result<DeployPlan> {
        let FnCommand::Deploy(args) = parse(&format!("deploy {line}")).unwrap() else {
            panic!("not a deploy");
        };
        let file = toml.map(|t| parse_manifest(t).unwrap());
        plan_deploy(&args, file.as_ref(), Some(Path::new("/etc/fns/m.toml")))
    }

    fn err(line: &str, toml: Option<&str>) -> String {
        format!("{:#}", plan(line, toml).unwrap_err())
    }

    #[test]
    fn flags_alone_describe_each_kind() {
        let p = plan(
            "vip.wasm --name vip --filter-group billing -c tag=vip --timeout 250ms --memory 32MiB",
            None,
        )
        .unwrap();
        assert_eq!(p.component, PathBuf::from("vip.wasm"));
        assert_eq!(
            p.manifest,
            FunctionManifest::filter("vip", "billing")
                .config("tag", "vip")
                .timeout(Duration::from_millis(250))
                .memory_bytes(32 << 20)
        );

        let p = plan(
            "r.wasm --name redact --transform-input raw --output clean --output rejects \
             --start earliest --allow-topic audit --fuel 1000 --max-batch 64 --log-rate 10",
            None,
        )
        .unwrap();
        assert_eq!(
            p.manifest,
            FunctionManifest::transform("redact", "raw", ["clean", "rejects"])
                .start(OffsetSpec::Earliest)
                .allow_topic("audit")
                .fuel_per_call(1000)
                .max_batch_messages(64)
                .log_lines_per_sec(10)
        );

        let p = plan(
            "m.wasm --name mailer --handler-group mail --topic orders --concurrency 4 \
             --max-attempts 5 --retry 1s,5s,1m --ordered --tags vip --ack-timeout 10s",
            None,
        )
        .unwrap();
        let settings = GroupSettings {
            topic: "orders".into(),
            ordered: true,
            tag_filter: "vip".into(),
            ack_timeout_ms: 10_000,
            max_attempts: 5,
            retry_ladder_ms: vec![1000, 5000, 60_000],
            ..GroupSettings::default()
        };
        assert_eq!(
            p.manifest,
            FunctionManifest::handler("mailer", "mail", settings).concurrency(4)
        );
    }

    const MANIFEST: &str = r#"
name = "redact"
component = "build/pii_redact.wasm"
allowed_topics = ["audit", "alerts"]

[attach]
kind = "transform"
input = "raw"
outputs = ["clean", "rejects"]
start = "earliest"

[config]
fields = "email,phone"
max_len = 64
strict = true

[limits]
timeout = "500ms"
memory = "64MiB"
fuel = 10000000
max_batch = 100
log_rate = 50
"#;

    #[test]
    fn a_manifest_file_describes_a_deploy() {
        let p = plan("", Some(MANIFEST)).unwrap();
        assert_eq!(p.component, PathBuf::from("/etc/fns/build/pii_redact.wasm"));
        assert_eq!(
            p.manifest,
            FunctionManifest {
                name: "redact".into(),
                attach: Attach::Transform {
                    input: "raw".into(),
                    outputs: vec!["clean".into(), "rejects".into()],
                    start: OffsetSpec::Earliest,
                },
                config: vec![
                    ("fields".into(), "email,phone".into()),
                    ("max_len".into(), "64".into()),
                    ("strict".into(), "true".into()),
                ],
                limits: FunctionLimitsSpec {
                    timeout_ms: 500,
                    memory_bytes: 64 << 20,
                    fuel_per_call: 10_000_000,
                    max_batch_messages: 100,
                    log_lines_per_sec: 50,
                },
                allowed_topics: vec!["audit".into(), "alerts".into()],
            }
        );
        // Absolute component paths stay as they are; integers are ms and bytes.
        let handler = r#"
name = "h"
component = "/opt/h.wasm"
[attach]
kind = "handler"
group = "g"
topic = "orders"
retry = ["1s", 5000]
ack_timeout = 2500
concurrency = 2
[limits]
timeout = 1500
memory = 1048576
"#;
        let p = plan("", Some(handler)).unwrap();
        assert_eq!(p.component, PathBuf::from("/opt/h.wasm"));
        assert_eq!(p.manifest.limits.timeout_ms, 1500);
        assert_eq!(p.manifest.limits.memory_bytes, 1 << 20);
        let Attach::Handler {
            settings,
            concurrency,
            ..
        } = &p.manifest.attach
        else {
            panic!("not a handler: {:?}", p.manifest.attach);
        };
        assert_eq!(settings.retry_ladder_ms, [1000, 5000]);
        assert_eq!(settings.ack_timeout_ms, 2500);
        assert_eq!(*concurrency, 2);
        // A ladder may also be one string.
        let p = plan("", Some(&handler.replace("[\"1s\", 5000]", "\"2s,3s\""))).unwrap();
        let Attach::Handler { settings, .. } = p.manifest.attach else {
            panic!("not a handler");
        };
        assert_eq!(settings.retry_ladder_ms, [2000, 3000]);
    }

    #[test]
    fn the_documented_manifests_parse() {
        let doc = include_str!("../../../../docs/cli.md");
        let section = &doc[doc.find("## `sluice fn`").expect("the fn section")..];
        let blocks: Vec<&str> = section
            .split("```toml\n")
            .skip(1)
            .map(|b| &b[..b.find("```").expect("a closed block")])
            .collect();
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            let p = plan("", Some(block)).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
            assert!(!p.manifest.name.is_empty());
        }
    }

    #[test]
    fn flags_override_the_manifest() {
        let p = plan(
            "other.wasm --name redact-v2 --output cleaner --config fields=email --config extra=1 \
             --allow-topic x --timeout 2s --fuel 5",
            Some(MANIFEST),
        )
        .unwrap();
        // Relative to the working directory, not the manifest.
        assert_eq!(p.component, PathBuf::from("other.wasm"));
        let m = p.manifest;
        assert_eq!(m.name, "redact-v2");
        // Same kind: fields merge, lists are replaced.
        assert_eq!(
            m.attach,
            Attach::Transform {
                input: "raw".into(),
                outputs: vec!["cleaner".into()],
                start: OffsetSpec::Earliest,
            }
        );
        // Config merges per key.
        assert_eq!(
            m.config,
            [
                ("fields".into(), "email".into()),
                ("max_len".into(), "64".into()),
                ("strict".into(), "true".into()),
                ("extra".into(), "1".into()),
            ]
        );
        assert_eq!(m.allowed_topics, ["x"]);
        assert_eq!(m.limits.timeout_ms, 2000);
        assert_eq!(m.limits.fuel_per_call, 5);
        assert_eq!(m.limits.memory_bytes, 64 << 20, "kept from the manifest");

        // An attach flag of another kind replaces [attach] entirely...
        let p = plan("--filter-group billing", Some(MANIFEST)).unwrap();
        let billing = Attach::Filter {
            group: "billing".into(),
        };
        assert_eq!(p.manifest.attach, billing);
        // ...and the manifest's transform fields do not leak into it.
        let e = err("--filter-group billing --output o", Some(MANIFEST));
        assert!(e.contains("--output"), "{e}");

        // The same kind's flag merges: a new input, the manifest's outputs.
        let p = plan("--transform-input raw2", Some(MANIFEST)).unwrap();
        assert!(matches!(
            &p.manifest.attach,
            Attach::Transform { input, outputs, .. } if input == "raw2" && outputs.len() == 2
        ));

        // --ordered=false turns off a manifest's ordered.
        let handler = "name = \"h\"\ncomponent = \"h.wasm\"\n[attach]\nkind = \"handler\"\n\
                       group = \"g\"\ntopic = \"t\"\nordered = true\n";
        let ordered = |line: &str| match plan(line, Some(handler)).unwrap().manifest.attach {
            Attach::Handler { settings, .. } => settings.ordered,
            other => panic!("not a handler: {other:?}"),
        };
        assert!(ordered(""));
        assert!(!ordered("--ordered=false"));
        assert!(ordered("--ordered"));
    }

    #[test]
    fn what_is_missing_or_misplaced_is_named() {
        let e = err("f.wasm --name f", None);
        assert!(e.contains("say where the function attaches"), "{e}");
        let e = err("f.wasm --filter-group g", None);
        assert!(e.contains("--name NAME"), "{e}");
        let e = err("--name f --filter-group g", None);
        assert!(e.contains("give the component"), "{e}");
        let e = err("f.wasm --name f --transform-input raw", None);
        assert!(e.contains("at least one --output"), "{e}");
        let e = err("f.wasm --name f --handler-group g", None);
        assert!(e.contains("a handler needs --topic TOPIC"), "{e}");
        let e = err("f.wasm --name f --filter-group g --topic t", None);
        assert_eq!(
            e,
            "--topic (manifest attach.topic) is for handlers, not for a filter"
        );
        let e = err("f.wasm --name f --filter-group g --start latest", None);
        assert!(e.contains("is for transforms and handlers"), "{e}");
        let e = err("f.wasm --name f --filter-group g -c novalue", None);
        assert!(e.contains("--config takes name=value"), "{e}");

        // Manifest mistakes.
        let bad_manifest = |text: &str| format!("{:#}", parse_manifest(text).unwrap_err());
        let e = bad_manifest("name = \"f\"\ncomponet = \"x.wasm\"\n");
        assert!(e.contains("unknown field `componet`"), "{e}");
        let e = bad_manifest("[limits]\nmemroy = 5\n");
        assert!(e.contains("memroy"), "{e}");
        let e = bad_manifest("[attach]\ngroup = \"g\"\n");
        assert!(e.contains("kind"), "{e}");
        let head = "name = \"f\"\ncomponent = \"f.wasm\"\n[attach]\n";
        let filter = format!("{head}kind = \"filter\"\ngroup = \"g\"\n");
        let e = err("", Some(&format!("{head}kind = \"map\"\n")));
        assert!(
            e.contains("attach.kind") && e.contains("filter, transform or handler"),
            "{e}"
        );
        let e = err("", Some(&format!("{filter}[limits]\nmemory = \"64MB\"\n")));
        assert!(
            e.contains("limits.memory") && e.contains("KiB, MiB or GiB"),
            "{e}"
        );
        let e = err("", Some(&format!("{filter}[limits]\ntimeout = -5\n")));
        assert!(e.contains("limits.timeout must be a duration"), "{e}");
        let e = err("", Some(&format!("{filter}[config]\nlist = [1]\n")));
        assert!(e.contains("config.list must be a string"), "{e}");
        let transform = format!(
            "{head}kind = \"transform\"\ninput = \"i\"\noutputs = [\"o\"]\nstart = \"offset:5\"\n"
        );
        let e = err("", Some(&transform));
        assert!(
            e.contains("attach.start") && e.contains("not at an offset"),
            "{e}"
        );
    }

    #[test]
    fn clap_parses_the_subcommands() {
        use clap::error::ErrorKind;
        let kind = |line: &str| parse(line).unwrap_err().kind();
        assert_eq!(
            kind("deploy f.wasm --filter-group g --handler-group h"),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind("deploy --memory lots"), ErrorKind::ValueValidation);
        assert_eq!(kind("deploy --retry 1s,soon"), ErrorKind::ValueValidation);
        assert_eq!(kind("deploy --start offset:3"), ErrorKind::ValueValidation);
        assert_eq!(kind("deploy --timeout 10"), ErrorKind::ValueValidation);

        let FnCommand::Logs(l) = parse("logs f -f --after 7 -n 3").unwrap() else {
            panic!("not logs");
        };
        assert!(l.follow && !l.json);
        assert_eq!((l.after, l.limit), (7, Some(3)));
        let FnCommand::Rollback(r) = parse("rollback f --to 2").unwrap() else {
            panic!("not a rollback");
        };
        assert_eq!((r.name.as_str(), r.to), ("f", Some(2)));
        let FnCommand::Rollback(r) = parse("rollback f").unwrap() else {
            panic!("not a rollback");
        };
        assert_eq!(r.to, None);
        assert!(matches!(parse("delete f").unwrap(), FnCommand::Delete(_)));
        assert!(matches!(
            parse("describe f --json").unwrap(),
            FnCommand::Describe(DescribeArgs { json: true, .. })
        ));
        assert!(matches!(
            parse("list --json").unwrap(),
            FnCommand::List(ListArgs { json: true, .. })
        ));
    }

    #[test]
    fn sizes_ladders_and_starts_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert!(parse_size("64MB").unwrap_err().contains("powers of 1024"));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );

        assert_eq!(
            parse_ladder("1s, 5s,250ms"),
            Ok(Ladder(vec![1000, 5000, 250]))
        );
        assert!(parse_ladder("1s,").is_err());
        assert!(parse_ladder("100d").unwrap_err().contains("too long"));

        assert_eq!(parse_start("earliest"), Ok(OffsetSpec::Earliest));
        assert_eq!(parse_start("latest"), Ok(OffsetSpec::Latest));
        assert_eq!(
            parse_start("time:1700000000000"),
            Ok(OffsetSpec::Timestamp(1_700_000_000_000))
        );
        assert!(matches!(parse_start("ago:1h"), Ok(OffsetSpec::Timestamp(t)) if t > 0));
        assert!(parse_start("offset:1").is_err());
    }

    #[test]
    fn deploy_and_rollback_lines() {
        let r = DeployFunctionResponse {
            version: 3,
            digest: "sha256:0123456789abcdef0123".into(),
            previous_version: 2,
        };
        assert_eq!(
            version_line(&r),
            "version 3 (0123456789ab), replacing version 2"
        );
        let r = DeployFunctionResponse {
            version: 1,
            digest: "abc".into(),
            previous_version: 0,
        };
        assert_eq!(version_line(&r), "version 1 (abc)");
    }

    fn description() -> FunctionDescription {
        let version = |version, digest: &str, size, deployed_at_ms| FunctionVersion {
            version,
            digest: digest.into(),
            size,
            deployed_at_ms,
        };
        FunctionDescription {
            manifest: FunctionManifest::transform("redact", "raw", ["clean", "rejects"])
                .start(OffsetSpec::Earliest)
                .config("fields", "email")
                .memory_bytes(64 << 20),
            version: 2,
            digest: "sha256:ffeeddccbbaa99887766".into(),
            status: "running".into(),
            versions: vec![
                version(1, "sha256:00112233445566778899", 2048, 1_772_355_600_000),
                version(2, "sha256:ffeeddccbbaa99887766", 1536, 1_772_355_660_000),
            ],
            metrics: FunctionMetrics {
                invocations: 10,
                messages: 1000,
                errors: vec![("trap".into(), 1), ("timeout".into(), 2)],
                latency_p50_us: 50,
                latency_p99_us: 1500,
                latency_max_us: 2_500_000,
                fuel: 0,
                busy_us: 9000,
                instances_created: 2,
                instances_recycled: 1,
                log_lines: 7,
                log_dropped: 0,
            },
            positions: vec![FunctionPosition {
                topic: "raw".into(),
                partition: 0,
                position: 40,
                high_watermark: 50,
            }],
        }
    }

    #[test]
    fn describe_shows_manifest_versions_metrics_and_lag() {
        let expected = "\
function redact (transform), version 2 (ffeeddccbbaa), status running
attach: transform raw -> clean, rejects
  starts at earliest
config: fields=email
allowed topics: any
limits: timeout default, memory 64.0 MiB, fuel default, max batch default, log rate default

VERSION     DIGEST        SIZE     DEPLOYED
1           001122334455  2.0 KiB  2026-03-01T09:00:00.000Z
2 (active)  ffeeddccbbaa  1.5 KiB  2026-03-01T09:01:00.000Z

invocations 10, messages 1000, errors 3 (timeout 2, trap 1)
latency p50 50µs, p99 1.5ms, max 2.50s; busy 9.0ms; fuel 0
instances created 2, recycled 1; log lines 7, dropped 0

TOPIC  PARTITION  POSITION  HIGH-WATERMARK  LAG
raw    0          40        50              10
total lag 10
";
        assert_eq!(describe_text(&description()), expected);

        let v = describe_json(&description());
        assert_eq!(v["kind"], "transform");
        assert_eq!(v["attach"]["outputs"], json!(["clean", "rejects"]));
        assert_eq!(v["attach"]["start"], "earliest");
        assert_eq!(v["config"]["fields"], "email");
        assert_eq!(v["metrics"]["errors"]["timeout"], 2);
        assert_eq!(v["positions"][0]["lag"], 10);
        assert_eq!(v["limits"]["memory_bytes"], 64 << 20);

        let mut h = description();
        let settings = GroupSettings {
            topic: "orders".into(),
            ordered: true,
            tag_filter: "vip".into(),
            retry_ladder_ms: vec![1000, 60_000],
            ..GroupSettings::default()
        };
        h.manifest = FunctionManifest::handler("mailer", "mail", settings);
        let text = describe_text(&h);
        let expected = "attach: handler on group mail (topic orders)\n  ordered, tags 'vip', \
                        starts at latest, ack timeout 30000 ms, max attempts 16, retry 1s,1m, \
                        concurrency default\n";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn lists_and_log_lines_render() {
        let f = FunctionSummary {
            name: "vip".into(),
            kind: FunctionKind::Filter,
            attach: "filter on group g".into(),
            version: 1,
            status: "running".into(),
            invocations: 5,
            errors: 0,
        };
        assert_eq!(list_text(vec![]), "no functions\n");
        assert_eq!(
            list_text(vec![f.clone()]),
            "\
NAME  KIND    VERSION  STATUS   ATTACH             INVOCATIONS  ERRORS
vip   filter  1        running  filter on group g  5            0
"
        );
        let v: Json = serde_json::from_str(&list_json(&[f])).unwrap();
        assert_eq!(v[0]["kind"], "filter");
        assert_eq!(v[0]["invocations"], 5);

        let line = FunctionLogLine {
            seq: 9,
            at_ms: 1_772_355_600_250,
            level: LogLevel::Info,
            version: 3,
            message: "hello".into(),
        };
        assert_eq!(log_text(&line), "2026-03-01T09:00:00.250Z info  v3 hello");
        let v: Json = serde_json::from_str(&log_json(&line)).unwrap();
        let expected = json!({
            "seq": 9,
            "time": 1_772_355_600_250i64,
            "level": "info",
            "version": 3,
            "message": "hello",
        });
        assert_eq!(v, expected);
    }
}
