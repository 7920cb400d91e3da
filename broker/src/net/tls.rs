//! TLS for the QUIC listener: a configured certificate and key in
//! production, or a self-signed pair that `sluice dev` generates once and
//! keeps in the data directory so clients can trust it by path.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_protocol::ops::ALPN;

/// Where `sluice dev` keeps its self-signed pair, under the data directory.
pub const DEV_CERT_FILE: &str = "tls/cert.pem";
pub const DEV_KEY_FILE: &str = "tls/key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate {}: {source}", path.display())]
    ReadCert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate file {} holds no certificate", .0.display())]
    NoCert(PathBuf),
    #[error("reading private key {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration not usable for QUIC: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The certificate file clients can trust (for the startup banner).
    pub cert_path: PathBuf,
}

impl Identity {
    /// Loads a PEM certificate chain and PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::ReadCert {
                path: cert.to_path_buf(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert(cert.to_path_buf()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
            path: key.to_path_buf(),
            source,
        })?;
        Ok(Identity {
            chain,
            key,
            cert_path: cert.to_path_buf(),
        })
    }

    /// Loads the dev pair from `data_dir`, generating it on first use. The
    /// certificate names `localhost`, `127.0.0.1` and `::1`.
    pub fn dev(data_dir: &Path) -> Result<Identity, TlsError> {
        let cert_path = data_dir.join(DEV_CERT_FILE);
        let key_path = data_dir.join(DEV_KEY_FILE);
        if !cert_path.exists() || !key_path.exists() {
            let names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            let generated = rcgen::generate_simple_self_signed(names)?;
            write_file(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
            write_file(
                &key_path,
                generated.signing_key.serialize_pem().as_bytes(),
                0o600,
            )?;
            tracing::info!(cert = %cert_path.display(), "generated a self-signed dev certificate");
        }
        Identity::load(&cert_path, &key_path)
    }

    /// The QUIC server crypto: TLS 1.3 only, ALPN `sluice/1`.
    pub fn quic_server_config(self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(TlsError::Quic)
    }
}

/// Writes a file atomically (temp file, fsync, rename) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_identity_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::dev(dir.path()).unwrap();
        let second = Identity::dev(dir.path()).unwrap();
        assert_eq!(first.chain, second.chain);
        first.quic_server_config().unwrap();
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(dir.path().join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_garbage_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        fs::write(&cert, "not a certificate").unwrap();
        fs::write(&key, "not a key").unwrap();
        let err = Identity::load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("c.pem"), "{err}");
    }
}
