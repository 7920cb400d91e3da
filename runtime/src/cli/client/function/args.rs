//! `sluice fn`'s command line: the subcommands' clap arguments and the
//! parsers of their values (SIZE, LADDER, WHERE), which the manifest
//! reads its strings with too.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use sluice_client::{OffsetSpec, SeekTo};

use crate::cli::client::ConnectArgs;
use crate::cli::client::consume::{StartAt, parse_from};
use crate::cli::client::delay::parse_duration;
use crate::cli::client::render;

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
        .map(|d| duration_ms(parse_duration(d.trim())?, "a retry delay").map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(Ladder)
}

/// A duration over what the protocol carries: `u32::MAX` ms (49 days).
#[derive(Debug, thiserror::Error)]
#[error("{what} of {shown} is too long", shown = render::duration(*duration))]
pub struct TooLong {
    /// The flag or manifest key, or what the value is (`a retry delay`).
    pub what: &'static str,
    pub duration: Duration,
}

/// `d` in milliseconds, refused when over `u32::MAX` ms (49 days).
pub(super) fn duration_ms(d: Duration, what: &'static str) -> Result<u32, TooLong> {
    u32::try_from(d.as_millis()).map_err(|_| TooLong { what, duration: d })
}

#[cfg(test)]
pub(super) mod tests {
    use clap::Parser;

    use super::*;

    /// `sluice fn <line>` as the binary parses it (words split at spaces).
    pub(in crate::cli::client::function) fn parse(line: &str) -> Result<FnCommand, clap::Error> {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: FnCommand,
        }
        Cli::try_parse_from(std::iter::once("fn").chain(line.split_whitespace())).map(|c| c.command)
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
}
