//! What the tests of the client commands share: a real broker started in
//! process on its own runtime, and running the `sluice` binary against it.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use sluice_broker::clock::{Clock, SystemClock};
use sluice_broker::config::BrokerConfig;
use sluice_broker::node::Node;
use sluice_client::{Client, ClientConfig};

/// A broker whose data dir is `<dir>/sluice-data`, so that commands run in
/// `<dir>` find its certificate at the default `./sluice-data/tls/cert.pem`.
pub struct Broker {
    pub rt: tokio::runtime::Runtime,
    node: Option<Node>,
    pub addr: String,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with_clock(Arc::new(SystemClock))
    }

    /// Like [`Broker::start`], with the broker reading time from `clock`
    /// (a `ManualClock` for tests of timeouts).
    pub fn start_with_clock(clock: Arc<dyn Clock>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("sluice-data"),
            ..BrokerConfig::default()
        };
        config.auth.allow_anonymous = true;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let node = rt.block_on(Node::start(&config, clock.clone())).unwrap();
        Broker {
            addr: node.addr().to_string(),
            cert: node.cert_path().to_path_buf(),
            node: Some(node),
            rt,
            dir,
            config,
            clock,
        }
    }

    /// Shuts the broker down gracefully and starts it again on the same
    /// data directory (on a new port).
    pub fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown()).unwrap();
        }
        let node = self
            .rt
            .block_on(Node::start(&self.config, self.clock.clone()))
            .unwrap();
        self.addr = node.addr().to_string();
        self.node = Some(node);
    }

    /// Another client of the broker (call inside `with_client`'s body).
    pub async fn connect(&self, client_id: &str) -> Client {
        let config = ClientConfig::new(self.addr.clone())
            .ca_cert(&self.cert)
            .client_id(client_id);
        Client::connect(config).await.unwrap()
    }

    /// `sluice <args>` run in the broker's directory, reaching it through
    /// SLUICE_BROKER and the default CA path.
    pub fn sluice(&self, args: &[&str]) -> Command {
        let mut cmd = sluice(args);
        cmd.current_dir(self.dir.path())
            .env("SLUICE_BROKER", &self.addr);
        cmd
    }

    /// Runs `body` on the broker's runtime with a client connected to it
    /// (closed afterwards).
    pub fn with_client<T>(&self, body: impl AsyncFnOnce(&Client) -> T) -> T {
        self.rt.block_on(async {
            let config = ClientConfig::new(self.addr.clone())
                .ca_cert(&self.cert)
                .client_id("test");
            let client = Client::connect(config).await.unwrap();
            let out = body(&client).await;
            client.close().await;
            out
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown()).unwrap();
        }
    }
}

/// The binary with a clean environment (no SLUICE_* from the caller).
pub fn sluice(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout of a command that must succeed.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Stdout and stderr of a command that must exit with `code`.
pub fn exits(out: Output, code: i32) -> (String, String) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Stderr of a command that must fail with exit code 1 and print nothing.
pub fn fails(out: Output) -> String {
    let (stdout, stderr) = exits(out, 1);
    assert!(stdout.is_empty(), "stdout: {stdout}\nstderr: {stderr}");
    stderr
}
