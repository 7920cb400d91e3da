//! A real broker started in process on 127.0.0.1:0 with a temp data dir:
//! [`Broker`] on a runtime of its own (for `#[test]`s and the `sluice`
//! binary run against it), [`AsyncBroker`] on the test's runtime (for
//! `#[tokio::test]`s).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use sluice_broker::clock::{Clock, SystemClock};
use sluice_broker::config::BrokerConfig;
use sluice_broker::node::Node;
use sluice_client::{Client, ClientConfig};

use super::cli::sluice;

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

/// A broker started in process on the caller's runtime, its data dir the
/// temp dir itself. Dropping it without [`AsyncBroker::stop`] leaves the
/// node to the runtime's shutdown.
pub struct AsyncBroker {
    node: Option<Node>,
    dir: tempfile::TempDir,
}

impl AsyncBroker {
    pub async fn start() -> AsyncBroker {
        AsyncBroker::start_with(|_| {}).await
    }

    /// Like [`AsyncBroker::start`], with `edit` changing the configuration
    /// first (limits, auth).
    pub async fn start_with(edit: impl FnOnce(&mut BrokerConfig)) -> AsyncBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        config.auth.allow_anonymous = true;
        edit(&mut config);
        let node = Node::start(&config, Arc::new(SystemClock)).await.unwrap();
        AsyncBroker {
            node: Some(node),
            dir,
        }
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }

    /// How a client reaches it (client id `test`).
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.node().addr().to_string())
            .ca_cert(self.node().cert_path())
            .client_id("test")
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.client_config()).await.unwrap()
    }

    /// Another client, named `client_id`.
    pub async fn connect(&self, client_id: &str) -> Client {
        Client::connect(self.client_config().client_id(client_id))
            .await
            .unwrap()
    }

    /// Stops the broker gracefully; returns the data dir (still on disk).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.node.take().unwrap().shutdown().await.unwrap();
        self.dir
    }
}
