//! The broker as a child process (`sluice dev` on a data dir), for the
//! tests that SIGKILL it and start it again on the same data.

use std::path::Path;
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use sluice_client::{Client, ClientConfig};

/// The `sluice` binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Starts `sluice dev` on `data` (listening on 127.0.0.1:0) and returns it
/// with the address it bound.
pub fn start(data: &Path) -> (Child, String) {
    sluice_broker::node::spawn_dev_process(exe(), data).unwrap()
}

/// Like [`start`] on `listen`, so a restarted broker comes back where its
/// clients reconnect.
pub fn start_on(data: &Path, listen: &str) -> (Child, String) {
    let (child, addr, _lines) =
        sluice_broker::node::spawn_dev_process_on(exe(), data, listen, &[]).unwrap();
    (child, addr)
}

/// Like [`start`] with extra environment variables, also returning the
/// lines the broker prints once it is ready.
pub fn start_with_env(data: &Path, env: &[(&str, &str)]) -> (Child, String, Receiver<String>) {
    sluice_broker::node::spawn_dev_process_with_env(exe(), data, env).unwrap()
}

/// How a client reaches the child broker on `data` at `addr`: the CA is
/// the certificate the broker wrote into its data dir.
pub fn client_config(addr: &str, data: &Path, client_id: &str) -> ClientConfig {
    ClientConfig::new(addr)
        .ca_cert(data.join("tls/cert.pem"))
        .client_id(client_id)
}

/// Like [`client_config`], with reconnects to a killed broker giving up
/// after `connect_timeout`.
pub fn impatient_config(
    addr: &str,
    data: &Path,
    client_id: &str,
    connect_timeout: Duration,
) -> ClientConfig {
    ClientConfig {
        connect_timeout,
        ..client_config(addr, data, client_id)
    }
}

/// A broker child process on a data dir, SIGKILLed when dropped (so a
/// failing test leaves none behind).
pub struct KilledOnDrop(pub Child);

impl KilledOnDrop {
    /// Starts one on `data` and connects a client named `client_id` to it.
    pub async fn start(data: &Path, client_id: &str) -> (KilledOnDrop, Client) {
        let (child, addr) = start(data);
        let child = KilledOnDrop(child);
        let client = Client::connect(client_config(&addr, data, client_id))
            .await
            .unwrap();
        (child, client)
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
