//! `sluice topic create|list|describe|delete`.

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_protocol::ops::TopicDescription;

use super::render::{human_bytes, table};
use super::{ConnectArgs, block_on, parse_pair};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    ///
    /// Example: sluice topic create orders --partitions 3 --config durability=sync
    Create(CreateArgs),
    /// List the topics and their partition counts.
    List(ListArgs),
    /// Show a topic's settings and, per partition, its offsets, size and
    /// segments.
    Describe(NameArgs),
    /// Delete a topic and all its messages.
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the topic.
    pub name: String,
    /// Number of partitions [default: the broker's default]
    #[arg(long, short = 'p', value_name = "N")]
    pub partitions: Option<u32>,
    /// A topic setting (repeatable), e.g. durability=sync or retention_ms=86400000;
    /// see docs/storage.md for the keys.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Name of the topic.
    pub name: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            TopicCommand::Create(args) => create(args).await,
            TopicCommand::List(args) => list(args).await,
            TopicCommand::Describe(args) => describe(args).await,
            TopicCommand::Delete(args) => delete(args).await,
        }
    })
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    if args.partitions == Some(0) {
        anyhow::bail!("--partitions must be at least 1");
    }
    let pairs = args
        .config
        .iter()
        .map(|s| parse_pair(s, "--config"))
        .collect::<Result<Vec<_>, _>>()?;
    let settings: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    args.connect
        .with_client(async |client| {
            client
                .create_topic(&args.name, args.partitions.unwrap_or(0), &settings)
                .await
                .with_context(|| format!("cannot create topic {}", args.name))?;
            // The broker may have picked the partition count: say what it is.
            let partitions = match client.describe_topic(&args.name).await {
                Ok(d) => d.partitions.len().to_string(),
                Err(_) => args
                    .partitions
                    .map_or_else(|| "the default number of".into(), |n| n.to_string()),
            };
            println!("created topic {} with {partitions} partition(s)", args.name);
            Ok(())
        })
        .await
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut topics = args
        .connect
        .with_client(async |client| client.list_topics().await.context("cannot list the topics"))
        .await?;
    if topics.is_empty() {
        println!("no topics");
        return Ok(());
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = topics
        .into_iter()
        .map(|t| vec![t.name, t.partitions.to_string()])
        .collect();
    print!("{}", table(&["TOPIC", "PARTITIONS"], rows));
    Ok(())
}

async fn describe(args: NameArgs) -> anyhow::Result<()> {
    let desc = args
        .connect
        .with_client(async |client| {
            client
                .describe_topic(&args.name)
                .await
                .with_context(|| format!("cannot describe topic {}", args.name))
        })
        .await?;
    print!("{}", render_description(&desc));
    Ok(())
}

async fn delete(args: NameArgs) -> anyhow::Result<()> {
    args.connect
        .with_client(async |client| {
            client
                .delete_topic(&args.name)
                .await
                .with_context(|| format!("cannot delete topic {}", args.name))
        })
        .await?;
    println!("deleted topic {}", args.name);
    Ok(())
}

/// The text `sluice topic describe` prints.
pub(crate) fn render_description(desc: &TopicDescription) -> String {
    let mut out = format!(
        "topic {} ({} partition(s))\n",
        desc.name,
        desc.partitions.len()
    );
    if desc.config.is_empty() {
        out.push_str("config: (none)\n");
    } else {
        out.push_str("config:\n");
        let width = desc.config.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut config = desc.config.clone();
        config.sort();
        for (k, v) in config {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
    }
    out.push('\n');
    let mut partitions = desc.partitions.clone();
    partitions.sort_by_key(|p| p.partition);
    let mut total = (0u64, 0u64, 0u64);
    let mut rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|p| {
            let messages = p.high_watermark.saturating_sub(p.log_start_offset);
            total.0 += messages;
            total.1 += p.size_bytes;
            total.2 += u64::from(p.segments);
            vec![
                p.partition.to_string(),
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
                messages.to_string(),
                human_bytes(p.size_bytes),
                p.segments.to_string(),
            ]
        })
        .collect();
    if rows.len() > 1 {
        rows.push(vec![
            "total".into(),
            String::new(),
            String::new(),
            total.0.to_string(),
            human_bytes(total.1),
            total.2.to_string(),
        ]);
    }
    out.push_str(&table(
        &[
            "PARTITION",
            "START",
            "HIGH-WATERMARK",
            "MESSAGES",
            "SIZE",
            "SEGMENTS",
        ],
        rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::ops::PartitionDescription;

    #[test]
    fn descriptions_render_as_a_table_with_totals() {
        let part = |partition, start, hw, size| PartitionDescription {
            partition,
            log_start_offset: start,
            high_watermark: hw,
            size_bytes: size,
            segments: 1,
        };
        let desc = TopicDescription {
            name: "orders".into(),
            config: vec![
                ("retention.ms".into(), "-1".into()),
                ("durability".into(), "sync".into()),
            ],
            partitions: vec![part(1, 2, 10, 2048), part(0, 0, 3, 100)],
        };
        let text = render_description(&desc);
        let expected = "\
topic orders (2 partition(s))
config:
  durability    sync
  retention.ms  -1

PARTITION  START  HIGH-WATERMARK  MESSAGES  SIZE     SEGMENTS
0          0      3               3         100 B    1
1          2      10              8         2.0 KiB  1
total                             11        2.1 KiB  2
";
        assert_eq!(text, expected);
    }
}
