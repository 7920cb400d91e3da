//! What the function tests share: waiting for a function's state and log,
//! refusals, and the JSON orders the router and handler read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_client::{Client, ClientError, ErrorCode, FunctionDescription};

use crate::common::{WAIT, wait_for};

/// The function's log lines until one contains `needle` (or `WAIT` passed).
pub async fn wait_log(client: &Client, name: &str, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines: Vec<String> = client
            .function_logs(name, 0, 1000)
            .await
            .unwrap()
            .lines
            .into_iter()
            .map(|l| l.message)
            .collect();
        if lines.iter().any(|l| l.contains(needle)) || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The message of a request the broker refused with `code`.
pub fn refused<T: std::fmt::Debug>(result: sluice_client::Result<T>, code: ErrorCode) -> String {
    match result {
        Err(ClientError::Broker(e)) if e.code == code => e.message,
        other => panic!("expected a {code} refusal, got {other:?}"),
    }
}

/// Records in `topic` (the sum of its partitions' high watermarks).
pub async fn count(client: &Client, topic: &str) -> u64 {
    let d = client.describe_topic(topic).await.unwrap();
    d.partitions.iter().map(|p| p.high_watermark).sum()
}

/// Waits until the transform `name` has a position on each of its input's
/// `partitions` and has caught up with all of them.
pub async fn wait_caught_up(client: &Client, name: &str, partitions: usize) -> FunctionDescription {
    wait_for(&format!("{name} caught up"), async || {
        let d = client.describe_function(name).await.unwrap();
        if d.positions.len() == partitions && d.total_lag() == 0 {
            Ok(d)
        } else {
            Err(format!("{:?}", d.positions))
        }
    })
    .await
}

/// The errors of a function's metrics by kind.
pub fn errors(d: &FunctionDescription) -> BTreeMap<String, u64> {
    d.metrics.errors.iter().cloned().collect()
}

/// A JSON order of `region` (`None`: no region field) with a unique id.
pub fn order(i: usize, region: Option<&str>) -> String {
    match region {
        Some(r) => format!(r#"{{"id":{i},"region":"{r}"}}"#),
        None => format!(r#"{{"id":{i}}}"#),
    }
}

/// The `id` of an [`order`].
pub fn order_id(value: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    v["id"].as_u64().unwrap() as usize
}
