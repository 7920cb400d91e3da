//! What can go wrong talking to a broker.

use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_protocol::{ErrorCode, WireError};

/// Everything a client call can fail with; [`ClientError::is_retriable`]
/// says which are worth another try.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached at all (nothing listening, network down).
    #[error("cannot reach the broker at {addr}: {reason}")]
    #[allow(missing_docs)] // the address and why, as the message says
    Unreachable { addr: String, reason: String },
    /// The TLS handshake failed, most often because the broker's certificate
    /// is not trusted by the CA file the client was given.
    #[error(
        "TLS handshake with {addr} failed: {reason} (is the broker's certificate trusted? pass its CA file with --ca-cert / ClientConfig::ca_cert)"
    )]
    #[allow(missing_docs)] // the address and why, as the message says
    Tls { addr: SocketAddr, reason: String },
    /// The CA file could not be read or holds no certificate.
    #[allow(missing_docs)] // the file and why, as the message says
    #[error("cannot read the CA certificate {}: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    /// A configuration value is invalid; nothing was sent.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The broker refused the token.
    #[error("authentication failed: {0}")]
    Auth(WireError),
    /// The broker answered with an error.
    #[error("broker error {0}")]
    Broker(WireError),
    /// The connection or stream went away with the request in flight. The
    /// request may or may not have been applied.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// No response within the request timeout; the request may or may
    /// not have been applied.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A message is over the broker's size limit; it was not sent.
    #[error("message of {size} bytes is over the broker's limit of {max} bytes")]
    #[allow(missing_docs)] // the sizes, as the message says
    MessageTooLarge { size: usize, max: usize },
    /// The producer or client was closed.
    #[error("closed")]
    Closed,
    /// A fetched batch did not parse.
    #[error("corrupt data from the broker: {0}")]
    Corrupt(String),
}

impl ClientError {
    /// Whether sending the same request again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Disconnected(_)
            | ClientError::Timeout(_) => true,
            ClientError::Broker(e) => e.code.is_retriable(),
            _ => false,
        }
    }

    /// The wire error code, when the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Auth(e) | ClientError::Broker(e) => Some(e.code),
            _ => None,
        }
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
