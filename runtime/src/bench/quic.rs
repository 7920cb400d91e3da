//! `sluice bench producer|consumer|e2e`: the broker over QUIC, measured the
//! way a client sees it.
//!
//! Unless `--broker` names a running broker, the benchmark starts one as a
//! child process (`sluice dev` on a scratch data dir, port 0), so broker and
//! clients are separate processes as in production, on the same machine.
//!
//! - producer: `--producers` clients, each on its own connection, send
//!   batches of `--batch-size` messages (`send_batch`, one request per
//!   partition) and wait for the durable ack before the next; latency is
//!   per batch, as iggy-bench reports it.
//! - consumer: the topic is filled first, then `--consumers` clients read
//!   all of it from the start; latency is per poll.
//! - e2e: producers send at a fixed total `--rate` (0 = as fast as they
//!   can, in batches) while consumers long-poll; latency is from the send
//!   call to the consumer receiving the message (the timestamp travels in
//!   the message, same clock).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use sluice_client::{
    Client, ClientConfig, ConsumerConfig, Message, Partitioning, ProducerConfig, SeekTo,
};

use super::{MB, Table, WorkDir, thousands};

/// Which side of the broker to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Producer,
    Consumer,
    E2e,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QuicBenchArgs {
    /// A running broker (`host:port`); default: start one as a child process.
    #[arg(long)]
    pub broker: Option<String>,
    /// CA file for `--broker` (the child's own certificate otherwise).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub token: String,
    /// Bytes of each message value.
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Messages per producer request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Total messages to send (producer, consumer; e2e with --rate 0).
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Stop after this many seconds even if messages remain (e2e at a rate: its length).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Topic durability: sync, none, interval:<ms>.
    #[arg(long, default_value = "sync")]
    pub durability: String,
    /// e2e: total messages per second across producers (0 = unlimited, batched).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Scratch directory for the child broker's data (removed at the end).
    #[arg(long, default_value = "sluice-bench-data")]
    pub dir: PathBuf,
    /// Also write the figures to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The figures of one run, as `--json` writes them.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub scenario: Scenario,
    pub message_size: usize,
    pub batch_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub partitions: u32,
    pub durability: String,
    pub messages: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    /// What the latency is of: "batch" (producer), "poll" (consumer), "message" (e2e).
    pub latency_of: &'static str,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub latency_max_ms: f64,
}

pub fn run(scenario: Scenario, args: QuicBenchArgs) -> anyhow::Result<()> {
    run_against_broker(&args, |config| measure(scenario, &args, config), print)
}

/// Starts the broker `args` name (or a child broker), runs `measure`
/// against it, stops it, then prints the figures and writes them to
/// `--json`: the frame of every benchmark over QUIC.
pub(crate) fn run_against_broker<T, Fut>(
    args: &QuicBenchArgs,
    measure: impl FnOnce(ClientConfig) -> Fut,
    print: fn(&T),
) -> anyhow::Result<()>
where
    T: serde::Serialize,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let work = WorkDir::new(&args.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (config, child) = start_broker(args, &work)?;
    let result = runtime.block_on(measure(config));
    stop_broker(child);
    let figures = result?;
    print(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The broker to measure: `--broker`, or a `sluice dev` child process on a
/// scratch data dir.
pub(crate) fn start_broker(
    args: &QuicBenchArgs,
    work: &WorkDir,
) -> anyhow::Result<(ClientConfig, Option<std::process::Child>)> {
    Ok(match &args.broker {
        Some(addr) => {
            let ca = args
                .ca_cert
                .clone()
                .context("--broker needs --ca-cert (the broker's certificate or CA)")?;
            (
                ClientConfig::new(addr.clone())
                    .ca_cert(ca)
                    .token(args.token.clone()),
                None,
            )
        }
        None => {
            let (c, addr) = sluice_broker::node::spawn_dev_process(
                &std::env::current_exe()?,
                &work.path().join("broker"),
            )?;
            (
                ClientConfig::new(addr).ca_cert(work.path().join("broker/tls/cert.pem")),
                Some(c),
            )
        }
    })
}

/// Stops a child broker started by [`start_broker`] (SIGTERM: a clean stop).
pub(crate) fn stop_broker(child: Option<std::process::Child>) {
    if let Some(mut c) = child {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn measure(
    scenario: Scenario,
    args: &QuicBenchArgs,
    config: ClientConfig,
) -> anyhow::Result<Figures> {
    let admin = Client::connect(config.clone()).await?;
    let topic = format!("bench-{}", std::process::id());
    admin
        .create_topic(
            &topic,
            args.partitions,
            &[("durability", args.durability.as_str())],
        )
        .await?;
    let (count, elapsed, hist, latency_of) = match scenario {
        Scenario::Producer => {
            let (n, t, h) = produce(args, &config, &topic, args.messages, None).await?;
            (n, t, h, "batch")
        }
        Scenario::Consumer => {
            produce(args, &config, &topic, args.messages, None).await?;
            let (n, t, h) = consume(
                args,
                &config,
                &topic,
                Arc::new(AtomicU64::new(args.messages)),
                false,
            )
            .await?;
            (n, t, h, "poll")
        }
        Scenario::E2e => {
            let total = if args.rate == 0 {
                args.messages
            } else {
                (args.rate as f64 * args.seconds) as u64
            };
            // Consumers stop once they have what the producers sent.
            let target = Arc::new(AtomicU64::new(u64::MAX));
            let consumers = {
                let (args_c, config_c, topic_c, target_c) =
                    (args.clone(), config.clone(), topic.clone(), target.clone());
                tokio::spawn(
                    async move { consume(&args_c, &config_c, &topic_c, target_c, true).await },
                )
            };
            let rate = (args.rate > 0).then_some(args.rate);
            let (sent, produce_time, _) = produce(args, &config, &topic, total, rate).await?;
            target.store(sent, Ordering::Release);
            let (received, _, hist) = consumers.await??;
            if received < sent {
                eprintln!("warning: {sent} sent but {received} received before the deadline");
            }
            (received, produce_time, hist, "message")
        }
    };
    admin.delete_topic(&topic).await.ok();
    admin.close().await;
    let secs = elapsed.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Figures {
        scenario,
        message_size: args.message_size,
        batch_size: args.batch_size,
        producers: args.producers,
        consumers: args.consumers,
        partitions: args.partitions,
        durability: args.durability.clone(),
        messages: count,
        seconds: secs,
        msgs_per_sec: count as f64 / secs,
        mb_per_sec: count as f64 * args.message_size as f64 / MB / secs,
        latency_of,
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_p999_ms: ms(0.999),
        latency_max_ms: hist.max() as f64 / 1000.0,
    })
}

/// Runs the producers until `total` messages are acknowledged (or the time
/// is up). With a `rate`, messages are sent one by one on a schedule;
/// otherwise in batches of `batch_size`, each awaited.
pub(crate) async fn produce(
    args: &QuicBenchArgs,
    config: &ClientConfig,
    topic: &str,
    total: u64,
    rate: Option<u64>,
) -> anyhow::Result<(u64, Duration, Histogram<u64>)> {
    let sent = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(histogram()));
    let bar = super::progress(total, "produce");
    let deadline = Instant::now()
        + Duration::from_secs_f64(args.seconds.max(0.1) * if rate.is_some() { 1.0 } else { 3.0 });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let client = Client::connect(config.clone()).await?;
        let producer = client
            .producer(ProducerConfig {
                max_batch_bytes: (args.batch_size * (args.message_size + 64)).max(1 << 16),
                ..ProducerConfig::default()
            })
            .await?;
        let share =
            total / args.producers as u64 + u64::from((p as u64) < total % args.producers as u64);
        let partition = p as u32 % args.partitions;
        let (topic, sent, hist, bar) = (topic.to_owned(), sent.clone(), hist.clone(), bar.clone());
        let (batch_size, size) = (args.batch_size.max(1), args.message_size);
        let per_producer_rate = rate.map(|r| (r as f64 / args.producers as f64).max(1.0));
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![b'x'; size]);
            let mut local = histogram();
            let mut done = 0u64;
            let start = Instant::now();
            while done < share && Instant::now() < deadline {
                if let Some(r) = per_producer_rate {
                    // Open-loop schedule: message k goes at start + k / rate.
                    let due = start + Duration::from_secs_f64(done as f64 / r);
                    tokio::time::sleep_until(due.into()).await;
                    let mut value = payload.to_vec();
                    value[..8.min(size)]
                        .copy_from_slice(&now_micros().to_be_bytes()[..8.min(size)]);
                    let msg = Message::new(topic.clone(), value)
                        .partition(Partitioning::Explicit(partition));
                    let fut = producer.send_async(msg).await?;
                    tokio::spawn(fut);
                    done += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                    continue;
                }
                let n = (share - done).min(batch_size as u64) as usize;
                let stamp = now_micros().to_be_bytes();
                let msgs: Vec<Message> = (0..n)
                    .map(|_| {
                        let mut value = payload.clone();
                        if size >= 8 {
                            let mut v = value.to_vec();
                            v[..8].copy_from_slice(&stamp);
                            value = v.into();
                        }
                        Message::new(topic.clone(), value)
                            .partition(Partitioning::Explicit(partition))
                    })
                    .collect();
                let t = Instant::now();
                for r in producer.send_batch(msgs).await {
                    r?;
                }
                local.saturating_record(t.elapsed().as_micros() as u64);
                done += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
                bar.inc(n as u64);
            }
            producer.flush().await;
            hist.lock().add(&local).ok();
            client.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    let hist = Arc::try_unwrap(hist)
        .map(Mutex::into_inner)
        .unwrap_or_else(|h| h.lock().clone());
    Ok((sent.load(Ordering::Relaxed), started.elapsed(), hist))
}

/// Reads `total` messages from all partitions with `consumers` clients
/// (partitions dealt round robin). With `e2e`, records send-to-receive
/// latency per message; otherwise latency per poll.
pub(crate) async fn consume(
    args: &QuicBenchArgs,
    config: &ClientConfig,
    topic: &str,
    target: Arc<AtomicU64>,
    e2e: bool,
) -> anyhow::Result<(u64, Duration, Histogram<u64>)> {
    let received = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(histogram()));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds.max(0.1) * 3.0 + 5.0);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let consumers = args.consumers.clamp(1, args.partitions as usize);
    for c in 0..consumers {
        let client = Client::connect(config.clone()).await?;
        let mut consumer = client.consumer(ConsumerConfig {
            max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        });
        let mine: Vec<u32> = (0..args.partitions)
            .filter(|p| *p as usize % consumers == c)
            .collect();
        consumer.assign(topic, &mine, SeekTo::Earliest).await?;
        let (received, finished, hist, target) = (
            received.clone(),
            finished.clone(),
            hist.clone(),
            target.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = histogram();
            while !finished.load(Ordering::Relaxed) && Instant::now() < deadline {
                let t = Instant::now();
                let batch = consumer.poll().await?;
                if e2e {
                    let now = now_micros();
                    for m in &batch {
                        if m.value.len() >= 8 {
                            let sent =
                                u64::from_be_bytes(m.value[..8].try_into().unwrap_or_default());
                            local.saturating_record(now.saturating_sub(sent).max(1));
                        }
                    }
                } else if !batch.is_empty() {
                    local.saturating_record(t.elapsed().as_micros() as u64);
                }
                // The target is known only once e2e producers are done.
                let so_far =
                    received.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
                if so_far >= target.load(Ordering::Acquire) {
                    finished.store(true, Ordering::Relaxed);
                }
            }
            hist.lock().add(&local).ok();
            client.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let hist = Arc::try_unwrap(hist)
        .map(Mutex::into_inner)
        .unwrap_or_else(|h| h.lock().clone());
    Ok((received.load(Ordering::Relaxed), started.elapsed(), hist))
}

fn print(f: &Figures) {
    println!(
        "{:?}: {} B messages, batch {}, {} producer(s), {} consumer(s), {} partition(s), durability {}",
        f.scenario,
        f.message_size,
        f.batch_size,
        f.producers,
        f.consumers,
        f.partitions,
        f.durability
    );
    let mut t = Table::new(&["figure", "value"]);
    t.row(vec!["messages".into(), thousands(f.messages as f64)]);
    t.row(vec!["seconds".into(), format!("{:.2}", f.seconds)]);
    t.row(vec!["msgs/s".into(), thousands(f.msgs_per_sec)]);
    t.row(vec!["MB/s".into(), format!("{:.1}", f.mb_per_sec)]);
    for (name, ms) in [
        ("p50", f.latency_p50_ms),
        ("p99", f.latency_p99_ms),
        ("p999", f.latency_p999_ms),
        ("max", f.latency_max_ms),
    ] {
        t.row(vec![
            format!("{name} latency per {} (ms)", f.latency_of),
            format!("{ms:.3}"),
        ]);
    }
    print!("{t}");
}
