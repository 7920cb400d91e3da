//! `sluice bench group`: consumer groups with per-message acks, against
//! plain fetch in the same run, and push latency end to end.
//!
//! 1. A topic is filled with `--messages` messages.
//! 2. Plain fetch: one consumer reads all of it (`sluice bench consumer`'s
//!    reader) — the reference.
//! 3. For each count in `--members`: a fresh group of that many members
//!    (push subscriptions) reads all of it from the start, acking every
//!    message on its own. The time runs until the broker reports the
//!    group's lag as 0, so every ack has been applied.
//! 4. Push end to end: one member subscribed while producers send at
//!    `--rate` messages/s for `--seconds`; latency is from the send call to
//!    the member receiving the message (same clock), every message acked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use sluice_client::{Client, ClientConfig, GroupConfig, OffsetSpec};

use super::quic::{QuicBenchArgs, consume, histogram, now_micros, produce, run_against_broker};
use super::{MB, Table, thousands};

#[derive(Debug, Clone, clap::Args)]
pub struct GroupBenchArgs {
    #[command(flatten)]
    pub common: QuicBenchArgs,
    /// Group sizes to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub members: Vec<usize>,
    /// Credit window of each push subscription (messages).
    #[arg(long, default_value_t = 16384)]
    pub credit: u32,
}

#[derive(Debug, Serialize)]
pub struct GroupFigures {
    pub messages: u64,
    pub message_size: usize,
    pub partitions: u32,
    pub plain_fetch_msgs_per_sec: f64,
    pub groups: Vec<GroupRun>,
    pub push_rate: u64,
    pub push_messages: u64,
    pub push_p50_ms: f64,
    pub push_p99_ms: f64,
    pub push_p999_ms: f64,
    pub push_max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct GroupRun {
    pub members: usize,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    /// Against plain fetch in the same run.
    pub ratio: f64,
    /// Deliveries beyond one per message (at-least-once redeliveries).
    pub redelivered: u64,
}

pub fn run(args: GroupBenchArgs) -> anyhow::Result<()> {
    run_against_broker(&args.common, |config| measure(&args, config), print)
}

async fn measure(args: &GroupBenchArgs, config: ClientConfig) -> anyhow::Result<GroupFigures> {
    let c = &args.common;
    let admin = Client::connect(config.clone()).await?;
    let topic = format!("bench-group-{}", std::process::id());
    admin
        .create_topic(
            &topic,
            c.partitions,
            &[("durability", c.durability.as_str())],
        )
        .await?;
    let (filled, _, _) = produce(c, &config, &topic, c.messages, None).await?;

    let plain_args = QuicBenchArgs {
        consumers: 1,
        ..c.clone()
    };
    let (read, elapsed, _) = consume(
        &plain_args,
        &config,
        &topic,
        Arc::new(AtomicU64::new(filled)),
        false,
    )
    .await?;
    let plain = read as f64 / elapsed.as_secs_f64();

    let mut groups = Vec::new();
    for &members in &args.members {
        let group = format!("bench-{}-{members}", std::process::id());
        let (secs, delivered) = group_read(
            &admin,
            &config,
            &topic,
            &group,
            members,
            filled,
            args.credit,
        )
        .await?;
        let rate = filled as f64 / secs;
        groups.push(GroupRun {
            members,
            msgs_per_sec: rate,
            mb_per_sec: rate * c.message_size as f64 / MB,
            ratio: rate / plain,
            redelivered: delivered.saturating_sub(filled),
        });
        admin.delete_group(&group).await.ok();
    }

    let (push_messages, hist) = push_latency(args, &config, &topic).await?;
    admin.delete_topic(&topic).await.ok();
    admin.close().await;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(GroupFigures {
        messages: filled,
        message_size: c.message_size,
        partitions: c.partitions,
        plain_fetch_msgs_per_sec: plain,
        groups,
        push_rate: c.rate,
        push_messages,
        push_p50_ms: ms(0.5),
        push_p99_ms: ms(0.99),
        push_p999_ms: ms(0.999),
        push_max_ms: hist.max() as f64 / 1000.0,
    })
}

/// Reads `total` messages with a group of `members` push subscribers,
/// acking each; returns the seconds until the broker reports no lag, and
/// how many deliveries there were.
pub(crate) async fn group_read(
    admin: &Client,
    config: &ClientConfig,
    topic: &str,
    group: &str,
    members: usize,
    total: u64,
    credit: u32,
) -> anyhow::Result<(f64, u64)> {
    let delivered = Arc::new(AtomicU64::new(0));
    let done = tokio_util::sync::CancellationToken::new();
    let bar = super::progress(total, &format!("{members} member(s)"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..members {
        let client = Client::connect(config.clone()).await?;
        let consumer = client
            .group_consumer(
                GroupConfig::new(group, topic)
                    .start(OffsetSpec::Earliest)
                    .credit_window(credit),
            )
            .await?;
        let (delivered, done, bar) = (delivered.clone(), done.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = consumer.subscribe();
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    next = stream.next() => match next {
                        Some(m) => {
                            m?.ack();
                            delivered.fetch_add(1, Ordering::Relaxed);
                            bar.inc(1);
                        }
                        None => break,
                    },
                }
            }
            stream.leave().await?;
            client.close().await;
            anyhow::Ok(())
        }));
    }
    // Done when every ack has been applied: the group's lag is 0.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if delivered.load(Ordering::Relaxed) >= total {
            let d = admin.describe_group(group).await?;
            if d.total_lag() == 0 {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "group {group} did not finish");
    }
    let secs = started.elapsed().as_secs_f64();
    done.cancel();
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    Ok((secs, delivered.load(Ordering::Relaxed)))
}

/// One push subscriber while producers send at `--rate`.
async fn push_latency(
    args: &GroupBenchArgs,
    config: &ClientConfig,
    topic: &str,
) -> anyhow::Result<(u64, hdrhistogram::Histogram<u64>)> {
    let c = &args.common;
    let client = Client::connect(config.clone()).await?;
    let group = format!("bench-push-{}", std::process::id());
    let consumer = client
        .group_consumer(
            GroupConfig::new(&group, topic)
                .start(OffsetSpec::Latest)
                .credit_window(args.credit),
        )
        .await?;
    let total = (c.rate as f64 * c.seconds) as u64;
    let received = Arc::new(AtomicU64::new(0));
    let seconds = c.seconds;
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut stream = consumer.subscribe();
            let mut hist = histogram();
            let deadline = Instant::now() + Duration::from_secs_f64(seconds * 2.0 + 30.0);
            while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let next = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
                let Ok(Some(m)) = next else { continue };
                let m = m?;
                let now = now_micros();
                if m.value.len() >= 8 {
                    let sent = u64::from_be_bytes(m.value[..8].try_into().unwrap_or_default());
                    hist.saturating_record(now.saturating_sub(sent).max(1));
                }
                m.ack();
                received.fetch_add(1, Ordering::Relaxed);
            }
            stream.leave().await?;
            anyhow::Ok(hist)
        })
    };
    // Let the subscription open before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rate = (c.rate > 0).then_some(c.rate);
    produce(c, config, topic, total, rate).await?;
    let hist = reader.await??;
    client.close().await;
    Ok((received.load(Ordering::Relaxed), hist))
}

fn print(f: &GroupFigures) {
    println!(
        "group: {} messages of {} B on {} partition(s); per-message acks",
        f.messages, f.message_size, f.partitions
    );
    let mut t = Table::new(&["consumption", "msgs/s", "vs plain fetch", "redelivered"]);
    t.row(vec![
        "plain fetch (1 consumer)".into(),
        thousands(f.plain_fetch_msgs_per_sec),
        "1.00".into(),
        "-".into(),
    ]);
    for g in &f.groups {
        t.row(vec![
            format!("group, {} member(s), acks", g.members),
            thousands(g.msgs_per_sec),
            format!("{:.2}", g.ratio),
            g.redelivered.to_string(),
        ]);
    }
    print!("{t}");
    let mut t = Table::new(&["push end to end", "value"]);
    t.row(vec!["rate (msgs/s)".into(), thousands(f.push_rate as f64)]);
    t.row(vec!["messages".into(), thousands(f.push_messages as f64)]);
    for (name, v) in [
        ("p50 (ms)", f.push_p50_ms),
        ("p99 (ms)", f.push_p99_ms),
        ("p999 (ms)", f.push_p999_ms),
        ("max (ms)", f.push_max_ms),
    ] {
        t.row(vec![name.into(), format!("{v:.3}")]);
    }
    print!("{t}");
}
