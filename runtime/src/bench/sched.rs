//! `sluice bench sched`: the scheduler of delayed messages, measured against
//! a broker started in this process (so its dispatch counters and restart
//! time can be read), with clients over QUIC.
//!
//! 1. **schedule rate**: `--pending` messages due in an hour, sent by
//!    `--concurrency` tasks in requests of `--batch-size`; the rate is the
//!    median over five equal slices. They stay pending for what follows.
//! 2. **lateness with that backlog**: `--lateness-messages` due evenly over
//!    `--lateness-seconds`; a consumer checks each message against its
//!    `sluice.due-at` header. Lateness is dispatch time − due time (the
//!    scheduler's own histogram) and, end to end, consumer receive time −
//!    due time. Any message early by even 1 ms is counted.
//! 3. **burst**: `--burst` messages all due in the same second; the time
//!    from that second until the last is appended.
//! 4. **restart**: stop the broker with everything still pending, start
//!    it again, and time until it answers a list request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_client::{Client, ClientConfig, ConsumerConfig, SeekTo};
use sluice_protocol::ops::{
    DelayedRecord, ListDelaysRequest, ScheduleEntry, ScheduleRequest, When,
};

use super::{Table, WorkDir, median, thousands, verdict};
use sluice_broker::clock::{Clock, SystemClock};
use sluice_broker::config::BrokerConfig;
use sluice_broker::node::Node;

#[derive(Debug, Clone, clap::Args)]
pub struct SchedBenchArgs {
    /// Messages left pending (due in an hour) for the whole run.
    #[arg(long, default_value_t = 1_000_000)]
    pub pending: u64,
    /// Messages in the lateness run.
    #[arg(long, default_value_t = 20_000)]
    pub lateness_messages: u64,
    /// Seconds the lateness run's due times spread over.
    #[arg(long, default_value_t = 10)]
    pub lateness_seconds: u64,
    /// Messages due in the same second for the burst run.
    #[arg(long, default_value_t = 1_000_000)]
    pub burst: u64,
    /// Concurrent scheduling tasks (one connection each).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Messages per schedule request.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Bytes of each message value.
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Scratch directory for the broker's data (removed at the end).
    #[arg(long, default_value = "sluice-bench-data")]
    pub dir: PathBuf,
    /// Also write the figures to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct SchedFigures {
    pub pending: u64,
    pub schedules_per_sec: f64,
    pub lateness_messages: u64,
    pub dispatch_lateness_p50_ms: f64,
    pub dispatch_lateness_p99_ms: f64,
    pub dispatch_lateness_max_ms: f64,
    pub e2e_lateness_p50_ms: f64,
    pub e2e_lateness_p99_ms: f64,
    pub e2e_lateness_max_ms: f64,
    pub early: u64,
    pub burst: u64,
    pub burst_drain_seconds: f64,
    pub dispatch_per_sec: f64,
    pub restart_ready_seconds: f64,
}

pub fn run(args: SchedBenchArgs) -> anyhow::Result<()> {
    let work = WorkDir::new(&args.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(measure(&args, work.path().join("broker")))?;
    print(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn broker_config(data: PathBuf) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        data_dir: data,
        ..BrokerConfig::default()
    };
    config.auth.allow_anonymous = true;
    config
}

async fn connect(node: &Node) -> anyhow::Result<Client> {
    Ok(
        Client::connect(ClientConfig::new(node.addr().to_string()).ca_cert(node.cert_path()))
            .await?,
    )
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Schedules `count` messages with due times from `due(i)` using
/// `concurrency` connections; returns the seconds each fifth of them took.
async fn schedule_all(
    node: &Node,
    args: &SchedBenchArgs,
    count: u64,
    due: impl Fn(u64) -> i64 + Send + Sync + 'static,
) -> anyhow::Result<Vec<f64>> {
    let due = Arc::new(due);
    let value = Bytes::from(vec![b'x'; args.message_size]);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let slices = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = connect(node).await?;
        let (due, value, next, done, slices) = (
            due.clone(),
            value.clone(),
            next.clone(),
            done.clone(),
            slices.clone(),
        );
        let (batch, partitions) = (args.batch_size as u64, args.partitions);
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if from >= count {
                    break;
                }
                let to = (from + batch).min(count);
                let entries = (from..to)
                    .map(|i| ScheduleEntry {
                        topic: "bench".into(),
                        partition: (i % u64::from(partitions)) as u32,
                        when: When::At(due(i)),
                        repeat: None,
                        record: DelayedRecord::with_value(value.clone()),
                    })
                    .collect();
                let response = client
                    .connection()
                    .request(&ScheduleRequest { entries })
                    .await?;
                if let Some(bad) = response
                    .results
                    .iter()
                    .find(|r| r.error != sluice_protocol::ErrorCode::None)
                {
                    anyhow::bail!("schedule failed: {}", bad.message);
                }
                let before = done.fetch_add(to - from, std::sync::atomic::Ordering::Relaxed);
                let fifth = count.div_ceil(5);
                if (before + to - from) / fifth > before / fifth {
                    slices.lock().push(start.elapsed().as_secs_f64());
                }
            }
            client.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut marks = slices.lock().clone();
    marks.sort_by(f64::total_cmp);
    let mut prev = 0.0;
    Ok(marks
        .into_iter()
        .map(|m| {
            let d = m - prev;
            prev = m;
            d
        })
        .collect())
}

/// Messages the node's scheduler has dispatched so far.
fn dispatched(node: &Node) -> u64 {
    node.broker()
        .scheduler()
        .stats()
        .dispatched
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

async fn wait_dispatched(node: &Node, target: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while dispatched(node) < target {
        anyhow::ensure!(Instant::now() < deadline, "dispatch did not finish in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn measure(args: &SchedBenchArgs, data: PathBuf) -> anyhow::Result<SchedFigures> {
    let mut f = SchedFigures {
        pending: args.pending,
        lateness_messages: args.lateness_messages,
        burst: args.burst,
        ..SchedFigures::default()
    };
    let node = Node::start(&broker_config(data.clone()), Arc::new(SystemClock)).await?;
    let client = connect(&node).await?;
    client
        .create_topic("bench", args.partitions, &[])
        .await
        .context("creating the bench topic")?;

    // 1. Schedule rate, leaving the backlog pending.
    eprintln!("scheduling {} messages due in an hour…", args.pending);
    let base = now_ms() + 3_600_000;
    let slices = schedule_all(&node, args, args.pending, move |i| {
        base + (i % 600_000) as i64
    })
    .await?;
    let per_slice = args.pending.div_ceil(5) as f64;
    f.schedules_per_sec = median(slices.iter().map(|s| per_slice / s).collect());

    // 2. Lateness with the backlog pending.
    eprintln!(
        "lateness: {} messages over {} s…",
        args.lateness_messages, args.lateness_seconds
    );
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    });
    consumer.assign("bench", &[], SeekTo::Latest).await?;
    let first = now_ms() + 1000;
    let spread = args.lateness_seconds as i64 * 1000;
    let n = args.lateness_messages;
    let dispatched_before = dispatched(&node);
    *node.broker().scheduler().stats().lateness_ms.lock() = None;
    schedule_all(&node, args, n, move |i| {
        first + (i as i64 * spread) / n as i64
    })
    .await?;
    let mut e2e = Histogram::<u64>::new(3)?;
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(args.lateness_seconds + 60);
    while received < n && Instant::now() < deadline {
        for m in consumer.poll().await? {
            let now = now_ms();
            let Some(due) = m.due_at else { continue };
            if m.timestamp < due || now < due {
                f.early += 1;
            }
            e2e.saturating_record((now - due).max(0) as u64);
            received += 1;
        }
    }
    anyhow::ensure!(
        received == n,
        "received {received} of {n} lateness messages"
    );
    wait_dispatched(&node, dispatched_before + n, Duration::from_secs(30)).await?;
    if let Some(h) = node
        .broker()
        .scheduler()
        .stats()
        .lateness_ms
        .lock()
        .as_ref()
    {
        f.dispatch_lateness_p50_ms = ms(h, 0.5);
        f.dispatch_lateness_p99_ms = ms(h, 0.99);
        f.dispatch_lateness_max_ms = h.max() as f64;
    }
    f.e2e_lateness_p50_ms = ms(&e2e, 0.5);
    f.e2e_lateness_p99_ms = ms(&e2e, 0.99);
    f.e2e_lateness_max_ms = e2e.max() as f64;
    drop(consumer);

    // 3. A burst due in the same second.
    eprintln!("burst: {} messages due in the same second…", args.burst);
    let lead_ms = (args.burst as f64 / f.schedules_per_sec.max(1.0) * 3000.0) as i64 + 5000;
    let second = (now_ms() + lead_ms) / 1000 * 1000;
    let dispatched_before = dispatched(&node);
    schedule_all(&node, args, args.burst, move |i| second + (i % 1000) as i64).await?;
    anyhow::ensure!(
        now_ms() < second,
        "scheduling the burst took longer than planned; lower --burst"
    );
    tokio::time::sleep(Duration::from_millis((second - now_ms()).max(0) as u64)).await;
    let started = Instant::now();
    wait_dispatched(
        &node,
        dispatched_before + args.burst,
        Duration::from_secs(120),
    )
    .await?;
    f.burst_drain_seconds = started.elapsed().as_secs_f64();
    f.dispatch_per_sec = args.burst as f64 / f.burst_drain_seconds;
    client.close().await;

    // 4. Restart with the backlog pending.
    eprintln!("restart with {} pending…", args.pending);
    node.shutdown().await?;
    let started = Instant::now();
    let node = Node::start(&broker_config(data), Arc::new(SystemClock)).await?;
    let client = connect(&node).await?;
    let listed = client
        .connection()
        .request(&ListDelaysRequest::default())
        .await?;
    f.restart_ready_seconds = started.elapsed().as_secs_f64();
    let pending: u64 = listed.topics.iter().map(|t| t.pending).sum();
    anyhow::ensure!(
        pending == args.pending,
        "after the restart {pending} pending, expected {}",
        args.pending
    );
    client.close().await;
    node.shutdown().await?;
    Ok(f)
}

fn print(f: &SchedFigures) {
    let mut t = Table::new(&["figure", "value", "target"]);
    t.row(vec![
        format!("schedules/s ({} pending)", thousands(f.pending as f64)),
        thousands(f.schedules_per_sec),
        format!(">= 100,000: {}", verdict(f.schedules_per_sec >= 100_000.0)),
    ]);
    for (name, p50, p99, max) in [
        (
            "dispatch lateness",
            f.dispatch_lateness_p50_ms,
            f.dispatch_lateness_p99_ms,
            f.dispatch_lateness_max_ms,
        ),
        (
            "end-to-end lateness",
            f.e2e_lateness_p50_ms,
            f.e2e_lateness_p99_ms,
            f.e2e_lateness_max_ms,
        ),
    ] {
        t.row(vec![
            format!("{name} p50 (ms)"),
            format!("{p50:.0}"),
            String::new(),
        ]);
        t.row(vec![
            format!("{name} p99 (ms)"),
            format!("{p99:.0}"),
            if name.starts_with("dispatch") {
                format!("< 20: {}", verdict(p99 < 20.0))
            } else {
                String::new()
            },
        ]);
        t.row(vec![
            format!("{name} max (ms)"),
            format!("{max:.0}"),
            String::new(),
        ]);
    }
    t.row(vec![
        "delivered early".into(),
        f.early.to_string(),
        format!("0: {}", verdict(f.early == 0)),
    ]);
    t.row(vec![
        format!("burst of {} drained (s)", thousands(f.burst as f64)),
        format!("{:.2}", f.burst_drain_seconds),
        format!("< 10: {}", verdict(f.burst_drain_seconds < 10.0)),
    ]);
    t.row(vec![
        "dispatches/s in the burst".into(),
        thousands(f.dispatch_per_sec),
        String::new(),
    ]);
    t.row(vec![
        format!("restart with {} pending (s)", thousands(f.pending as f64)),
        format!("{:.3}", f.restart_ready_seconds),
        format!("< 1: {}", verdict(f.restart_ready_seconds < 1.0)),
    ]);
    print!("{t}");
}
