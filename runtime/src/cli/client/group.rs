//! `sluice group list|describe|reset|redrive|delete|consume`: consumer
//! groups as an operator sees them.

use anyhow::bail;
use clap::{Args, Subcommand};
use sluice_client::{GroupConfig, OffsetSpec, ResetTo, SeekTo};
use sluice_protocol::ops::{GroupDescription, GroupMode};

use super::consume::{StartAt, parse_from, plain_line};
use super::render::table;
use super::{ConnectArgs, block_on};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups: topic, mode, live members, total lag and
    /// dead letters waiting.
    List(ListArgs),
    /// Show a group's settings, members and their partitions, and per
    /// partition the committed offset, high watermark, lag and messages in
    /// flight.
    Describe(NameArgs),
    Reset(ResetArgs),
    /// Send a group's dead letters back to it (through its retry topic,
    /// attempts reset). Prints how many went and how many remain.
    ///
    /// Example: sluice group redrive billing --max 100
    Redrive(RedriveArgs),
    /// Forget a group that has no live members: its settings and positions.
    /// Its retry and dead-letter topics stay.
    Delete(NameArgs),
    Consume(ConsumeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Name of the group.
    pub group: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Move a group's position: rewind to replay, or skip ahead
///
/// Every given partition (all by default) of the group's topic moves to the
/// position; messages in flight are forgotten and their late acks ignored.
/// For a broadcast group every member instance moves. Prints the new
/// position per partition.
///
/// Examples:
///   sluice group reset billing --to earliest
///   sluice group reset billing --to ago:2h
///   sluice group reset billing --to offset:1500 --partition 3
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ResetArgs {
    /// Name of the group.
    pub group: String,
    /// The new position: earliest, latest, offset:<N>, time:<ms since the
    /// epoch> or ago:<N>(s|m|h|d).
    #[arg(long, value_name = "WHERE", value_parser = parse_from)]
    pub to: StartAt,
    /// Partition to move (repeatable, or comma-separated) [default: all]
    #[arg(
        long = "partition",
        short = 'p',
        value_name = "N",
        value_delimiter = ','
    )]
    pub partitions: Vec<u32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// Name of the group.
    pub group: String,
    /// At most this many [default: all]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max: u32,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Consume as a member of a group, acking each message once printed
///
/// Joins GROUP (creating it on first use) on TOPIC and prints each message
/// it is given, one line each, as `sluice consume` does, plus
/// "(attempt N)" on a redelivery. Stops after --max messages, or on Ctrl-C.
///
/// Examples:
///   sluice group consume billing orders
///   sluice group consume audit orders --broadcast --instance host-1
///   sluice group consume vip orders --tags 'vip AND NOT test' --from earliest
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ConsumeArgs {
    /// Name of the group.
    pub group: String,
    /// Topic the group reads.
    pub topic: String,
    /// Where a new group starts: earliest, latest, time:<ms> or ago:<N><U>.
    #[arg(long, default_value = "latest", value_name = "WHERE", value_parser = parse_from)]
    pub from: StartAt,
    /// Tag filter expression, e.g. 'a AND (b OR NOT c)'.
    #[arg(long, value_name = "EXPR", default_value = "")]
    pub tags: String,
    /// Per-key order: one message per key in flight.
    #[arg(long)]
    pub ordered: bool,
    /// Every member gets every message.
    #[arg(long)]
    pub broadcast: bool,
    /// A stable name for this consumer (broadcast progress is kept per
    /// instance).
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Stop after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    pub max: Option<u64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            GroupCommand::List(a) => a.connect.with_client(async |c| list(c).await).await,
            GroupCommand::Describe(a) => {
                let d = a
                    .connect
                    .with_client(async |c| Ok(c.describe_group(&a.group).await?))
                    .await?;
                print!("{}", describe_text(&d));
                Ok(())
            }
            GroupCommand::Reset(a) => {
                let to = match a.to.seek_to() {
                    SeekTo::Earliest => ResetTo::Spec(OffsetSpec::Earliest),
                    SeekTo::Latest => ResetTo::Spec(OffsetSpec::Latest),
                    SeekTo::Offset(o) => ResetTo::Offset(o),
                    SeekTo::Timestamp(t) => ResetTo::Spec(OffsetSpec::Timestamp(t)),
                };
                let positions = a
                    .connect
                    .with_client(async |c| Ok(c.reset_group(&a.group, &a.partitions, to).await?))
                    .await?;
                let rows = positions
                    .into_iter()
                    .map(|(tp, o)| vec![tp.topic, tp.partition.to_string(), o.to_string()])
                    .collect();
                print!("{}", table(&["topic", "partition", "position"], rows));
                Ok(())
            }
            GroupCommand::Redrive(a) => {
                let r = a
                    .connect
                    .with_client(async |c| Ok(c.redrive_dead_letters(&a.group, a.max).await?))
                    .await?;
                println!("redriven {}, remaining {}", r.redriven, r.remaining);
                Ok(())
            }
            GroupCommand::Delete(a) => {
                a.connect
                    .with_client(async |c| Ok(c.delete_group(&a.group).await?))
                    .await?;
                println!("deleted group {}", a.group);
                Ok(())
            }
            GroupCommand::Consume(a) => consume(a).await,
        }
    })
}

async fn list(c: &sluice_client::Client) -> anyhow::Result<()> {
    let rows = c
        .list_groups()
        .await?
        .into_iter()
        .map(|g| {
            vec![
                g.group,
                g.topic,
                g.mode.to_string(),
                g.members.to_string(),
                g.lag.to_string(),
                g.dead_letters.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["group", "topic", "mode", "members", "lag", "dead letters"],
            rows
        )
    );
    Ok(())
}

/// The text `sluice group describe` prints.
pub fn describe_text(d: &GroupDescription) -> String {
    let s = &d.settings;
    let mut out = format!(
        "group {}  topic {}  mode {}{}  generation {}\n",
        d.group,
        s.topic,
        s.mode,
        if s.ordered { " (ordered)" } else { "" },
        d.generation
    );
    if !s.tag_filter.is_empty() {
        out.push_str(&format!("tag filter: {}\n", s.tag_filter));
    }
    out.push_str(&format!(
        "ack timeout {} ms, max attempts {}, max in flight {}\n",
        s.ack_timeout_ms, s.max_attempts, s.max_in_flight
    ));
    out.push_str(&format!(
        "retry topic {}, dead-letter topic {} ({} waiting)\n\n",
        d.retry_topic, d.dead_letter_topic, d.dead_letters
    ));
    let members = d
        .members
        .iter()
        .map(|m| {
            let parts: Vec<String> = m
                .assignment
                .iter()
                .map(|tp| format!("{}/{}", tp.topic, tp.partition))
                .collect();
            vec![
                m.member_id.clone(),
                m.instance_id.clone(),
                m.client_id.clone(),
                m.in_flight.to_string(),
                parts.join(" "),
            ]
        })
        .collect();
    out.push_str(&table(
        &["member", "instance", "client", "in flight", "partitions"],
        members,
    ));
    out.push('\n');
    let broadcast = s.mode == GroupMode::Broadcast;
    let rows = d
        .partitions
        .iter()
        .map(|p| {
            let mut row = vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed.to_string(),
                p.high_watermark.to_string(),
                p.lag.to_string(),
                p.in_flight.to_string(),
                p.owner.clone(),
            ];
            if broadcast {
                row.insert(0, p.instance_id.clone());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "topic",
        "partition",
        "committed",
        "high watermark",
        "lag",
        "in flight",
        "owner",
    ];
    if broadcast {
        headers.insert(0, "instance");
    }
    out.push_str(&table(&headers, rows));
    out.push_str(&format!("total lag {}\n", d.total_lag()));
    out
}

async fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let start = match a.from.seek_to() {
        SeekTo::Earliest => OffsetSpec::Earliest,
        SeekTo::Latest => OffsetSpec::Latest,
        SeekTo::Timestamp(t) => OffsetSpec::Timestamp(t),
        SeekTo::Offset(_) => {
            bail!(
                "a group starts at earliest, latest or a time; use `sluice group reset` to move it to an offset"
            )
        }
    };
    let mut config = GroupConfig::new(&a.group, &a.topic)
        .start(start)
        .tag_filter(&a.tags)
        .ordered(a.ordered);
    if a.broadcast {
        config = config.broadcast();
    }
    if let Some(i) = &a.instance {
        config = config.instance_id(i);
    }
    let client = a.connect.connect().await?;
    let consumer = client.group_consumer(config).await?;
    let mut seen = 0u64;
    let mut line = String::new();
    let result = async {
        loop {
            tokio::select! {
                batch = consumer.poll() => {
                    for m in batch? {
                        line.clear();
                        plain_line(m.message(), &mut line);
                        if m.attempt() > 1 {
                            line.push_str(&format!(" (attempt {})", m.attempt()));
                        }
                        println!("{line}");
                        m.ack();
                        seen += 1;
                        if a.max.is_some_and(|max| seen >= max) {
                            return anyhow::Ok(());
                        }
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    .await;
    consumer.leave().await?;
    client.close().await;
    result
}
