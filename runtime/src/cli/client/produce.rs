//! `sluice produce`: send messages from arguments or stdin lines.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_client::{ClientError, Delivery, Message, Partitioning, Producer, ProducerConfig};
use sluice_protocol::headers;

use super::{ConnectArgs, block_on, parse_pair};

/// Send messages to a topic, from arguments or one per stdin line
///
/// Each VALUE is one message. Without values, every line read from stdin is
/// one message (the line ending is not part of it; an empty line is an empty
/// message). Messages are acknowledged once durable; at the end the command
/// prints how many were sent and the offsets they landed at, and exits
/// non-zero if any failed.
///
/// Examples:
///   sluice produce orders hello world
///   sluice produce orders --key customer-7 --tag eu --header trace=abc '{"total": 12}'
///   cat events.txt | sluice produce orders
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ProduceArgs {
    /// Topic to send to.
    pub topic: String,
    /// Message values; read one per stdin line when none are given.
    pub values: Vec<String>,
    #[command(flatten)]
    pub message: MessageArgs,
    /// Fire and forget: no acknowledgement, no retry, no offsets; a message
    /// can be lost without an error.
    #[arg(long)]
    pub oneway: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    block_on(produce(args))
}

/// What a message carries besides its topic and value; shared by
/// `sluice produce` and `sluice delay send`.
#[derive(Debug, Args)]
pub struct MessageArgs {
    /// Key of every message (messages with a key go to the partition of its
    /// hash unless --partition is given).
    #[arg(long, short = 'k')]
    pub key: Option<String>,
    /// A tag on every message (repeatable).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// A property on every message (repeatable); names starting with
    /// `sluice.` are reserved.
    #[arg(
        long = "header",
        short = 'H',
        visible_alias = "property",
        value_name = "NAME=VALUE"
    )]
    pub headers: Vec<String>,
    /// Send to this partition [default: by key hash, round robin without a key]
    #[arg(long, short = 'p', value_name = "N")]
    pub partition: Option<u32>,
}

impl MessageArgs {
    /// The template of messages to `topic` these flags describe.
    pub(crate) fn template(&self, topic: &str) -> anyhow::Result<Template> {
        let mut properties = Vec::new();
        for h in &self.headers {
            let (name, value) = parse_pair(h, "--header")?;
            if headers::is_reserved(&name) {
                bail!("--header {name}: names starting with `sluice.` are reserved for Sluice");
            }
            properties.push((name, Bytes::from(value)));
        }
        Ok(Template {
            topic: topic.to_owned(),
            key: self.key.clone().map(Bytes::from),
            tags: self.tags.clone(),
            properties,
            partitioning: self
                .partition
                .map_or(Partitioning::Auto, Partitioning::Explicit),
        })
    }
}

/// What every message gets besides its value.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) topic: String,
    key: Option<Bytes>,
    tags: Vec<String>,
    properties: Vec<(String, Bytes)>,
    partitioning: Partitioning,
}

impl Template {
    pub(crate) fn message(&self, value: Bytes) -> Message {
        let mut m = Message::new(self.topic.clone(), value).partition(self.partitioning);
        m.key = self.key.clone();
        m.tags = self.tags.clone();
        m.properties = self.properties.clone();
        m
    }
}

/// Where messages landed, for the closing summary.
#[derive(Debug, Default)]
struct Landed {
    count: u64,
    /// Per partition: lowest and highest offset.
    ranges: BTreeMap<u32, (u64, u64)>,
}

impl Landed {
    fn add(&mut self, d: &Delivery) {
        self.count += 1;
        let r = self
            .ranges
            .entry(d.partition)
            .or_insert((d.offset, d.offset));
        r.0 = r.0.min(d.offset);
        r.1 = r.1.max(d.offset);
    }

    fn summary(&self, topic: &str) -> String {
        let mut s = format!("sent {} message(s) to {topic}", self.count);
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(p, (lo, hi))| {
                if lo == hi {
                    format!("partition {p} offset {lo}")
                } else {
                    format!("partition {p} offsets {lo}-{hi}")
                }
            })
            .collect();
        if !parts.is_empty() {
            s.push_str(": ");
            s.push_str(&parts.join(", "));
        }
        s
    }
}

/// The source of message values.
enum Input {
    Args(std::vec::IntoIter<String>),
    /// Lines read by a thread of their own (blocking reads off the runtime).
    Stdin(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

impl Input {
    fn stdin() -> Input {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut line = Vec::new();
                let item = match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        Ok(Bytes::from(line))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        Input::Stdin(rx)
    }

    async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Input::Args(it) => Ok(it.next().map(Bytes::from)),
            Input::Stdin(rx) => rx.recv().await.transpose().context("reading stdin"),
        }
    }
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} message(s) sent ({per_sec})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let template = args.message.template(&args.topic)?;
    let from_stdin = args.values.is_empty();
    let mut input = if from_stdin {
        Input::stdin()
    } else {
        Input::Args(args.values.clone().into_iter())
    };
    let summary = args
        .connect
        .with_client(async |client| {
            let config = ProducerConfig {
                // Batches grow while earlier ones are in flight; a little
                // linger helps when lines trickle in.
                linger: Duration::from_millis(if from_stdin { 2 } else { 0 }),
                ..ProducerConfig::default()
            };
            let producer = client
                .producer(config)
                .await
                .context("cannot start a producer")?;
            let bar = progress_bar(from_stdin && std::io::stderr().is_terminal());
            let result = if args.oneway {
                send_oneway(&producer, &template, &mut input, &bar).await
            } else {
                send_acknowledged(&producer, &template, &mut input, &bar).await
            };
            bar.finish_and_clear();
            result
        })
        .await?;
    println!("{summary}");
    Ok(())
}

/// Sends everything with `send_async`, keeping acknowledgements in flight
/// while reading on; stops reading at the first failure.
async fn send_acknowledged(
    producer: &Producer,
    template: &Template,
    input: &mut Input,
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    let mut pending = FuturesUnordered::new();
    let mut landed = Landed::default();
    let mut failure: Option<ClientError> = None;
    let mut failed = 0u64;
    let mut record = |r: Result<Delivery, ClientError>, failure: &mut Option<ClientError>| match r {
        Ok(d) => {
            landed.add(&d);
            bar.inc(1);
        }
        Err(e) => {
            failed += 1;
            failure.get_or_insert(e);
        }
    };
    let mut read_error = None;
    while failure.is_none() {
        // Take in acknowledgements as they come, also while waiting for
        // input (reading stdin is cancel-safe: lines wait in a channel).
        let value = tokio::select! {
            biased;
            Some(r) = pending.next(), if !pending.is_empty() => {
                record(r, &mut failure);
                continue;
            }
            value = input.next() => value,
        };
        let value = match value {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        match producer.send_async(template.message(value)).await {
            Ok(f) => pending.push(f),
            Err(e) => {
                record(Err(e), &mut failure);
                break;
            }
        }
    }
    while let Some(r) = pending.next().await {
        record(r, &mut failure);
    }
    if let Some(e) = failure {
        let mut context = format!("cannot send to topic {}", template.topic);
        if landed.count > 0 || failed > 1 {
            context.push_str(&format!(
                " ({} message(s) acknowledged, {failed} failed)",
                landed.count
            ));
        }
        return Err(anyhow::Error::new(e).context(context));
    }
    if let Some(e) = read_error {
        return Err(e.context(format!(
            "{} message(s) acknowledged before the input failed",
            landed.count
        )));
    }
    Ok(landed.summary(&template.topic))
}

/// One-way sends get no answer; `flush` waits until the broker has taken
/// every one of them, so the process does not exit ahead of its messages.
async fn send_oneway(
    producer: &Producer,
    template: &Template,
    input: &mut Input,
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    let mut sent = 0u64;
    while let Some(value) = input.next().await? {
        producer
            .send_oneway(template.message(value))
            .await
            .with_context(|| format!("cannot send to topic {}", template.topic))?;
        sent += 1;
        bar.inc(1);
    }
    producer.flush().await;
    Ok(format!(
        "sent {sent} message(s) to {} one-way (not acknowledged, offsets unknown)",
        template.topic
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::MessageId;

    #[test]
    fn summaries_give_offset_ranges_per_partition() {
        let mut l = Landed::default();
        for (partition, offset) in [(1, 7), (0, 3), (0, 4), (0, 5)] {
            l.add(&Delivery {
                partition,
                offset,
                id: MessageId::new(),
            });
        }
        assert_eq!(
            l.summary("orders"),
            "sent 4 message(s) to orders: partition 0 offsets 3-5, partition 1 offset 7"
        );
        assert_eq!(
            Landed::default().summary("orders"),
            "sent 0 message(s) to orders"
        );
    }
}
