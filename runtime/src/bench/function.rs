//! `sluice bench fn`: functions running in the broker.
//!
//! 1. **Filter**: a topic is filled with `--messages` messages, every one
//!    tagged `bench`. Groups of one push member read all of it, acking each
//!    message, alternately without a filter and with the sample tag filter
//!    (`tags = bench`, so both deliver every message) attached to the
//!    group — `--reps` times each, medians compared in the same run. The
//!    time runs until the broker reports the group's lag as 0.
//! 2. **Handler**: the order-totals sample (a kv read and write per
//!    message) as a handler on a topic of `--handler-messages` JSON orders;
//!    msgs/s until the group's lag is 0.
//! 3. **Transform**: the PII-redaction sample from a topic of
//!    `--transform-messages` texts of `--transform-size` bytes (with an
//!    email address and a phone number in each) to an output topic; input
//!    MB/s until the transform's positions reach the end of its input.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use sluice_client::{
    Client, ClientConfig, FunctionManifest, GroupSettings, Message, OffsetSpec, Partitioning,
    ProducerConfig,
};
use sluice_sample_components::embedded;

use super::group::group_read;
use super::quic::{QuicBenchArgs, run_against_broker};
use super::{MB, Table, thousands};

#[derive(Debug, Clone, clap::Args)]
pub struct FnBenchArgs {
    #[command(flatten)]
    pub common: QuicBenchArgs,
    /// Repetitions of the filter comparison (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Orders for the handler benchmark.
    #[arg(long, default_value_t = 200_000)]
    pub handler_messages: u64,
    /// Messages for the transform benchmark.
    #[arg(long, default_value_t = 200_000)]
    pub transform_messages: u64,
    /// Size of each transform input message, in bytes.
    #[arg(long, default_value_t = 1000)]
    pub transform_size: usize,
}

#[derive(Debug, Serialize)]
pub struct FnFigures {
    pub messages: u64,
    pub message_size: usize,
    pub partitions: u32,
    pub unfiltered_msgs_per_sec: Vec<f64>,
    pub filtered_msgs_per_sec: Vec<f64>,
    pub unfiltered_median: f64,
    pub filtered_median: f64,
    /// Throughput drop with the filter (target: at most 0.20).
    pub filter_drop: f64,
    pub handler_messages: u64,
    pub handler_msgs_per_sec: f64,
    pub transform_messages: u64,
    pub transform_message_size: usize,
    pub transform_msgs_per_sec: f64,
    pub transform_mb_per_sec: f64,
}

pub fn run(args: FnBenchArgs) -> anyhow::Result<()> {
    run_against_broker(&args.common, |config| measure(&args, config), print)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn measure(args: &FnBenchArgs, config: ClientConfig) -> anyhow::Result<FnFigures> {
    let c = &args.common;
    let admin = Client::connect(config.clone()).await?;
    let run = std::process::id();
    let durability = [("durability", c.durability.as_str())];

    // 1. Filter.
    let topic = format!("bench-fn-{run}");
    admin
        .create_topic(&topic, c.partitions, &durability)
        .await?;
    let value = vec![b'x'; c.message_size];
    fill(&admin, &topic, c.partitions, c.messages, |_| {
        Message::new(&topic, value.clone()).tag("bench")
    })
    .await?;
    let (mut plain, mut filtered) = (Vec::new(), Vec::new());
    for rep in 0..args.reps {
        let group = format!("bench-fn-plain-{run}-{rep}");
        let (secs, _) = group_read(&admin, &config, &topic, &group, 1, c.messages, 16384).await?;
        plain.push(c.messages as f64 / secs);
        admin.delete_group(&group).await.ok();

        let group = format!("bench-fn-filtered-{run}-{rep}");
        let name = format!("bench-filter-{rep}");
        admin
            .deploy_function(
                FunctionManifest::filter(&name, &group).config("tags", "bench"),
                Bytes::from_static(embedded::TAG_FILTER),
            )
            .await?;
        let (secs, _) = group_read(&admin, &config, &topic, &group, 1, c.messages, 16384).await?;
        filtered.push(c.messages as f64 / secs);
        let f = admin.describe_function(&name).await?;
        anyhow::ensure!(
            f.metrics.messages >= c.messages,
            "the filter saw {} of {} messages",
            f.metrics.messages,
            c.messages
        );
        admin.delete_function(&name).await?;
        admin.delete_group(&group).await.ok();
    }

    // 2. Handler.
    let orders = format!("bench-fn-orders-{run}");
    admin
        .create_topic(&orders, c.partitions, &durability)
        .await?;
    fill(&admin, &orders, c.partitions, args.handler_messages, |i| {
        Message::new(
            &orders,
            format!(r#"{{"customer":"c{}","amount":{}.5}}"#, i % 1000, i % 97),
        )
    })
    .await?;
    let group = format!("bench-fn-totals-{run}");
    let started = Instant::now();
    admin
        .deploy_function(
            FunctionManifest::handler(
                "bench-totals",
                &group,
                GroupSettings {
                    topic: orders.clone(),
                    start: OffsetSpec::Earliest,
                    ..GroupSettings::default()
                },
            )
            .concurrency(c.partitions.min(4)),
            Bytes::from_static(embedded::ORDER_TOTALS),
        )
        .await?;
    wait_until(|| async {
        // Unknown until the handler's members have joined.
        Ok(admin
            .describe_group(&group)
            .await
            .is_ok_and(|d| d.total_lag() == 0 && d.partitions.iter().any(|p| p.committed > 0)))
    })
    .await?;
    let handler_rate = args.handler_messages as f64 / started.elapsed().as_secs_f64();
    admin.delete_function("bench-totals").await?;

    // 3. Transform.
    let input = format!("bench-fn-text-{run}");
    let output = format!("bench-fn-clean-{run}");
    admin
        .create_topic(&input, c.partitions, &durability)
        .await?;
    admin
        .create_topic(&output, c.partitions, &durability)
        .await?;
    let text = pii_text(args.transform_size);
    fill(
        &admin,
        &input,
        c.partitions,
        args.transform_messages,
        |_| Message::new(&input, text.clone()),
    )
    .await?;
    let started = Instant::now();
    admin
        .deploy_function(
            FunctionManifest::transform("bench-redact", &input, [output.as_str()])
                .start(OffsetSpec::Earliest),
            Bytes::from_static(embedded::PII_REDACT),
        )
        .await?;
    wait_until(|| async {
        let d = admin.describe_function("bench-redact").await?;
        Ok(d.positions.len() == c.partitions as usize && d.total_lag() == 0)
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    admin.delete_function("bench-redact").await?;
    for t in [&topic, &orders, &input, &output] {
        admin.delete_topic(t).await.ok();
    }
    admin.close().await;

    let (unfiltered_median, filtered_median) = (median(&plain), median(&filtered));
    let transform_rate = args.transform_messages as f64 / secs;
    Ok(FnFigures {
        messages: c.messages,
        message_size: c.message_size,
        partitions: c.partitions,
        filter_drop: 1.0 - filtered_median / unfiltered_median,
        unfiltered_msgs_per_sec: plain,
        filtered_msgs_per_sec: filtered,
        unfiltered_median,
        filtered_median,
        handler_messages: args.handler_messages,
        handler_msgs_per_sec: handler_rate,
        transform_messages: args.transform_messages,
        transform_message_size: args.transform_size,
        transform_msgs_per_sec: transform_rate,
        transform_mb_per_sec: transform_rate * args.transform_size as f64 / MB,
    })
}

/// Polls `done` every 20 ms for up to ten minutes.
async fn wait_until<F, Fut>(mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "the benchmark did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Produces `total` messages made by `make`, spread over the partitions,
/// in batches of 1000.
async fn fill(
    client: &Client,
    topic: &str,
    partitions: u32,
    total: u64,
    make: impl Fn(u64) -> Message,
) -> anyhow::Result<()> {
    let producer = client
        .producer(ProducerConfig {
            max_batch_bytes: 1 << 20,
            ..ProducerConfig::default()
        })
        .await?;
    let bar = super::progress(total, &format!("fill {topic}"));
    let mut i = 0;
    while i < total {
        let n = (total - i).min(1000);
        let batch: Vec<Message> = (i..i + n)
            .map(|k| make(k).partition(Partitioning::Explicit((k / 1000) as u32 % partitions)))
            .collect();
        for r in producer.send_batch(batch).await {
            r?;
        }
        i += n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Text of `size` bytes with an email address and a phone number in it.
fn pii_text(size: usize) -> String {
    let mut s = String::from("Order note: contact jane.doe@example.com or +44 20 7946 0958. ");
    while s.len() < size {
        s.push_str("The quick brown fox jumps over the lazy dog. ");
    }
    s.truncate(size);
    s
}

fn print(f: &FnFigures) {
    println!(
        "functions: {} messages of {} B on {} partition(s), one push member acking each",
        f.messages, f.message_size, f.partitions
    );
    let mut t = Table::new(&["group consumption", "msgs/s (median)", "runs"]);
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| thousands(*x))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    t.row(vec![
        "no filter".into(),
        thousands(f.unfiltered_median),
        runs(&f.unfiltered_msgs_per_sec),
    ]);
    t.row(vec![
        "tag filter function".into(),
        thousands(f.filtered_median),
        runs(&f.filtered_msgs_per_sec),
    ]);
    print!("{t}");
    println!(
        "filter drop: {:.1}% (target: at most 20%)",
        f.filter_drop * 100.0
    );
    let mut t = Table::new(&["function", "messages", "msgs/s", "MB/s"]);
    t.row(vec![
        "handler (order totals, kv per message)".into(),
        thousands(f.handler_messages as f64),
        thousands(f.handler_msgs_per_sec),
        "-".into(),
    ]);
    t.row(vec![
        format!("transform (PII redaction, {} B)", f.transform_message_size),
        thousands(f.transform_messages as f64),
        thousands(f.transform_msgs_per_sec),
        format!("{:.1}", f.transform_mb_per_sec),
    ]);
    print!("{t}");
}
