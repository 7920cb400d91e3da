//! The client-side commands: `sluice topic`, `sluice produce`, `sluice
//! consume`, `sluice delay`, `sluice group`, `sluice fn`.
//!
//! Each connects to a broker with [`ConnectArgs`] (flags or `SLUICE_*`
//! environment variables), runs on a tokio runtime of its own and reports
//! failures as one `error: ...` line on stderr with a non-zero exit.

pub mod consume;
pub mod delay;
pub mod function;
pub mod group;
pub mod produce;
pub(crate) mod render;
pub mod topic;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sluice_client::{Client, ClientConfig, ClientError};

/// Where `sluice dev` (run from the same directory, default data dir) writes
/// the certificate clients must trust.
pub const DEFAULT_CA_CERT: &str = "./sluice-data/tls/cert.pem";

/// How to reach the broker; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The broker's address.
    #[arg(
        long,
        env = "SLUICE_BROKER",
        default_value = "127.0.0.1:7420",
        value_name = "HOST:PORT"
    )]
    pub broker: String,
    /// PEM file of the CA (or self-signed certificate) the broker's
    /// certificate must chain to. `sluice dev` writes its certificate to
    /// <data-dir>/tls/cert.pem [default: ./sluice-data/tls/cert.pem if it exists]
    #[arg(long, env = "SLUICE_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// Token to authenticate with (empty: anonymous).
    #[arg(
        long,
        env = "SLUICE_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub token: String,
    /// The name the broker's certificate must carry.
    #[arg(long, env = "SLUICE_SERVER_NAME", default_value = "localhost")]
    pub server_name: String,
    /// Client id the broker logs this connection under [default: sluice-cli-<pid>]
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Seconds to wait for the broker to answer the connection attempt.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub connect_timeout: f64,
}

impl ConnectArgs {
    /// The CA file to trust: the one given, or `sluice dev`'s default; with
    /// an explanation of where to get it when there is none.
    fn ca_cert_path(&self) -> anyhow::Result<PathBuf> {
        let how = "`sluice dev` writes the broker's certificate to <data-dir>/tls/cert.pem \
                   (./sluice-data/tls/cert.pem when run with the default data directory); \
                   pass it with --ca-cert PATH or SLUICE_CA_CERT (for `sluice serve`, the CA \
                   file that signed the broker's certificate)";
        match &self.ca_cert {
            Some(path) if path.is_file() => Ok(path.clone()),
            Some(path) if path.exists() => {
                bail!("the CA certificate {} is not a file; {how}", path.display())
            }
            Some(path) => bail!(
                "the CA certificate file {} does not exist; {how}",
                path.display()
            ),
            None if Path::new(DEFAULT_CA_CERT).is_file() => Ok(PathBuf::from(DEFAULT_CA_CERT)),
            None => bail!(
                "no CA certificate to trust the broker with: --ca-cert was not given and \
                 {DEFAULT_CA_CERT} does not exist in this directory; {how}"
            ),
        }
    }

    /// The client configuration these flags describe.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let ca_cert = self.ca_cert_path()?;
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            bail!(
                "--connect-timeout must be a positive number of seconds, not {}",
                self.connect_timeout
            );
        }
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("sluice-cli-{}", std::process::id()));
        let mut config = ClientConfig::new(self.broker.clone())
            .ca_cert(ca_cert)
            .token(self.token.clone())
            .server_name(self.server_name.clone())
            .client_id(client_id);
        config.connect_timeout = Duration::from_secs_f64(self.connect_timeout);
        Ok(config)
    }

    /// Connects and handshakes, with a hint added where the client's own
    /// message does not say what to do.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let config = self.client_config()?;
        match Client::connect(config).await {
            Ok(client) => Ok(client),
            Err(e @ ClientError::Auth(_)) if self.token.is_empty() => Err(anyhow::Error::new(e)
                .context("the broker requires a token: pass --token or set SLUICE_TOKEN")),
            Err(e @ ClientError::Auth(_)) => Err(anyhow::Error::new(e)
                .context("the broker refused the token given with --token / SLUICE_TOKEN")),
            Err(e) => Err(e.into()),
        }
    }
}

impl ConnectArgs {
    /// Connects, runs `body`, and closes the connection whether or not
    /// `body` succeeded (a connection dropped without a close keeps the
    /// broker waiting for it to time out).
    pub async fn with_client<T>(
        &self,
        body: impl AsyncFnOnce(&Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let client = self.connect().await?;
        let result = body(&client).await;
        client.close().await;
        result
    }
}

/// Runs a command's future on a runtime of its own.
pub fn block_on<F: Future<Output = anyhow::Result<()>>>(fut: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(fut)
}

/// Prints a failed command's error chain as one line and exits with 1.
pub fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        let _ = std::io::stdout().flush();
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// Whether a write failed because the reader went away (`| head`): the
/// command then stops quietly, as a successful one.
pub(crate) fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// A `name=value` flag without the `=` or the name.
#[derive(Debug, thiserror::Error)]
#[error("{flag} takes name=value, got {got:?}")]
pub(crate) struct BadPair {
    flag: &'static str,
    got: String,
}

/// Splits `name=value` (at the first `=`), naming the flag on error.
pub(crate) fn parse_pair(s: &str, flag: &'static str) -> Result<(String, String), BadPair> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(BadPair {
            flag,
            got: s.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_pair("a=b=c", "--config").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert_eq!(
            parse_pair("a=", "--config").unwrap(),
            ("a".into(), "".into())
        );
        let err = parse_pair("novalue", "--header").unwrap_err().to_string();
        assert!(err.contains("--header takes name=value"), "{err}");
        assert!(parse_pair("=v", "--header").is_err());
    }
}
