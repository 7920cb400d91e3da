//! Broker configuration: what `sluice serve` reads at start.
//!
//! Settings come from four places; the highest one that sets a key wins:
//!
//! 1. command-line flags (`--listen`, …),
//! 2. environment variables (`SLUICE_LISTEN`, …),
//! 3. the TOML file,
//! 4. built-in defaults.
//!
//! Clap merges 1 and 2 into [`ConfigOverrides`]; [`BrokerConfig::load`]
//! reads the file over the defaults, applies the overrides and validates the
//! result. Only the most common keys have a flag and a variable; the rest are
//! set in the file. `docs/operations.md` documents every key, and
//! [`BrokerConfig::example_toml`] is a commented file with all of them.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::log::Durability;

/// Bytes a frame needs around the largest record batch (frame header,
/// request header, topic name, …): `max_message_bytes` plus this must fit in
/// `max_frame_bytes`.
pub const FRAME_HEADROOM_BYTES: u32 = 1024;

/// Largest `topic_defaults.partitions`, the same bound topic creation checks.
const MAX_PARTITIONS: u32 = 100_000;

/// Broker settings. Precedence (highest first): command-line flags,
/// environment variables (`SLUICE_*`), the TOML file, built-in defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Address (IP and port) the broker listens on.
    pub listen: SocketAddr,
    /// Where topics, offsets and logs are kept. A relative path is resolved
    /// against the broker's working directory.
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub topic_defaults: TopicDefaults,
    pub scheduler: SchedulerConfig,
}

/// The scheduler of delayed and loop messages.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How far ahead a message may be scheduled, in milliseconds (default
    /// two years); later due times are refused with INVALID_ARGUMENT.
    pub max_horizon_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_horizon_ms: crate::sched::SchedulerOptions::default().max_horizon_ms,
        }
    }
}

/// The broker's certificate. Both or neither: with neither, a self-signed
/// certificate is generated in `<data_dir>/tls/` (development only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain file.
    pub cert: Option<PathBuf>,
    /// PEM private key file.
    pub key: Option<PathBuf>,
}

/// Who may connect. `Debug` does not print the tokens.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted tokens; a client presenting any one of them is admitted.
    pub tokens: Vec<String>,
    /// Admit clients that present no token.
    pub allow_anonymous: bool,
}

/// Resource limits that keep one client from exhausting the broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections at once; further connections are refused.
    pub max_connections: u32,
    /// Open streams per connection.
    pub max_streams_per_connection: u32,
    /// Largest frame, header included.
    pub max_frame_bytes: u32,
    /// Largest record batch a client may produce.
    pub max_message_bytes: u32,
    /// Requests being processed per connection at once.
    pub max_in_flight_per_connection: u32,
    /// Close a connection after this long without traffic, in milliseconds.
    pub idle_timeout_ms: u64,
}

/// Settings of topics created without their own.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicDefaults {
    /// Number of partitions (1–100000).
    pub partitions: u32,
    /// `sync`, `none` or `interval:<ms>`; see `docs/storage.md`.
    pub durability: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7420),
            data_dir: PathBuf::from("./sluice-data"),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            topic_defaults: TopicDefaults::default(),
            scheduler: SchedulerConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1024,
            max_streams_per_connection: 256,
            max_frame_bytes: 16 << 20,
            max_message_bytes: 8 << 20,
            max_in_flight_per_connection: 4096,
            idle_timeout_ms: 30_000,
        }
    }
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 1,
            durability: "sync".to_owned(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &Redacted(self.tokens.len()))
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

/// Prints how many tokens there are, never the tokens.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} token(s) redacted>", self.0)
    }
}

/// Overrides from flags or environment (clap fills these; `None` = not
/// given). A flag beats its environment variable.
#[derive(Clone, Default, clap::Args)]
pub struct ConfigOverrides {
    /// Address to listen on, IP:port [config: listen]
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where topics, offsets and logs are kept [config: data_dir]
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM TLS certificate chain file; needs --tls-key too [config: tls.cert]
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM TLS private key file; needs --tls-cert too [config: tls.key]
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Comma-separated list of accepted tokens; replaces the file's list
    /// [config: auth.tokens]
    #[arg(long = "tokens", env = "SLUICE_TOKENS", value_delimiter = ',')]
    pub tokens: Option<Vec<String>>,
    /// Admit clients that present no token: true or false; the bare flag
    /// means true [config: auth.allow_anonymous]
    #[arg(
        long,
        env = "SLUICE_ALLOW_ANONYMOUS",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_anonymous: Option<bool>,
    /// Most open connections at once [config: limits.max_connections]
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Largest record batch, in bytes [config: limits.max_message_bytes]
    #[arg(long, env = "SLUICE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<u32>,
    /// Partitions of topics created without settings
    /// [config: topic_defaults.partitions]
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Durability of topics created without settings: sync, none or
    /// interval:<ms> [config: topic_defaults.durability]
    #[arg(long, env = "SLUICE_DEFAULT_DURABILITY")]
    pub default_durability: Option<String>,
}

impl fmt::Debug for ConfigOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigOverrides")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tokens", &self.tokens.as_ref().map(|t| Redacted(t.len())))
            .field("allow_anonymous", &self.allow_anonymous)
            .field("max_connections", &self.max_connections)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("default_partitions", &self.default_partitions)
            .field("default_durability", &self.default_durability)
            .finish()
    }
}

impl ConfigOverrides {
    /// The flag and variable that override `key` (dotted, as in the file),
    /// if this override was given.
    fn given(&self, key: &str) -> Option<&'static str> {
        let (given, source) = match key {
            "listen" => (self.listen.is_some(), "--listen / SLUICE_LISTEN"),
            "data_dir" => (self.data_dir.is_some(), "--data-dir / SLUICE_DATA_DIR"),
            "tls.cert" => (self.tls_cert.is_some(), "--tls-cert / SLUICE_TLS_CERT"),
            "tls.key" => (self.tls_key.is_some(), "--tls-key / SLUICE_TLS_KEY"),
            "auth.tokens" => (self.tokens.is_some(), "--tokens / SLUICE_TOKENS"),
            "auth.allow_anonymous" => (
                self.allow_anonymous.is_some(),
                "--allow-anonymous / SLUICE_ALLOW_ANONYMOUS",
            ),
            "limits.max_connections" => (
                self.max_connections.is_some(),
                "--max-connections / SLUICE_MAX_CONNECTIONS",
            ),
            "limits.max_message_bytes" => (
                self.max_message_bytes.is_some(),
                "--max-message-bytes / SLUICE_MAX_MESSAGE_BYTES",
            ),
            "topic_defaults.partitions" => (
                self.default_partitions.is_some(),
                "--default-partitions / SLUICE_DEFAULT_PARTITIONS",
            ),
            "topic_defaults.durability" => (
                self.default_durability.is_some(),
                "--default-durability / SLUICE_DEFAULT_DURABILITY",
            ),
            _ => (false, ""),
        };
        given.then_some(source)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A failed check: the keys involved (dotted, as in the file) and a message
/// that names them.
struct Problem {
    keys: &'static [&'static str],
    message: String,
}

impl Problem {
    fn new(keys: &'static [&'static str], message: impl Into<String>) -> Problem {
        Problem {
            keys,
            message: message.into(),
        }
    }
}

/// Stands in for the file name in errors from [`BrokerConfig::from_toml_str`].
const STRING_SOURCE: &str = "<string>";

impl BrokerConfig {
    /// Loads `path` (if Some) over the defaults, then applies `overrides`,
    /// then validates. A validation error says where each key involved was
    /// set: by a flag or variable, in the file, or by default.
    pub fn load(
        path: Option<&Path>,
        overrides: &ConfigOverrides,
    ) -> Result<BrokerConfig, ConfigError> {
        let (mut config, file) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let config = parse(&text, path)?;
                // Which keys the file sets, for error messages. It parsed
                // above, so it is valid TOML.
                let table = text.parse::<toml::Table>().unwrap_or_default();
                (config, Some((path, table)))
            }
            None => (BrokerConfig::default(), None),
        };
        config.apply(overrides);
        config.check().map_err(|problem| {
            let origins: Vec<String> = problem
                .keys
                .iter()
                .map(|key| {
                    let origin = match (overrides.given(key), &file) {
                        (Some(source), _) => format!("set by {source}"),
                        (None, Some((path, table))) if table_has(table, key) => {
                            format!("set in {}", path.display())
                        }
                        _ => "the built-in default".to_owned(),
                    };
                    format!("{key}: {origin}")
                })
                .collect();
            ConfigError::Invalid(format!("{} ({})", problem.message, origins.join("; ")))
        })?;
        Ok(config)
    }

    /// Parses a configuration over the defaults, without validating it.
    pub fn from_toml_str(s: &str) -> Result<BrokerConfig, ConfigError> {
        parse(s, Path::new(STRING_SOURCE))
    }

    /// Applies the overrides that were given. `tokens` replaces the list.
    pub fn apply(&mut self, o: &ConfigOverrides) {
        if let Some(listen) = o.listen {
            self.listen = listen;
        }
        if let Some(dir) = &o.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(cert) = &o.tls_cert {
            self.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &o.tls_key {
            self.tls.key = Some(key.clone());
        }
        if let Some(tokens) = &o.tokens {
            self.auth.tokens = tokens.clone();
        }
        if let Some(anonymous) = o.allow_anonymous {
            self.auth.allow_anonymous = anonymous;
        }
        if let Some(n) = o.max_connections {
            self.limits.max_connections = n;
        }
        if let Some(n) = o.max_message_bytes {
            self.limits.max_message_bytes = n;
        }
        if let Some(n) = o.default_partitions {
            self.topic_defaults.partitions = n;
        }
        if let Some(durability) = &o.default_durability {
            self.topic_defaults.durability = durability.clone();
        }
    }

    /// Checks: tls cert and key both or neither; limits > 0;
    /// `max_message_bytes` + 1 KiB <= `max_frame_bytes`; durability parses
    /// with [`Durability::from_str`]; 1 <= partitions <= 100000; data_dir
    /// and tokens not empty.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|problem| ConfigError::Invalid(problem.message))
    }

    fn check(&self) -> Result<(), Problem> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(Problem::new(&["data_dir"], "data_dir must not be empty"));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(Problem::new(
                    &["tls.cert"],
                    "tls.cert is set but tls.key is not: set both (your certificate) or \
                     neither (a self-signed development certificate)",
                ));
            }
            (None, Some(_)) => {
                return Err(Problem::new(
                    &["tls.key"],
                    "tls.key is set but tls.cert is not: set both (your certificate) or \
                     neither (a self-signed development certificate)",
                ));
            }
            _ => {}
        }
        if let Some(i) = self.auth.tokens.iter().position(String::is_empty) {
            return Err(Problem::new(
                &["auth.tokens"],
                format!(
                    "auth.tokens[{i}] is empty (a stray comma, or an empty SLUICE_TOKENS?); \
                     tokens must be non-empty, use auth.allow_anonymous for clients without one"
                ),
            ));
        }
        let l = &self.limits;
        let positive: [(&'static [&'static str], u64); 6] = [
            (&["limits.max_connections"], l.max_connections.into()),
            (
                &["limits.max_streams_per_connection"],
                l.max_streams_per_connection.into(),
            ),
            (&["limits.max_frame_bytes"], l.max_frame_bytes.into()),
            (&["limits.max_message_bytes"], l.max_message_bytes.into()),
            (
                &["limits.max_in_flight_per_connection"],
                l.max_in_flight_per_connection.into(),
            ),
            (&["limits.idle_timeout_ms"], l.idle_timeout_ms),
        ];
        for (keys, value) in positive {
            if value == 0 {
                return Err(Problem::new(
                    keys,
                    format!("{} must be greater than 0", keys[0]),
                ));
            }
        }
        if u64::from(l.max_message_bytes) + u64::from(FRAME_HEADROOM_BYTES)
            > u64::from(l.max_frame_bytes)
        {
            return Err(Problem::new(
                &["limits.max_message_bytes", "limits.max_frame_bytes"],
                format!(
                    "limits.max_message_bytes ({}) plus {FRAME_HEADROOM_BYTES} bytes of headroom \
                     must fit in limits.max_frame_bytes ({}): lower the first or raise the second",
                    l.max_message_bytes, l.max_frame_bytes
                ),
            ));
        }
        let t = &self.topic_defaults;
        if t.partitions == 0 || t.partitions > MAX_PARTITIONS {
            return Err(Problem::new(
                &["topic_defaults.partitions"],
                format!(
                    "topic_defaults.partitions must be 1..={MAX_PARTITIONS}, got {}",
                    t.partitions
                ),
            ));
        }
        if let Err(e) = Durability::from_str(&t.durability) {
            return Err(Problem::new(
                &["topic_defaults.durability"],
                format!("topic_defaults.durability: {e}"),
            ));
        }
        Ok(())
    }

    /// The settings for `sluice serve`: [`validate`](Self::validate), and
    /// also clients must authenticate (tokens, or anonymous access
    /// explicitly allowed) and the certificate must be configured, not
    /// generated.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        self.validate()?;
        if self.auth.tokens.is_empty() && !self.auth.allow_anonymous {
            return Err(ConfigError::Invalid(
                "serve requires auth.tokens (or auth.allow_anonymous = true): set tokens in \
                 the [auth] table, --tokens or SLUICE_TOKENS"
                    .to_owned(),
            ));
        }
        if self.tls.cert.is_none() || self.tls.key.is_none() {
            return Err(ConfigError::Invalid(
                "serve requires a configured TLS certificate: set tls.cert and tls.key \
                 (--tls-cert / SLUICE_TLS_CERT, --tls-key / SLUICE_TLS_KEY); the generated \
                 self-signed certificate is for development only (sluice dev)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Whether a presented token is accepted: anonymous (empty token) only
    /// if `allow_anonymous`; otherwise a constant-time comparison against
    /// each configured token. The time taken depends on the lengths of the
    /// tokens, not on their contents.
    pub fn accepts_token(&self, token: &str) -> bool {
        if token.is_empty() {
            return self.auth.allow_anonymous;
        }
        let mut accepted = false;
        // No short cut: every configured token is compared.
        for configured in &self.auth.tokens {
            accepted |= constant_time_eq(configured.as_bytes(), token.as_bytes());
        }
        accepted
    }

    /// A commented example TOML with every key and its default.
    pub fn example_toml() -> &'static str {
        EXAMPLE_TOML
    }
}

fn parse(s: &str, path: &Path) -> Result<BrokerConfig, ConfigError> {
    toml::from_str(s).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// Whether the dotted `key` is set in `table`.
fn table_has(table: &toml::Table, key: &str) -> bool {
    let mut parts = key.split('.');
    let mut current = table;
    loop {
        let Some(part) = parts.next() else {
            return false;
        };
        match current.get(part) {
            Some(toml::Value::Table(inner)) => current = inner,
            Some(_) => return parts.next().is_none(),
            None => return false,
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff = std::hint::black_box(diff | (x ^ y));
    }
    diff == 0
}

const EXAMPLE_TOML: &str = r#"# Sluice broker configuration (sluice.toml).
#
# Every key is optional: a missing key takes the default shown here.
# Precedence, highest first: command-line flags, SLUICE_* environment
# variables, this file, built-in defaults. Unknown keys are an error.

# Address the broker listens on: IP and port (no host names).
# --listen / SLUICE_LISTEN
listen = "127.0.0.1:7420"

# Where topics, offsets and logs are kept; relative to the working directory.
# --data-dir / SLUICE_DATA_DIR
data_dir = "./sluice-data"

[tls]
# PEM certificate chain and PEM private key files: set both or neither. With
# neither, a self-signed certificate is generated in data_dir/tls/, for
# development only (sluice serve refuses to start without these).
# cert = "/etc/sluice/cert.pem"    # --tls-cert / SLUICE_TLS_CERT
# key = "/etc/sluice/key.pem"      # --tls-key / SLUICE_TLS_KEY

[auth]
# Accepted tokens; a client presenting any one of them is admitted.
# --tokens / SLUICE_TOKENS (comma-separated; replaces this list)
tokens = []
# Admit clients that present no token.
# --allow-anonymous / SLUICE_ALLOW_ANONYMOUS (true or false)
allow_anonymous = false

[limits]
# Open connections at once.  --max-connections / SLUICE_MAX_CONNECTIONS
max_connections = 1024
# Open streams per connection.
max_streams_per_connection = 256
# Largest frame, header included (16 MiB).
max_frame_bytes = 16_777_216
# Largest record batch (8 MiB); plus 1 KiB it must fit in max_frame_bytes.
# --max-message-bytes / SLUICE_MAX_MESSAGE_BYTES
max_message_bytes = 8_388_608
# Requests being processed per connection at once.
max_in_flight_per_connection = 4096
# Close a connection after this many milliseconds without traffic.
idle_timeout_ms = 30_000

# Settings of topics created without their own.
[topic_defaults]
# Number of partitions (1-100000).
# --default-partitions / SLUICE_DEFAULT_PARTITIONS
partitions = 1
# When an append is acknowledged: "sync", "none" or "interval:<ms>".
# --default-durability / SLUICE_DEFAULT_DURABILITY
durability = "sync"

# Delayed and loop messages.
[scheduler]
# How far ahead a message may be scheduled, in milliseconds (two years);
# later due times are refused with INVALID_ARGUMENT.
max_horizon_ms = 63_072_000_000
"#;

#[cfg(test)]
mod tests;
