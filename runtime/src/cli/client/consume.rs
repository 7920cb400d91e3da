//! `sluice consume`: read a topic's messages and print them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_client::{Client, ConsumedMessage, ConsumerConfig, OffsetSpec, SeekTo};
use sluice_protocol::ops::OffsetQuery;

use super::{ConnectArgs, block_on, is_broken_pipe};

/// Read messages from a topic and print them, one line each
///
/// Without --follow the command stops once it has caught up (nothing more to
/// read); with --follow it waits for new messages until Ctrl-C.
///
/// Plain output, one line per message (key= and tags= only when present;
/// line breaks in keys and values print as \n and \r):
///   <partition>/<offset> key=<key> tags=<tag>,<tag> <value>
///
/// --json prints one JSON object per line:
///   {"topic", "partition", "offset", "timestamp" (ms since the epoch),
///    "key" (null when none), "value", "tags", "properties", "id"}
/// plus, on a group's retry copies and dead letters, "origin"
/// ("topic/partition/offset"), "failed_attempts" and "dead_reason".
/// A key or value that is not valid UTF-8 is printed with its invalid bytes
/// replaced, plus "key_hex" / "value_hex" holding the exact bytes in hex.
///
/// Examples:
///   sluice consume orders
///   sluice consume orders --partition 0 --from offset:100 --max 10
///   sluice consume orders --from ago:15m --follow --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Partition to read (repeatable, or comma-separated) [default: all]
    #[arg(
        long = "partition",
        short = 'p',
        value_name = "N",
        value_delimiter = ','
    )]
    pub partitions: Vec<u32>,
    /// Where to start in each partition:
    ///   earliest      the oldest message still stored
    ///   latest        only messages produced from now on
    ///   offset:<N>    offset N
    ///   time:<MS>     the first message at or after MS milliseconds since
    ///                 the Unix epoch
    ///   ago:<N><U>    the first message at or after N units ago, U one of
    ///                 s, m, h, d (e.g. ago:90s, ago:15m, ago:2h)
    #[arg(
        long,
        default_value = "earliest",
        value_name = "WHERE",
        value_parser = parse_from,
        verbatim_doc_comment
    )]
    pub from: StartAt,
    /// Keep waiting for new messages until Ctrl-C (or SIGTERM).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Stop after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    pub max: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A parsed `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    Time(i64),
    /// This long before the command starts.
    Ago(Duration),
}

impl StartAt {
    pub(crate) fn seek_to(self) -> SeekTo {
        match self {
            StartAt::Earliest => SeekTo::Earliest,
            StartAt::Latest => SeekTo::Latest,
            StartAt::Offset(o) => SeekTo::Offset(o),
            StartAt::Time(ms) => SeekTo::Timestamp(ms),
            StartAt::Ago(d) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                SeekTo::Timestamp(now.saturating_sub(d).as_millis() as i64)
            }
        }
    }
}

/// Parses `--from` (see its help).
pub fn parse_from(s: &str) -> Result<StartAt, String> {
    let bad_number = |what: &str, v: &str| format!("{what} needs a whole number, got {v:?}");
    match s {
        "earliest" => return Ok(StartAt::Earliest),
        "latest" => return Ok(StartAt::Latest),
        _ => {}
    }
    if let Some(v) = s.strip_prefix("offset:") {
        return v
            .parse()
            .map(StartAt::Offset)
            .map_err(|_| bad_number("offset:", v));
    }
    if let Some(v) = s.strip_prefix("time:") {
        return v
            .parse::<u64>()
            .ok()
            .and_then(|ms| i64::try_from(ms).ok())
            .map(StartAt::Time)
            .ok_or_else(|| bad_number("time: (milliseconds since the Unix epoch)", v));
    }
    if let Some(v) = s.strip_prefix("ago:") {
        let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (n, unit) = v.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("ago: needs a number and a unit (s, m, h, d), got {v:?}"))?;
        let secs = match unit {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            "d" => n.checked_mul(86400),
            _ => return Err(format!("ago: takes the units s, m, h or d, got {v:?}")),
        };
        return secs
            .map(|s| StartAt::Ago(Duration::from_secs(s)))
            .ok_or_else(|| format!("ago:{v} is too far back"));
    }
    let hint = if s.parse::<u64>().is_ok() {
        format!(" (for an offset write offset:{s}; for a time in ms, time:{s})")
    } else {
        String::new()
    };
    Err(format!(
        "expected earliest, latest, offset:<N>, time:<ms since epoch> or ago:<N>(s|m|h|d), got {s:?}{hint}"
    ))
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    block_on(consume(args))
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    args.connect
        .with_client(async |client| read(client, &args).await)
        .await
}

/// Reads and prints until caught up (or Ctrl-C with --follow).
async fn read(client: &Client, args: &ConsumeArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let mut consumer = client.consumer(ConsumerConfig {
        // Caught up is when a poll comes back empty: without --follow, do
        // not wait long for that.
        max_wait: Duration::from_millis(if args.follow { 1000 } else { 200 }),
        ..ConsumerConfig::default()
    });
    consumer
        .assign(topic, &args.partitions, args.from.seek_to())
        .await
        .with_context(|| format!("cannot read topic {topic}"))?;
    // Without --follow, stop at the end as it is now: read the high
    // watermarks once, and stop when every position has reached its own.
    let ends = if args.follow {
        None
    } else {
        let queries = consumer
            .positions()
            .into_iter()
            .map(|(topic, partition, _)| OffsetQuery {
                topic,
                partition,
                spec: OffsetSpec::Latest,
            })
            .collect();
        let results = client
            .list_offsets(queries)
            .await
            .with_context(|| format!("cannot read the offsets of topic {topic}"))?;
        Some(
            results
                .into_iter()
                .map(|r| (r.partition, r.offset))
                .collect::<Vec<_>>(),
        )
    };
    let caught_up = |positions: Vec<(String, u32, u64)>| {
        ends.as_ref().is_some_and(|ends| {
            positions.iter().all(|(_, p, pos)| {
                ends.iter()
                    .find(|(ep, _)| ep == p)
                    .is_none_or(|(_, end)| pos >= end)
            })
        })
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let max = args.max.unwrap_or(u64::MAX);
    let mut ctrl_c = std::pin::pin!(stop_requested()?);
    let mut line = String::new();
    'outer: while printed < max && !caught_up(consumer.positions()) {
        let batch = tokio::select! {
            _ = &mut ctrl_c => break,
            batch = consumer.poll() => batch,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) if args.follow && e.is_retriable() => {
                eprintln!("warning: {e}; retrying");
                tokio::select! {
                    _ = &mut ctrl_c => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            Err(e) => {
                let _ = out.flush();
                return Err(anyhow::Error::new(e).context(format!("cannot read topic {topic}")));
            }
        };
        if batch.is_empty() && !args.follow {
            break;
        }
        for m in &batch {
            if printed >= max {
                break;
            }
            line.clear();
            if args.json {
                line.push_str(&json_line(m));
            } else {
                plain_line(m, &mut line);
            }
            line.push('\n');
            if let Err(e) = out.write_all(line.as_bytes()) {
                if is_broken_pipe(&e) {
                    break 'outer;
                }
                return Err(e).context("writing to stdout");
            }
            printed += 1;
        }
        match out.flush() {
            Err(e) if is_broken_pipe(&e) => break,
            other => other.context("writing to stdout")?,
        }
    }
    match out.flush() {
        Err(e) if !is_broken_pipe(&e) => return Err(e).context("writing to stdout"),
        _ => {}
    }
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, after which the command closes
/// its connection cleanly instead of leaving the broker to time it out.
fn stop_requested() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a Ctrl-C handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Keeps a message on one line: line breaks and other control characters
/// are escaped.
fn one_line(bytes: &[u8], out: &mut String) {
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && c != '\t' => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
}

/// `partition/offset key=... tags=... value`.
pub(crate) fn plain_line(m: &ConsumedMessage, out: &mut String) {
    let _ = write!(out, "{}/{}", m.partition, m.offset);
    if let Some(key) = &m.key {
        out.push_str(" key=");
        one_line(key, out);
    }
    if !m.tags.is_empty() {
        out.push_str(" tags=");
        one_line(m.tags.join(",").as_bytes(), out);
    }
    out.push(' ');
    one_line(&m.value, out);
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One message as `--json` prints it (see `sluice consume --help`).
#[derive(Debug, serde::Serialize)]
struct JsonMessage<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    value: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    tags: &'a [String],
    properties: BTreeMap<&'a str, Cow<'a, str>>,
    id: Option<String>,
    /// On retry copies and dead letters: `topic/partition/offset` first
    /// consumed at, failed deliveries, and (dead letters) why.
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_reason: Option<&'a str>,
}

/// The hex form of bytes that are not valid UTF-8.
fn hex_if_binary(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).is_err().then(|| hex(bytes))
}

/// One message as a line of JSON (see `sluice consume --help`).
pub(crate) fn json_line(m: &ConsumedMessage) -> String {
    let msg = JsonMessage {
        topic: &m.topic,
        partition: m.partition,
        offset: m.offset,
        timestamp: m.timestamp,
        key: m.key.as_deref().map(String::from_utf8_lossy),
        key_hex: m.key.as_deref().and_then(hex_if_binary),
        value: String::from_utf8_lossy(&m.value),
        value_hex: hex_if_binary(&m.value),
        tags: &m.tags,
        properties: m
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v)))
            .collect(),
        id: m.id.map(|id| id.to_string()),
        origin: m
            .origin
            .as_ref()
            .map(|o| format!("{}/{}/{}", o.topic, o.partition, o.offset)),
        failed_attempts: m.failed_attempts,
        dead_reason: m.dead_reason.as_deref(),
    };
    serde_json::to_string(&msg).expect("a message serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_client::MessageId;

    #[test]
    fn from_accepts_the_documented_forms() {
        assert_eq!(parse_from("earliest"), Ok(StartAt::Earliest));
        assert_eq!(parse_from("latest"), Ok(StartAt::Latest));
        assert_eq!(parse_from("offset:42"), Ok(StartAt::Offset(42)));
        assert_eq!(
            parse_from("time:1700000000000"),
            Ok(StartAt::Time(1_700_000_000_000))
        );
        assert_eq!(
            parse_from("ago:90s"),
            Ok(StartAt::Ago(Duration::from_secs(90)))
        );
        assert_eq!(
            parse_from("ago:15m"),
            Ok(StartAt::Ago(Duration::from_secs(900)))
        );
        assert_eq!(
            parse_from("ago:2h"),
            Ok(StartAt::Ago(Duration::from_secs(7200)))
        );
        assert_eq!(
            parse_from("ago:1d"),
            Ok(StartAt::Ago(Duration::from_secs(86400)))
        );
    }

    #[test]
    fn from_explains_what_it_rejects() {
        let err = parse_from("12").unwrap_err();
        assert!(err.contains("offset:12"), "{err}");
        assert!(
            parse_from("offset:-1")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(parse_from("time:x").is_err());
        assert!(parse_from("ago:5").unwrap_err().contains("units"));
        assert!(parse_from("ago:h").is_err());
        assert!(parse_from("yesterday").is_err());
    }

    #[test]
    fn ago_seeks_to_a_time_in_the_past() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let SeekTo::Timestamp(t) = StartAt::Ago(Duration::from_secs(60)).seek_to() else {
            panic!("not a timestamp");
        };
        assert!(
            (now - 60_000 - 1000..=now - 60_000 + 1000).contains(&t),
            "{t}"
        );
    }

    fn message(value: &'static [u8]) -> ConsumedMessage {
        ConsumedMessage {
            topic: "orders".into(),
            partition: 2,
            offset: 7,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k1")),
            value: Bytes::from_static(value),
            tags: vec!["eu".into(), "vip".into()],
            properties: vec![("trace".into(), Bytes::from_static(b"abc"))],
            id: Some(MessageId([0x11; 16])),
            delay_id: None,
            loop_iteration: None,
            due_at: None,
            origin: None,
            failed_attempts: None,
            dead_reason: None,
        }
    }

    #[test]
    fn plain_lines_keep_one_message_per_line() {
        let mut s = String::new();
        plain_line(&message(b"two\nlines"), &mut s);
        assert_eq!(s, "2/7 key=k1 tags=eu,vip two\\nlines");
        let mut m = message(b"v");
        m.key = None;
        m.tags.clear();
        s.clear();
        plain_line(&m, &mut s);
        assert_eq!(s, "2/7 v");
    }

    #[test]
    fn json_lines_carry_hex_only_for_binary_values() {
        let parse = |m: &ConsumedMessage| -> serde_json::Value {
            serde_json::from_str(&json_line(m)).unwrap()
        };
        let line = json_line(&message(b"hello"));
        assert!(
            line.starts_with(r#"{"topic":"orders","partition":2,"offset":7,"#),
            "{line}"
        );
        let v = parse(&message(b"hello"));
        assert_eq!(v["value"], "hello");
        assert!(v.get("value_hex").is_none());
        assert_eq!(v["key"], "k1");
        assert_eq!(v["tags"], serde_json::json!(["eu", "vip"]));
        assert_eq!(v["properties"]["trace"], "abc");
        assert_eq!(v["id"], "11111111-1111-1111-1111-111111111111");
        let v = parse(&message(b"\xff\x00a"));
        assert_eq!(v["value_hex"], "ff0061");
        assert_eq!(v["value"], "\u{fffd}\u{0}a");
    }
}
