//! `sluice delay send|cancel|list`: delayed and loop delivery.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{ArgGroup, Args, Subcommand};
use sluice_client::{CancelOutcome, CancelResult, DelaySummary, DelayedMessage, Loop, Scheduled};

use super::produce::MessageArgs;
use super::render::{relative, rfc3339, table};
use super::{ConnectArgs, block_on};

#[derive(Debug, Subcommand)]
pub enum DelayCommand {
    Send(SendArgs),
    /// Cancel scheduled messages by delay id (a loop message stops looping).
    ///
    /// Prints one line per id; exits non-zero if any id was not cancelled
    /// (already delivered, already cancelled, or unknown).
    ///
    /// Example: sluice delay cancel 17 18
    Cancel(CancelArgs),
    /// Show the pending scheduled messages per topic: how many, and when the
    /// next one is due.
    List(ListArgs),
}

/// Schedule a message for later, once or in a loop
///
/// The broker keeps the message and appends it to TOPIC when it is due, with
/// its key, tags and properties, plus the header sluice.delay-id (and, for a
/// loop, sluice.loop-iteration). The message goes to the partition a produce
/// would pick. Prints the delay id (for `sluice delay cancel`) and the due time.
///
/// DURATION: 250ms, 10s, 5m, 1h30m, 2d, ...
/// TIME: RFC 3339 (2026-03-01T09:00:00Z, 2026-03-01T10:00:00+01:00) or
///       milliseconds since the Unix epoch; a time in the past is due at once.
///
/// A loop (--every) is delivered when due, then every interval, until
/// --times deliveries or until the next one would fall after --until,
/// whichever comes first: at least one of the two is required.
///
/// Examples:
///   sluice delay send orders 'cancel unpaid order 42' --key order-42 --after 30m
///   sluice delay send reports 'daily' --at 2026-03-01T09:00:00Z --every 24h --times 30
///   sluice delay send jobs retry --after 1s --every 1s --exponential --max-interval 1m --times 10
#[derive(Debug, Args)]
#[command(
    verbatim_doc_comment,
    group(ArgGroup::new("due").required(true).args(["after", "at"]))
)]
pub struct SendArgs {
    /// Topic to deliver to.
    pub topic: String,
    /// The message's value.
    pub value: String,
    #[command(flatten)]
    pub message: MessageArgs,
    /// Due this long from now.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub after: Option<Duration>,
    /// Due at this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,
    /// Deliver again every DURATION after the first delivery (at least 10ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Deliveries in all, the first included.
    #[arg(long, value_name = "N", requires = "every")]
    pub times: Option<u32>,
    /// No delivery after this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "every")]
    pub until: Option<i64>,
    /// Double the interval after each delivery.
    #[arg(long, requires = "every")]
    pub exponential: bool,
    /// Cap of the doubling interval [default: none]
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_duration,
        requires = "exponential"
    )]
    pub max_interval: Option<Duration>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Delay ids, as `sluice delay send` printed them.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<u64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this topic [default: every topic with pending messages]
    pub topic: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(cmd: DelayCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            DelayCommand::Send(args) => send(args).await,
            DelayCommand::Cancel(args) => cancel(args).await,
            DelayCommand::List(args) => list(args).await,
        }
    })
}

/// Parses a DURATION (`250ms`, `10s`, `1h30m`, ...).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration like 250ms, 10s, 5m or 1h30m, got {s:?} ({e})"))
}

/// Parses a TIME: milliseconds since the Unix epoch, or RFC 3339 with `Z`
/// or a UTC offset.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "expected an RFC 3339 time (2026-03-01T09:00:00Z, 2026-03-01T10:00:00+01:00) \
             or milliseconds since the Unix epoch, got {s:?}"
        )
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let (utc, offset_secs) = match (upper.strip_suffix('Z'), utc_offset(&upper)) {
        (Some(utc), _) => (utc, 0),
        (None, Some((utc, offset))) => (utc, offset),
        (None, None) => {
            return Err(format!(
                "{}: the time needs a zone, Z for UTC or an offset like +01:00",
                bad()
            ));
        }
    };
    let t = humantime::parse_rfc3339_weak(utc).map_err(|e| format!("{} ({e})", bad()))?;
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis();
    Ok(i64::try_from(ms).map_err(|_| bad())? - offset_secs * 1000)
}

/// `time+hh:mm` / `time-hh:mm` → (`time`, the offset in seconds).
fn utc_offset(s: &str) -> Option<(&str, i64)> {
    let (time, zone) = s.split_at_checked(s.len().checked_sub(6)?)?;
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = zone[1..].split_once(':')?;
    let two_digits = |v: &str| -> Option<i64> {
        (v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse().ok())?
    };
    let (h, m) = (two_digits(h)?, two_digits(m)?);
    (h < 24 && m < 60).then_some((time, sign * (h * 3600 + m * 60)))
}

impl SendArgs {
    /// The message to schedule.
    fn delayed_message(&self) -> anyhow::Result<DelayedMessage> {
        let msg = self
            .message
            .template(&self.topic)?
            .message(Bytes::from(self.value.clone()));
        let mut delayed = match (self.after, self.at) {
            (Some(after), None) => DelayedMessage::after(msg, after),
            (None, Some(at)) => DelayedMessage::at(msg, at),
            _ => bail!("give one of --after DURATION or --at TIME"),
        };
        if let Some(every) = self.every {
            if self.times.is_none() && self.until.is_none() {
                bail!("--every needs --times N or --until TIME: a loop must end");
            }
            let mut spec = Loop::every(every);
            if let Some(n) = self.times {
                spec = spec.times(n);
            }
            if let Some(until) = self.until {
                spec = spec.until(until);
            }
            if self.exponential {
                spec = spec.exponential(self.max_interval);
            }
            delayed = delayed.repeat(spec);
        }
        Ok(delayed)
    }
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let msg = args.delayed_message()?;
    let scheduled = args
        .connect
        .with_client(async |client| {
            client
                .schedule(msg)
                .await
                .with_context(|| format!("cannot schedule a message on topic {}", args.topic))
        })
        .await?;
    println!("{}", scheduled_line(&args.topic, &scheduled, now_ms()));
    Ok(())
}

/// `scheduled delay 17 to orders partition 2, due 2026-…Z (in 30s)`.
fn scheduled_line(topic: &str, s: &Scheduled, now_ms: i64) -> String {
    format!(
        "scheduled delay {} to {topic} partition {}, due {} ({})",
        s.delay_id,
        s.partition,
        rfc3339(s.due_at_ms),
        relative(s.due_at_ms, now_ms)
    )
}

async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let results = args
        .connect
        .with_client(async |client| {
            client
                .cancel_delays(&args.ids)
                .await
                .context("cannot cancel")
        })
        .await?;
    let mut not_cancelled = 0;
    for r in &results {
        if r.outcome != CancelOutcome::Cancelled {
            not_cancelled += 1;
        }
        println!("{}", cancel_line(r));
    }
    if not_cancelled > 0 {
        bail!(
            "{not_cancelled} of {} delay(s) not cancelled",
            results.len()
        );
    }
    Ok(())
}

/// `delay 17: cancelled`, or why not with the broker's explanation:
/// `delay 18: not cancelled: already delivered; delivered at ... ms`.
fn cancel_line(r: &CancelResult) -> String {
    let why = match r.outcome {
        CancelOutcome::Cancelled => return format!("delay {}: cancelled", r.delay_id),
        CancelOutcome::AlreadyDelivered => "already delivered",
        CancelOutcome::AlreadyCancelled => "already cancelled",
        CancelOutcome::Unknown => "unknown delay id",
    };
    if r.message.is_empty() {
        format!("delay {}: not cancelled: {why}", r.delay_id)
    } else {
        format!("delay {}: not cancelled: {why}; {}", r.delay_id, r.message)
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let topics = args
        .connect
        .with_client(async |client| {
            client
                .list_delays(args.topic.as_deref())
                .await
                .context("cannot list the delayed messages")
        })
        .await?;
    print!("{}", render_list(topics, now_ms()));
    Ok(())
}

/// The text `sluice delay list` prints.
fn render_list(mut topics: Vec<DelaySummary>, now_ms: i64) -> String {
    if topics.is_empty() {
        return "no delayed messages pending\n".into();
    }
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    let rows = topics
        .into_iter()
        .map(|t| {
            let (due, until) = if t.next_due_ms < 0 {
                ("-".into(), "-".into())
            } else {
                (rfc3339(t.next_due_ms), relative(t.next_due_ms, now_ms))
            };
            vec![t.topic, t.pending.to_string(), due, until]
        })
        .collect();
    table(&["TOPIC", "PENDING", "NEXT-DUE", "IN"], rows)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sluice_client::{LoopBackoff, LoopSpec, Partitioning, When};

    use super::*;

    /// `sluice delay <args>` as the binary parses it.
    fn parse(args: &[&str]) -> Result<DelayCommand, clap::Error> {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            delay: DelayCommand,
        }
        Cli::try_parse_from(std::iter::once("delay").chain(args.iter().copied())).map(|c| c.delay)
    }

    fn send_args(args: &[&str]) -> SendArgs {
        match parse(&[&["send"], args].concat()).unwrap() {
            DelayCommand::Send(a) => a,
            other => panic!("not a send: {other:?}"),
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        let err = parse_duration("10").unwrap_err();
        assert!(err.contains("like 250ms, 10s"), "{err}");
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn times_read_as_rfc3339_or_epoch_milliseconds() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("2026-03-01T09:00:00Z"), Ok(1_772_355_600_000));
        assert_eq!(
            parse_time("2026-03-01t09:00:00.250z"),
            Ok(1_772_355_600_250)
        );
        // Offsets are applied: 10:00 at +01:00 is 09:00 UTC.
        assert_eq!(
            parse_time("2026-03-01T10:00:00+01:00"),
            Ok(1_772_355_600_000)
        );
        assert_eq!(
            parse_time("2026-03-01T04:30:00.5-04:30"),
            Ok(1_772_355_600_500)
        );
        assert_eq!(
            parse_time("2026-03-01T09:00:00+00:00"),
            Ok(1_772_355_600_000)
        );
        let err = parse_time("2026-03-01T09:00:00").unwrap_err();
        assert!(err.contains("needs a zone"), "{err}");
        for bad in [
            "",
            "tomorrow",
            "-5",
            "2026-03-01",
            "2026-13-01T09:00:00Z",
            "2026-03-01T09:00:00+1:00",
            "2026-03-01T09:00:00+24:00",
            "2026-03-01T09:00:00+01:0x",
            "99999999999999999999",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn send_builds_the_message_and_its_loop() {
        let args = send_args(&[
            "orders",
            "hello",
            "--key",
            "k1",
            "--tag",
            "eu",
            "--property",
            "trace=abc",
            "--header",
            "eq=x=y",
            "--after",
            "1h30m",
        ]);
        let d = args.delayed_message().unwrap();
        assert_eq!(d.when, When::After(5_400_000));
        assert_eq!(d.repeat, None);
        assert_eq!(d.message.topic, "orders");
        assert_eq!(&d.message.value[..], b"hello");
        assert_eq!(d.message.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(d.message.tags, ["eu"]);
        assert_eq!(
            d.message.properties,
            [
                ("trace".into(), Bytes::from("abc")),
                ("eq".into(), Bytes::from("x=y"))
            ]
        );
        assert_eq!(d.message.partitioning, Partitioning::Auto);
        assert_eq!(d.message.timestamp, None);

        let d = send_args(&[
            "jobs",
            "retry",
            "-p",
            "2",
            "--at",
            "1700000000000",
            "--every",
            "1s",
            "--times",
            "10",
            "--until",
            "2026-03-01T09:00:00Z",
            "--exponential",
            "--max-interval",
            "1m",
        ])
        .delayed_message()
        .unwrap();
        assert_eq!(d.when, When::At(1_700_000_000_000));
        assert_eq!(d.message.partitioning, Partitioning::Explicit(2));
        assert_eq!(
            d.repeat,
            Some(LoopSpec {
                interval_ms: 1000,
                times: 10,
                expire_at_ms: 1_772_355_600_000,
                backoff: LoopBackoff::Exponential {
                    max_interval_ms: 60_000
                },
            })
        );

        let d = send_args(&["t", "v", "--after", "0s", "--every", "20ms", "--times", "3"])
            .delayed_message()
            .unwrap();
        assert_eq!(d.when, When::After(0));
        assert_eq!(d.repeat.unwrap().backoff, LoopBackoff::Fixed);
        assert_eq!(d.repeat.unwrap().expire_at_ms, -1);
    }

    #[test]
    fn send_refuses_what_cannot_work() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(&[&["send"], args].concat()).unwrap_err().kind();
        // Exactly one of --after and --at.
        assert_eq!(kind(&["t", "v"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["t", "v", "--after", "1s", "--at", "5"]),
            ErrorKind::ArgumentConflict
        );
        // Loop flags need --every; --max-interval needs --exponential.
        assert_eq!(
            kind(&["t", "v", "--after", "1s", "--times", "3"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&[
                "t",
                "v",
                "--after",
                "1s",
                "--every",
                "1s",
                "--times",
                "3",
                "--max-interval",
                "1m"
            ]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["t", "v", "--after", "10"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["t", "v", "--at", "next week"]),
            ErrorKind::ValueValidation
        );

        let err = send_args(&["t", "v", "--after", "1s", "--every", "1s"])
            .delayed_message()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--every needs --times N or --until TIME"),
            "{err}"
        );
        let err = send_args(&["t", "v", "--after", "1s", "--header", "sluice.id=x"])
            .delayed_message()
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn cancel_and_list_take_their_arguments() {
        let DelayCommand::Cancel(c) = parse(&["cancel", "17", "18"]).unwrap() else {
            panic!("not a cancel");
        };
        assert_eq!(c.ids, [17, 18]);
        assert!(parse(&["cancel"]).is_err());
        assert!(parse(&["cancel", "x"]).is_err());
        let DelayCommand::List(l) = parse(&["list"]).unwrap() else {
            panic!("not a list");
        };
        assert_eq!(l.topic, None);
        let DelayCommand::List(l) = parse(&["list", "orders"]).unwrap() else {
            panic!("not a list");
        };
        assert_eq!(l.topic.as_deref(), Some("orders"));
    }

    #[test]
    fn due_times_print_absolute_and_relative() {
        // The absolute and relative forms themselves: render.rs.
        let now = 1_772_355_600_000;
        let s = Scheduled {
            delay_id: 17,
            due_at_ms: now + 30_000,
            partition: 2,
        };
        assert_eq!(
            scheduled_line("orders", &s, now),
            "scheduled delay 17 to orders partition 2, due 2026-03-01T09:00:30.000Z (in 30s)"
        );
    }

    #[test]
    fn cancel_outcomes_print_one_line_each() {
        let result = |outcome, message: &str| CancelResult {
            delay_id: 7,
            outcome,
            message: message.into(),
        };
        assert_eq!(
            cancel_line(&result(
                CancelOutcome::Cancelled,
                "cancelled; it was due at 5 ms"
            )),
            "delay 7: cancelled"
        );
        assert_eq!(
            cancel_line(&result(
                CancelOutcome::AlreadyDelivered,
                "delivered at 5 ms"
            )),
            "delay 7: not cancelled: already delivered; delivered at 5 ms"
        );
        assert_eq!(
            cancel_line(&result(CancelOutcome::AlreadyCancelled, "")),
            "delay 7: not cancelled: already cancelled"
        );
        assert_eq!(
            cancel_line(&result(CancelOutcome::Unknown, "no delayed message 7")),
            "delay 7: not cancelled: unknown delay id; no delayed message 7"
        );
    }

    #[test]
    fn lists_render_as_a_sorted_table() {
        let now = 1_772_355_600_000;
        let summary = |topic: &str, pending, next_due_ms| DelaySummary {
            topic: topic.into(),
            pending,
            next_due_ms,
        };
        let text = render_list(
            vec![
                summary("reports", 1, now + 3_600_000),
                summary("orders", 12, now + 30_000),
                summary("idle", 0, -1),
            ],
            now,
        );
        let expected = "\
TOPIC    PENDING  NEXT-DUE                  IN
idle     0        -                         -
orders   12       2026-03-01T09:00:30.000Z  in 30s
reports  1        2026-03-01T10:00:00.000Z  in 1h
";
        assert_eq!(text, expected);
        assert_eq!(
            render_list(Vec::new(), now),
            "no delayed messages pending\n"
        );
    }
}
