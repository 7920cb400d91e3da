//! A running broker: storage, dispatch and the QUIC listener started
//! together from a [`BrokerConfig`]. Used by `sluice dev`, `sluice serve`,
//! the integration tests and `sluice bench`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::broker::{Broker, BrokerSettings};
use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::log::LogOptions;
use crate::net::server::{Server, ServerLimits};
use crate::net::tls::Identity;
use crate::sched::{Scheduler, SchedulerOptions};
use crate::store::{Store, StoreError};

/// Starts `exe dev` (the `sluice` binary) as a child process listening on
/// 127.0.0.1:0 with data in `data`, and returns it with the address it bound
/// once it says it is running. Its stdout is drained on a thread, so the
/// child never blocks on (or dies writing to) a full or closed pipe. Used by
/// the benchmarks and the crash tests, which need the broker in its own
/// process.
pub fn spawn_dev_process(exe: &Path, data: &Path) -> anyhow::Result<(Child, String)> {
    let (child, addr, _lines) = spawn_dev_process_with_env(exe, data, &[])?;
    Ok((child, addr))
}

/// Like [`spawn_dev_process`] with extra environment variables, also
/// returning the lines the broker prints after it is ready (the crash tests
/// wait for `SLUICE_CRASH_POINT` announcements there).
pub fn spawn_dev_process_with_env(
    exe: &Path,
    data: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, String, std::sync::mpsc::Receiver<String>)> {
    spawn_dev_process_on(exe, data, "127.0.0.1:0", env)
}

/// Like [`spawn_dev_process_with_env`] on a given listen address, so a
/// restarted broker comes back where its clients reconnect (the kill-loop
/// crash tests).
pub fn spawn_dev_process_on(
    exe: &Path,
    data: &Path,
    listen: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, String, std::sync::mpsc::Receiver<String>)> {
    let mut child = Command::new(exe)
        .args(["dev", "--listen", listen, "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the broker")?;
    let stdout = child.stdout.take().context("broker stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("Sluice is running on ") {
            let addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    // Keep draining even when nobody listens any more.
                    let _ = tx.send(line);
                }
            });
            return Ok((child, addr, rx));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    anyhow::bail!("the broker exited before it was ready")
}

#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    cert_path: PathBuf,
    broker: Arc<Broker>,
    server: JoinHandle<Result<(), StoreError>>,
}

impl Node {
    /// Opens the data directory and starts listening. Without a configured
    /// certificate it uses (generating once) the self-signed dev pair.
    pub async fn start(config: &BrokerConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Node> {
        let settings = BrokerSettings::from_config(config)?;
        let identity = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Identity::load(cert, key)?,
            _ => Identity::dev(&config.data_dir)?,
        };
        let cert_path = identity.cert_path.clone();
        let data_dir = config.data_dir.clone();
        let sched_options = SchedulerOptions {
            max_horizon_ms: config.scheduler.max_horizon_ms,
            max_message_bytes: config.limits.max_message_bytes as usize,
            ..SchedulerOptions::default()
        };
        let broker_clock = clock.clone();
        let (store, scheduler) = tokio::task::spawn_blocking(move || {
            let store = Arc::new(Store::open(
                &data_dir,
                LogOptions::default(),
                clock.clone(),
                &crate::keyspaces(),
            )?);
            let scheduler = Scheduler::open(store.clone(), clock, sched_options)?;
            anyhow::Ok((store, Arc::new(scheduler)))
        })
        .await?
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
        let broker = Arc::new(Broker::new(
            store,
            scheduler.clone(),
            broker_clock,
            settings,
        ));
        tokio::spawn(scheduler.run(broker.shutdown_token().clone()));
        tokio::spawn(broker.groups().clone().run(broker.shutdown_token().clone()));
        broker.functions().start().await;
        let limits = ServerLimits {
            max_connections: config.limits.max_connections,
            max_streams_per_connection: config.limits.max_streams_per_connection,
            max_frame_bytes: config.limits.max_frame_bytes,
            max_in_flight_per_connection: config.limits.max_in_flight_per_connection,
            idle_timeout: Duration::from_millis(config.limits.idle_timeout_ms),
            ..ServerLimits::default()
        };
        let server = Server::bind(config.listen, identity, broker.clone(), limits)?;
        let addr = server.local_addr();
        let server = tokio::spawn(server.run());
        Ok(Node {
            addr,
            cert_path,
            broker,
            server,
        })
    }

    /// Where the listener is bound (the real port when configured with 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate clients should trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Graceful shutdown: stop accepting, finish in-flight requests, close
    /// connections, flush and checkpoint the log.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.broker.shutdown_token().cancel();
        self.server.await??;
        Ok(())
    }
}
