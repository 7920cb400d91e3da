//! Functions: deploy WebAssembly components for the broker to run next to
//! the data, and manage them (list, describe, logs, delete, rollback).
//!
//! ```no_run
//! # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
//! use std::time::Duration;
//! use sluice_client::{FunctionManifest, GroupSettings};
//!
//! // A filter: members of group "billing" only see what it lets through.
//! let wasm = std::fs::read("tag_filter.wasm").expect("the component");
//! let manifest = FunctionManifest::filter("vip-only", "billing")
//!     .config("tag", "vip")
//!     .timeout(Duration::from_millis(200));
//! let deployed = client.deploy_function(manifest, wasm).await?;
//! println!("version {} ({})", deployed.version, deployed.digest);
//!
//! // A transform: reads "raw", writes "clean" (its default output) and "rejects".
//! let wasm = std::fs::read("pii_redact.wasm").expect("the component");
//! client
//!     .deploy_function(FunctionManifest::transform("redact", "raw", ["clean", "rejects"]), wasm)
//!     .await?;
//!
//! // Something went wrong with the new version: back to the one before.
//! client.rollback_function("redact", None).await?;
//! # Ok(()) }
//! ```
//!
//! The manifest builders ([`FunctionManifest::filter`],
//! [`FunctionManifest::transform`], [`FunctionManifest::handler`] and their
//! setters) live on the protocol type itself, so a manifest built here is
//! exactly what travels on the wire: no second spec type to keep in sync.
//! Limits left at 0 take the broker's defaults.

use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::frame;
pub use sluice_protocol::ops::{
    Attach, DeployFunctionResponse, FunctionDescription, FunctionKind, FunctionLimitsSpec,
    FunctionLogLine, FunctionLogsResponse, FunctionManifest, FunctionMetrics, FunctionPosition,
    FunctionSummary, FunctionVersion, LogLevel, UnknownFunctionKind,
};
use sluice_protocol::ops::{
    DeleteFunctionRequest, DeployFunctionRequest, DescribeFunctionRequest, FunctionLogsRequest,
    ListFunctionsRequest, Payload, RollbackFunctionRequest,
};

use crate::Client;
use crate::error::{ClientError, Result};

/// How much longer than the client's request timeout a deploy (or a
/// rollback) may take: the broker validates and compiles the component
/// before it answers, which for a large component on a busy broker takes
/// far longer than an ordinary admin call.
pub const DEPLOY_EXTRA_WAIT: Duration = Duration::from_secs(120);

impl Client {
    /// Deploys `component` (the bytes of a WebAssembly component) under
    /// `manifest.name`: a new function at version 1, or the next version of
    /// an existing one, which replaces the active version once the broker
    /// has validated and started it.
    ///
    /// Fails with [`ErrorCode::InvalidFunction`](crate::ErrorCode::InvalidFunction)
    /// (as [`ClientError::Broker`]) when the broker refuses the component or
    /// manifest; nothing changes then. A component too large for one frame
    /// fails with [`ClientError::MessageTooLarge`] before anything is sent.
    ///
    /// The upload goes on a stream of its own, so a multi-megabyte component
    /// does not hold up other requests of this client, and it may take
    /// [`DEPLOY_EXTRA_WAIT`] beyond the request timeout.
    pub async fn deploy_function(
        &self,
        manifest: FunctionManifest,
        component: impl Into<Bytes>,
    ) -> Result<DeployFunctionResponse> {
        let req = DeployFunctionRequest {
            manifest,
            component: component.into(),
        };
        // An over-limit frame makes the broker close the stream; say why
        // here instead.
        let size = frame::HEADER_LEN + req.encode().len();
        let max = self.conn.handshake_info().await?.max_frame_bytes as usize;
        if size > max {
            return Err(ClientError::MessageTooLarge { size, max });
        }
        let stream = self.conn.open_stream().await?;
        stream.request(&req, Some(DEPLOY_EXTRA_WAIT)).await
    }

    /// Every deployed function, with its kind, attachment, active version,
    /// status and call counts.
    pub async fn list_functions(&self) -> Result<Vec<FunctionSummary>> {
        Ok(self.conn.request(&ListFunctionsRequest).await?.functions)
    }

    /// One function in detail: the active manifest, every stored version,
    /// metrics (errors by kind, latency, fuel, instances, logs) and, for
    /// transforms and handlers, their position and lag per partition.
    /// Fails with [`ErrorCode::UnknownFunction`](crate::ErrorCode::UnknownFunction)
    /// for a name not deployed.
    pub async fn describe_function(&self, name: &str) -> Result<FunctionDescription> {
        self.conn
            .request(&DescribeFunctionRequest {
                name: name.to_owned(),
            })
            .await
    }

    /// Up to `max_lines` (0: the broker's default) log lines of a function
    /// with a sequence number above `after_seq` (0: from the oldest kept),
    /// oldest first. To follow a log, call again with
    /// [`FunctionLogsResponse::next_after`].
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// let mut after = 0;
    /// loop {
    ///     let page = client.function_logs("redact", after, 100).await?;
    ///     for l in &page.lines {
    ///         println!("{} v{} {}", l.level, l.version, l.message);
    ///     }
    ///     after = page.next_after(after);
    ///     tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    /// }
    /// # }
    /// ```
    pub async fn function_logs(
        &self,
        name: &str,
        after_seq: u64,
        max_lines: u32,
    ) -> Result<FunctionLogsResponse> {
        self.conn
            .request(&FunctionLogsRequest {
                name: name.to_owned(),
                after_seq,
                max_lines,
            })
            .await
    }

    /// Stops a function and forgets it: every version, its positions and
    /// its logs. Output it already wrote stays.
    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.conn
            .request(&DeleteFunctionRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Makes a stored version active again, component and manifest: `to`,
    /// or with `None` (or `Some(0)`) the version before the active one.
    /// Answers like a deploy: the version now active and the one it
    /// replaced. The broker restarts the function, so this may take as long
    /// as a deploy.
    pub async fn rollback_function(
        &self,
        name: &str,
        to: Option<u32>,
    ) -> Result<DeployFunctionResponse> {
        let stream = self.conn.open_stream().await?;
        stream
            .request(
                &RollbackFunctionRequest {
                    name: name.to_owned(),
                    to_version: to.unwrap_or(0),
                },
                Some(DEPLOY_EXTRA_WAIT),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocol::ops::{GroupSettings, OffsetSpec};

    use super::*;

    #[test]
    fn manifests_build_fluently() {
        let m = FunctionManifest::handler(
            "mailer",
            "emails",
            GroupSettings {
                topic: "orders".into(),
                ..GroupSettings::default()
            },
        )
        .concurrency(4)
        .config("smtp", "mail:25")
        .allow_topic("sent")
        .memory_bytes(32 << 20)
        .timeout(Duration::from_secs(2));
        assert_eq!(m.kind(), FunctionKind::Handler);
        assert_eq!(
            m.attach.describe(),
            "handler on group emails (topic orders)"
        );
        assert_eq!(m.limits.timeout_ms, 2000);
        assert_eq!(m.limits.memory_bytes, 32 << 20);
        assert_eq!(
            m.limits.fuel_per_call, 0,
            "unset limits take the broker's default"
        );
        let t = FunctionManifest::transform("t", "raw", vec![String::from("clean")])
            .start(OffsetSpec::Earliest);
        assert_eq!(t.attach.describe(), "transform raw -> clean");
        assert!(matches!(
            t.attach,
            Attach::Transform {
                start: OffsetSpec::Earliest,
                ..
            }
        ));
    }
}
