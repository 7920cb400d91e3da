//! `sluice dev --demo`: deploys the sample functions on demo topics, so a
//! first run shows a filter, a transform and a handler at work.
//!
//! ```text
//! demo-orders ──demo-redact (transform: PII out)──▶ demo-orders-clean
//! demo-orders-clean ──demo-router (transform: by region)──▶ demo-orders-eu | -us | -other
//! demo-orders-clean ──demo-big (filter, amount > 100)──▶ group demo-big-orders
//! demo-orders-clean ──demo-totals (handler: running total per customer in kv)
//! demo-orders-eu ──demo-reminder (handler: follow-up in demo-reminders after 10 s)
//! ```
//!
//! Installing is idempotent: existing topics are kept and a function is
//! redeployed only when its component or manifest changed.

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::ops::function::FunctionManifest;
use sluice_protocol::ops::{CreateTopicRequest, GroupSettings, OffsetSpec};
use sluice_protocol::{ErrorCode, WireError};
use sluice_sample_components::embedded;

use sluice_broker::broker::Broker;
use sluice_broker::clock::Clock;

const TOPICS: &[(&str, u32)] = &[
    ("demo-orders", 2),
    ("demo-orders-clean", 2),
    ("demo-orders-eu", 1),
    ("demo-orders-us", 1),
    ("demo-orders-other", 1),
    ("demo-reminders", 1),
];

const SEED_ORDERS: &[&str] = &[
    r#"{"customer":"ann","region":"eu","amount":120,"note":"call me at +44 20 7946 0958"}"#,
    r#"{"customer":"bob","region":"us","amount":35,"note":"bob@example.com"}"#,
    r#"{"customer":"ann","region":"eu","amount":15}"#,
    r#"{"customer":"chen","region":"apac","amount":250,"note":"card 4111 1111 1111 1111"}"#,
];

fn group(topic: &str) -> GroupSettings {
    GroupSettings {
        topic: topic.into(),
        start: OffsetSpec::Earliest,
        retry_ladder_ms: vec![1_000],
        max_attempts: 3,
        ..GroupSettings::default()
    }
}

fn manifests() -> Vec<(FunctionManifest, &'static [u8])> {
    vec![
        (
            FunctionManifest::transform("demo-redact", "demo-orders", ["demo-orders-clean"])
                .start(OffsetSpec::Earliest),
            embedded::PII_REDACT,
        ),
        (
            FunctionManifest::transform(
                "demo-router",
                "demo-orders-clean",
                ["demo-orders-other", "demo-orders-eu", "demo-orders-us"],
            )
            .start(OffsetSpec::Earliest)
            .config("field", "region")
            .config("routes", "eu=demo-orders-eu,us=demo-orders-us")
            .config("default", "demo-orders-other"),
            embedded::ROUTER,
        ),
        (
            FunctionManifest::filter("demo-big", "demo-big-orders")
                .config("predicate", "amount > 100"),
            embedded::JSON_FILTER,
        ),
        (
            FunctionManifest::handler("demo-totals", "demo-totals", group("demo-orders-clean")),
            embedded::ORDER_TOTALS,
        ),
        (
            FunctionManifest::handler("demo-reminder", "demo-reminder", group("demo-orders-eu"))
                .config("topic", "demo-reminders")
                .config("delay_ms", "10000"),
            embedded::REMINDER,
        ),
    ]
}

/// Creates the demo topics, deploys the samples and, on a fresh install,
/// produces a few orders. Returns what to print.
pub async fn install(broker: &Broker) -> anyhow::Result<String> {
    let mut fresh = false;
    for (name, partitions) in TOPICS {
        match broker
            .create_topic(CreateTopicRequest {
                name: (*name).into(),
                partitions: *partitions,
                config: Vec::new(),
            })
            .await
        {
            Ok(()) => fresh = true,
            Err(WireError {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }) => {}
            Err(e) => anyhow::bail!("creating demo topic {name}: {e}"),
        }
    }
    let functions = broker.functions();
    let deployed = functions.list();
    for (manifest, component) in manifests() {
        let current = deployed.iter().find(|f| f.name == manifest.name);
        if let Some(f) = current {
            let d = functions.describe(&f.name).await?;
            let digest = sluice_host_api::component_digest(component);
            if d.manifest == manifest && d.digest == digest {
                continue;
            }
        }
        functions
            .deploy(manifest.clone(), Bytes::from_static(component))
            .await
            .map_err(|e| anyhow::anyhow!("deploying demo function {}: {e}", manifest.name))?;
    }
    if fresh {
        seed(broker).await?;
    }
    Ok(GUIDE.to_owned())
}

async fn seed(broker: &Broker) -> anyhow::Result<()> {
    let now = sluice_broker::clock::SystemClock.now_ms();
    let mut b = BatchBuilder::new(now);
    for order in SEED_ORDERS {
        b.push(now, None, Some(order.as_bytes()), &[]);
    }
    let partition = broker.store().log().partition("demo-orders", 0)?;
    let batch = BytesMut::from(&b.finish()[..]);
    tokio::task::spawn_blocking(move || partition.append(batch)).await??;
    Ok(())
}

const GUIDE: &str = r#"Demo functions deployed (sluice fn list):
  demo-redact    transform  demo-orders -> demo-orders-clean (emails, phones, cards redacted)
  demo-router    transform  demo-orders-clean -> demo-orders-eu | demo-orders-us | demo-orders-other
  demo-big       filter     group demo-big-orders sees only orders with amount > 100
  demo-totals    handler    running total per customer in kv (sluice fn logs demo-totals)
  demo-reminder  handler    a follow-up in demo-reminders 10 s after each EU order
Four orders were produced on first start. In another terminal:
  sluice consume demo-orders-clean --from earliest
  sluice group consume demo-big-orders demo-orders-clean --from earliest
  sluice fn logs demo-totals
  sluice produce demo-orders '{"customer":"dee","region":"eu","amount":300,"note":"dee@example.com"}'
  sluice consume demo-reminders --from earliest"#;
