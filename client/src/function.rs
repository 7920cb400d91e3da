//! Functions: deploy WebAssembly components for the broker to run next to
//! the data, and manage them (list, describe, logs, delete, rollback).
//! This module holds the model (manifests, descriptions); the calls are
//! in [`crate::admin`].
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

pub use sluice_protocol::ops::{
    Attach, DeployFunctionResponse, FunctionDescription, FunctionKind, FunctionLimitsSpec,
    FunctionLogLine, FunctionLogsResponse, FunctionManifest, FunctionMetrics, FunctionPosition,
    FunctionSummary, FunctionVersion, LogLevel, UnknownFunctionKind,
};
/// How much longer than the client's request timeout a deploy (or a
/// rollback) may take: the broker validates and compiles the component
/// before it answers, which for a large component on a busy broker takes
/// far longer than an ordinary admin call.
pub const DEPLOY_EXTRA_WAIT: Duration = Duration::from_secs(120);

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
