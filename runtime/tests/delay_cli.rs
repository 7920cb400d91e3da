//! Delayed and loop delivery end to end: the client API (`Client::schedule`,
//! `cancel_delay`, `list_delays`) and the `sluice delay` commands, against a
//! real broker started in process on its own runtime.
//!
//! Deliveries are waited for by consuming with a deadline, never by sleeping.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_client::{
    CancelOutcome, Client, ConsumedMessage, ConsumerConfig, DelayedMessage, ErrorCode, Loop,
    Message, Partitioning, ProducerConfig, SeekTo,
};

use common::{Broker, cells, exits, fails, ok, run};

/// How long a test waits for a delivery that is due at once (a loaded
/// 2-core machine can be slow; a passing test does not wait this long).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts a broker with these topics (name, partitions) and runs `body`
/// with a client connected to it.
fn with_topics(topics: &[(&str, u32)], body: impl AsyncFnOnce(&Client)) {
    let broker = Broker::start();
    broker.with_client(async |client| {
        for (name, partitions) in topics {
            client.create_topic(name, *partitions, &[]).await.unwrap();
        }
        body(client).await
    });
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads `topic` (every partition, from the start) until `n` messages have
/// come or `DELIVERY_TIMEOUT` has passed; returns what came, in arrival order.
async fn receive(client: &Client, topic: &str, n: usize) -> Vec<ConsumedMessage> {
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    });
    consumer.assign(topic, &[], SeekTo::Earliest).await.unwrap();
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        out.extend(consumer.poll().await.unwrap());
    }
    out
}

/// Messages of `topic` from `offset` on in one partition, one poll (of at
/// most `max_wait`): to see that nothing more came.
async fn poll_once(
    client: &Client,
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait: Duration,
) -> Vec<ConsumedMessage> {
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait,
        ..ConsumerConfig::default()
    });
    consumer
        .assign(topic, &[partition], SeekTo::Offset(offset))
        .await
        .unwrap();
    consumer.poll().await.unwrap()
}

/// Messages pending for `topic`, as ListDelays counts them.
async fn pending(client: &Client, topic: &str) -> u64 {
    let listed = client.list_delays(Some(topic)).await.unwrap();
    listed.iter().map(|t| t.pending).sum()
}

/// The `sluice.loop-iteration` of each message.
fn iterations(msgs: &[ConsumedMessage]) -> Vec<Option<u32>> {
    msgs.iter().map(|m| m.loop_iteration).collect()
}

fn find<'a>(msgs: &'a [ConsumedMessage], value: &str) -> &'a ConsumedMessage {
    msgs.iter()
        .find(|m| m.value == value.as_bytes())
        .unwrap_or_else(|| panic!("no message {value:?} in {msgs:#?}"))
}

#[test]
fn messages_due_now_or_in_the_past_are_delivered_at_once_with_their_delay_id() {
    with_topics(&[("orders", 3)], async |client| {
        let producer = client.producer(ProducerConfig::default()).await.unwrap();
        let produced = producer
            .send(Message::new("orders", "produced").key("customer-7"))
            .await
            .unwrap();

        let before = now_ms();
        let msg = Message::new("orders", "after-zero")
            .key("customer-7")
            .tag("eu")
            .tag("vip")
            .property("trace", "abc");
        let id = msg.id;
        let now = client
            .schedule(DelayedMessage::after(msg, Duration::ZERO))
            .await
            .unwrap();
        // The partition a produce of the same key picks.
        assert_eq!(now.partition, produced.partition);
        assert!(now.due_at_ms >= before - 1000, "{now:?}");
        assert!(now.due_at_ms <= now_ms() + 1000, "{now:?}");

        let past = client
            .schedule(DelayedMessage::at(
                Message::new("orders", "past").partition(Partitioning::Explicit(2)),
                before - 60_000,
            ))
            .await
            .unwrap();
        assert_eq!(past.partition, 2);
        assert_ne!(past.delay_id, now.delay_id);

        let got = receive(client, "orders", 3).await;
        assert_eq!(got.len(), 3, "{got:#?}");

        let m = find(&got, "produced");
        assert_eq!((m.delay_id, m.loop_iteration), (None, None), "{m:#?}");

        let m = find(&got, "after-zero");
        assert_eq!(m.delay_id, Some(now.delay_id), "{m:#?}");
        assert_eq!(m.loop_iteration, None, "{m:#?}");
        assert_eq!(m.partition, produced.partition);
        assert_eq!(m.key.as_deref(), Some(&b"customer-7"[..]));
        assert_eq!(m.tags, ["eu", "vip"]);
        assert_eq!(m.properties, [("trace".to_owned(), "abc".into())]);
        assert_eq!(m.id, Some(id));
        // No timestamp given: the time of delivery.
        assert!(m.timestamp >= before, "{} < {before}", m.timestamp);

        let m = find(&got, "past");
        assert_eq!(m.delay_id, Some(past.delay_id), "{m:#?}");
        assert_eq!(m.partition, 2);
        assert!(
            m.timestamp >= before,
            "delivered late, so stamped with the delivery time, not the due time: {m:#?}"
        );

        // Delivered: too late to cancel.
        assert_eq!(
            client.cancel_delay(now.delay_id).await.unwrap(),
            CancelOutcome::AlreadyDelivered
        );
    });
}

#[test]
fn pending_messages_are_listed_and_cancelled_once() {
    with_topics(&[("later", 1)], async |client| {
        let due = now_ms() + 3_600_000;
        let first = client
            .schedule(DelayedMessage::at(Message::new("later", "a"), due))
            .await
            .unwrap();
        assert_eq!(first.due_at_ms, due);
        let second = client
            .schedule(DelayedMessage::at(Message::new("later", "b"), due + 1000))
            .await
            .unwrap();

        let listed = client.list_delays(Some("later")).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (
                listed[0].topic.as_str(),
                listed[0].pending,
                listed[0].next_due_ms
            ),
            ("later", 2, due)
        );
        let all = client.list_delays(None).await.unwrap();
        assert!(
            all.iter()
                .any(|t| t.topic == "later" && t.pending == 2 && t.next_due_ms == due),
            "{all:?}"
        );

        assert_eq!(
            client.cancel_delay(first.delay_id).await.unwrap(),
            CancelOutcome::Cancelled
        );
        assert_eq!(
            client.cancel_delay(first.delay_id).await.unwrap(),
            CancelOutcome::AlreadyCancelled
        );
        assert_eq!(
            client.cancel_delay(999_999).await.unwrap(),
            CancelOutcome::Unknown
        );
        let listed = client.list_delays(Some("later")).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|t| (t.pending, t.next_due_ms))
                .collect::<Vec<_>>(),
            [(1, due + 1000)],
            "the next due time moves to the one left"
        );

        let results = client
            .cancel_delays(&[second.delay_id, 999_999])
            .await
            .unwrap();
        let outcomes: Vec<_> = results.iter().map(|r| (r.delay_id, r.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                (second.delay_id, CancelOutcome::Cancelled),
                (999_999, CancelOutcome::Unknown)
            ]
        );
        assert_eq!(pending(client, "later").await, 0);
    });
}

#[test]
fn out_of_range_requests_are_invalid_arguments() {
    with_topics(&[("t", 1)], async |client| {
        let m = || Message::new("t", "v");
        let three_years = 3 * 365 * 24 * 3_600_000;

        let now = now_ms();
        let after = |ms| DelayedMessage::after(m(), Duration::from_millis(ms));
        let every = |ms| Loop::every(Duration::from_millis(ms));
        for (why, d) in [
            (
                "beyond the horizon",
                DelayedMessage::at(m(), now + three_years),
            ),
            ("a delay beyond the horizon", after(three_years as u64)),
            (
                "an interval under 10 ms",
                after(0).repeat(every(5).times(3)),
            ),
            ("a loop without a bound", after(0).repeat(every(1000))),
            (
                "a max interval under the interval",
                after(0).repeat(
                    every(1000)
                        .times(3)
                        .exponential(Some(Duration::from_millis(500))),
                ),
            ),
            (
                "an expiry before the first delivery",
                after(3_600_000).repeat(every(1000).until(now + 1000)),
            ),
        ] {
            let err = client.schedule(d).await.unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{why}: {err}");
        }

        // In one request each entry stands or falls on its own.
        let results = client
            .schedule_batch(vec![
                DelayedMessage::after(m(), Duration::from_secs(3600)),
                DelayedMessage::at(m(), now_ms() + three_years),
                DelayedMessage::after(
                    Message::new("nosuch", "v").partition(Partitioning::Explicit(0)),
                    Duration::from_secs(3600),
                ),
                // Its partition is looked up first, and fails.
                DelayedMessage::after(Message::new("nosuch", "v"), Duration::from_secs(3600)),
            ])
            .await
            .unwrap();
        let codes: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().err().and_then(|e| e.code()))
            .collect();
        assert_eq!(
            codes,
            [
                None,
                Some(ErrorCode::InvalidArgument),
                Some(ErrorCode::UnknownTopic),
                Some(ErrorCode::UnknownTopic)
            ],
            "{results:?}"
        );
        assert_eq!(pending(client, "t").await, 1, "only the valid entry");
    });
}

#[test]
fn a_message_too_large_for_its_topic_is_refused_and_blocks_nothing() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client
            .create_topic("small", 1, &[("max_batch_bytes", "1024")])
            .await
            .unwrap();
        client.create_topic("other", 1, &[]).await.unwrap();
        let big = Message::new("small", vec![b'x'; 4096]);
        let err = client
            .schedule(DelayedMessage::after(big, Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
        client
            .schedule(DelayedMessage::after(
                Message::new("other", "fine"),
                Duration::from_millis(50),
            ))
            .await
            .unwrap();
        assert_eq!(receive(client, "other", 1).await.len(), 1);
        assert_eq!(pending(client, "small").await, 0);
    });
}

#[test]
fn a_loop_is_delivered_the_given_number_of_times() {
    with_topics(&[("ticks", 1)], async |client| {
        let msg = Message::new("ticks", "tick");
        let id = msg.id;
        let s = client
            .schedule(
                DelayedMessage::after(msg, Duration::ZERO)
                    .repeat(Loop::every(Duration::from_millis(20)).times(3)),
            )
            .await
            .unwrap();

        let got = receive(client, "ticks", 3).await;
        assert_eq!(iterations(&got), [Some(1), Some(2), Some(3)], "{got:#?}");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.delay_id, Some(s.delay_id), "{m:#?}");
            assert_eq!(m.id, Some(id), "every delivery carries the message's id");
            assert_eq!(m.offset, i as u64);
            // Never before its due time: 0, 20 and 40 ms after the first.
            assert!(
                m.timestamp >= s.due_at_ms + 20 * i as i64,
                "delivery {} at {} but the first was due at {}",
                i + 1,
                m.timestamp,
                s.due_at_ms
            );
        }
        // The loop is over: nothing left to cancel, nothing more comes.
        assert_eq!(
            client.cancel_delay(s.delay_id).await.unwrap(),
            CancelOutcome::AlreadyDelivered
        );
        let more = poll_once(client, "ticks", 0, 3, Duration::from_millis(300)).await;
        assert!(more.is_empty(), "a 4th delivery: {more:#?}");
        assert_eq!(pending(client, "ticks").await, 0);
    });
}

#[test]
fn loops_end_at_their_expiry_and_back_off_exponentially() {
    with_topics(&[("expiring", 1), ("backoff", 1)], async |client| {
        // Due at t, t+100, t+200; t+300 would be after the expiry at t+250.
        let t = now_ms() + 1000;
        let expiring = client
            .schedule(
                DelayedMessage::at(Message::new("expiring", "e"), t)
                    .repeat(Loop::every(Duration::from_millis(100)).until(t + 250)),
            )
            .await
            .unwrap();
        assert_eq!(expiring.due_at_ms, t);
        // Intervals 20, 40, then capped at 50 ms: 4 deliveries.
        let backoff = client
            .schedule(
                DelayedMessage::after(Message::new("backoff", "b"), Duration::ZERO).repeat(
                    Loop::every(Duration::from_millis(20))
                        .times(4)
                        .exponential(Some(Duration::from_millis(50))),
                ),
            )
            .await
            .unwrap();

        let got = receive(client, "backoff", 4).await;
        assert_eq!(
            iterations(&got),
            [Some(1), Some(2), Some(3), Some(4)],
            "{got:#?}"
        );
        for (m, earliest) in got.iter().zip([0, 20, 60, 110]) {
            assert!(
                m.timestamp >= backoff.due_at_ms + earliest,
                "delivery {:?} at {}, first due at {}",
                m.loop_iteration,
                m.timestamp,
                backoff.due_at_ms
            );
        }

        let got = receive(client, "expiring", 3).await;
        assert_eq!(iterations(&got), [Some(1), Some(2), Some(3)], "{got:#?}");
        assert!(got[0].timestamp >= t, "{got:#?}");
        assert_eq!(
            client.cancel_delay(expiring.delay_id).await.unwrap(),
            CancelOutcome::AlreadyDelivered
        );
        let more = poll_once(client, "expiring", 0, 3, Duration::from_millis(300)).await;
        assert!(more.is_empty(), "delivered after its expiry: {more:#?}");
    });
}

// ------------------------------------------------------------------ CLI

/// The delay id in `scheduled delay <ID> to ...`.
fn delay_id(out: &str) -> u64 {
    out.strip_prefix("scheduled delay ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no delay id in {out:?}"))
}

#[test]
fn sluice_delay_sends_lists_and_cancels() {
    let broker = Broker::start();
    let sluice = |args: &[&str]| run(&mut broker.sluice(args));
    ok(sluice(&["topic", "create", "cli", "--partitions", "1"]));

    // Due at once: delivered, with its tag and property.
    let out = ok(sluice(&[
        "delay",
        "send",
        "cli",
        "right-away",
        "--after",
        "0s",
        "--tag",
        "eu",
        "--property",
        "trace=abc",
    ]));
    assert!(
        out.starts_with("scheduled delay ") && out.contains(" to cli partition 0, due "),
        "{out}"
    );
    let now_id = delay_id(&out);
    let got = broker.with_client(async |client| receive(client, "cli", 1).await);
    assert_eq!(got.len(), 1, "not delivered: {got:#?}");
    assert_eq!(got[0].delay_id, Some(now_id));
    assert_eq!(got[0].tags, ["eu"]);
    assert_eq!(got[0].properties, [("trace".to_owned(), "abc".into())]);
    assert_eq!(ok(sluice(&["consume", "cli"])), "0/0 tags=eu right-away\n");

    // Due in an hour, given as RFC 3339.
    let due_ms = (now_ms() / 1000 + 3600) * 1000;
    let due = UNIX_EPOCH + Duration::from_millis(due_ms as u64);
    let at = humantime::format_rfc3339_seconds(due).to_string();
    let out = ok(sluice(&["delay", "send", "cli", "later", "--at", &at]));
    let later_id = delay_id(&out);
    let due_text = humantime::format_rfc3339_millis(due).to_string();
    assert!(
        out.contains(&format!(", due {due_text} (in ")),
        "{out} (due {due_text})"
    );
    // The same time as milliseconds since the epoch, as a loop.
    let out = ok(sluice(&[
        "delay",
        "send",
        "cli",
        "later-too",
        "--at",
        &due_ms.to_string(),
        "--every",
        "1m",
        "--times",
        "2",
    ]));
    let loop_id = delay_id(&out);
    assert!(out.contains(&format!(", due {due_text} (in ")), "{out}");

    for args in [&["delay", "list", "cli"][..], &["delay", "list"]] {
        let out = ok(sluice(args));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            cells(lines[0]),
            ["TOPIC", "PENDING", "NEXT-DUE", "IN"],
            "{out}"
        );
        let row = lines
            .iter()
            .map(|l| cells(l))
            .find(|c| c[0] == "cli")
            .unwrap_or_else(|| panic!("no row for cli: {out}"));
        assert_eq!(row[..3], ["cli", "2", due_text.as_str()], "{out}");
        assert_eq!(row[3], "in", "{out}");
    }

    let out = ok(sluice(&["delay", "cancel", &later_id.to_string()]));
    assert_eq!(out, format!("delay {later_id}: cancelled\n"));
    // Any id not cancelled fails the command, after every outcome is printed.
    let (out, err) = exits(
        sluice(&[
            "delay",
            "cancel",
            &loop_id.to_string(),
            &later_id.to_string(),
            "999999",
            &now_id.to_string(),
        ]),
        1,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], format!("delay {loop_id}: cancelled"), "{out}");
    for (line, start) in lines[1..].iter().zip([
        format!("delay {later_id}: not cancelled: already cancelled; "),
        "delay 999999: not cancelled: unknown delay id; ".to_owned(),
        format!("delay {now_id}: not cancelled: already delivered; "),
    ]) {
        assert!(line.starts_with(&start), "{out}");
    }
    assert_eq!(err, "error: 3 of 4 delay(s) not cancelled\n");
    assert_eq!(
        ok(sluice(&["delay", "list", "cli"])),
        "no delayed messages pending\n"
    );

    // Refused by the broker: its message ends the error line.
    let err = fails(sluice(&[
        "delay", "send", "cli", "x", "--after", "1s", "--every", "5ms", "--times", "3",
    ]));
    assert!(
        err.starts_with(
            "error: cannot schedule a message on topic cli: broker error INVALID_ARGUMENT (21): "
        ),
        "{err}"
    );
    // Refused before connecting.
    let err = fails(sluice(&[
        "delay", "send", "cli", "x", "--after", "1s", "--every", "1m",
    ]));
    assert!(
        err.contains("--every needs --times N or --until TIME"),
        "{err}"
    );
    let (_, err) = exits(sluice(&["delay", "send", "cli", "x", "--after", "10"]), 2);
    assert!(err.contains("like 250ms, 10s"), "{err}");
    let (_, err) = exits(sluice(&["delay", "send", "cli", "x"]), 2);
    assert!(err.contains("--after") && err.contains("--at"), "{err}");
}
