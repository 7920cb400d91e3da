//! End to end over QUIC: the real broker (in process, on 127.0.0.1:0, with a
//! temp data dir) and the real client.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Client, ClientError, ConsumerConfig, ErrorCode, Message, Partitioning, ProducerConfig, SeekTo,
};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::ops::{Acks, ProduceEntry, ProduceRequest};

use common::AsyncBroker;
use common::client::consume_topic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_produce_and_consume_round_trip_the_message_model() {
    let broker = AsyncBroker::start().await;
    let client = broker.client().await;
    client
        .create_topic("orders", 3, &[("durability", "sync")])
        .await
        .unwrap();
    let err = client.create_topic("orders", 3, &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");
    let err = client
        .create_topic("bad", 1, &[("durability", "sometimes")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidConfig), "{err}");
    let topics = client.list_topics().await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(
        (topics[0].name.as_str(), topics[0].partitions),
        ("orders", 3)
    );

    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    assert!(producer.producer_id() >= 0);
    let msg = Message::new("orders", "hello")
        .key("customer-7")
        .tag("eu")
        .tag("vip")
        .property("trace", "abc");
    let id = msg.id;
    let d = producer.send(msg).await.unwrap();
    assert_eq!(d.id, id);
    // Same key, same partition: key order is kept.
    let d2 = producer
        .send(Message::new("orders", "again").key("customer-7"))
        .await
        .unwrap();
    assert_eq!(d2.partition, d.partition);
    assert_eq!(d2.offset, d.offset + 1);
    let explicit = producer
        .send(Message::new("orders", "p2").partition(Partitioning::Explicit(2)))
        .await
        .unwrap();
    assert_eq!(explicit.partition, 2);

    let desc = client.describe_topic("orders").await.unwrap();
    assert_eq!(desc.partitions.len(), 3);
    assert!(
        desc.config
            .iter()
            .any(|(k, v)| k == "durability" && v == "sync")
    );

    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer
        .assign("orders", &[d.partition], SeekTo::Earliest)
        .await
        .unwrap();
    let got = consumer.poll().await.unwrap();
    assert_eq!(got.len(), 2);
    let m = &got[0];
    assert_eq!(m.value, Bytes::from_static(b"hello"));
    assert_eq!(m.key.as_deref(), Some(&b"customer-7"[..]));
    assert_eq!(m.tags, vec!["eu".to_owned(), "vip".to_owned()]);
    assert_eq!(
        m.properties,
        vec![("trace".to_owned(), Bytes::from_static(b"abc"))]
    );
    assert_eq!(m.id, Some(id));
    assert_eq!(m.offset, d.offset);

    // Seek by time: everything was written after `before`.
    consumer
        .seek("orders", d.partition, SeekTo::Timestamp(0))
        .await
        .unwrap();
    assert_eq!(consumer.poll().await.unwrap().len(), 2);
    consumer
        .seek("orders", d.partition, SeekTo::Latest)
        .await
        .unwrap();
    assert_eq!(consumer.positions()[0].2, d2.offset + 1);

    client.delete_topic("orders").await.unwrap();
    assert!(client.list_topics().await.unwrap().is_empty());
    let err = producer
        .send(Message::new("orders", "gone"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("orders"), "{err}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sends_on_one_connection_are_acknowledged_in_order() {
    let broker = AsyncBroker::start().await;
    let client = broker.client().await;
    client.create_topic("t", 4, &[]).await.unwrap();
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    let mut futures = Vec::new();
    for i in 0..1000u32 {
        let msg = Message::new("t", format!("{i}")).key(format!("k{}", i % 10));
        futures.push(producer.send_async(msg).await.unwrap());
    }
    let mut deliveries = Vec::new();
    for f in futures {
        deliveries.push(f.await.unwrap());
    }
    // Per partition, offsets follow send order.
    let mut last: HashMap<u32, u64> = HashMap::new();
    for d in &deliveries {
        if let Some(prev) = last.insert(d.partition, d.offset) {
            assert!(d.offset > prev, "out of order on partition {}", d.partition);
        }
    }
    let got = consume_topic(&client, "t", 1000).await;
    assert_eq!(got.len(), 1000);
    // Per key, values arrive in the order they were sent.
    let mut per_key: HashMap<Bytes, Vec<u32>> = HashMap::new();
    for m in &got {
        per_key
            .entry(m.key.clone().unwrap())
            .or_default()
            .push(std::str::from_utf8(&m.value).unwrap().parse().unwrap());
    }
    for values in per_key.values() {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_send_is_retried_without_duplicates() {
    let broker = AsyncBroker::start().await;
    let client = broker.client().await;
    client.create_topic("t", 2, &[]).await.unwrap();
    let producer = client
        .producer(ProducerConfig {
            retry_backoff: Duration::from_millis(5),
            ..ProducerConfig::default()
        })
        .await
        .unwrap();
    let mut futures = Vec::new();
    for i in 0..2000u32 {
        futures.push(
            producer
                .send_async(Message::new("t", format!("{i}")))
                .await
                .unwrap(),
        );
        if i == 700 {
            // Drop the connection with hundreds of sends in flight.
            client.connection().kill_connection().await;
        }
    }
    for f in futures {
        f.await.unwrap();
    }
    let got = consume_topic(&client, "t", 2000).await;
    let ids: HashSet<_> = got.iter().map(|m| m.id.unwrap()).collect();
    assert_eq!(ids.len(), 2000, "some message was lost");
    assert_eq!(got.len(), 2000, "some message was written twice");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_clear_auth_error() {
    let broker = AsyncBroker::start_with(|c| {
        c.auth.allow_anonymous = false;
        c.auth.tokens = vec!["s3cret".into()];
    })
    .await;
    let err = Client::connect(broker.client_config().token("guess"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    let err = Client::connect(broker.client_config()).await.unwrap_err();
    assert!(err.to_string().contains("requires a token"), "{err}");
    let ok = Client::connect(broker.client_config().token("s3cret"))
        .await
        .unwrap();
    ok.list_topics().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_a_clear_error_and_the_connection_stays_usable() {
    let broker = AsyncBroker::start_with(|c| {
        c.limits.max_message_bytes = 64 << 10;
        c.limits.max_frame_bytes = 1 << 20;
    })
    .await;
    let client = broker.client().await;
    client.create_topic("t", 1, &[]).await.unwrap();
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    // Caught by the client before sending.
    let err = producer
        .send(Message::new("t", vec![0u8; 100 << 10]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::MessageTooLarge { .. }), "{err}");
    // Caught by the broker when a client sends it anyway.
    let mut b = BatchBuilder::new(0);
    b.push(0, None, Some(&vec![1u8; 200 << 10]), &[]);
    let stream = client.connection().open_stream().await.unwrap();
    let req = ProduceRequest {
        acks: Acks::Durable,
        entries: vec![ProduceEntry {
            topic: "t".into(),
            partition: 0,
            batch: b.finish(),
        }],
    };
    let resp = stream.request(&req, None).await.unwrap();
    assert_eq!(resp.results[0].error, ErrorCode::MessageTooLarge);
    assert!(
        resp.results[0].message.contains("limit"),
        "{}",
        resp.results[0].message
    );
    // The same stream and connection keep working.
    producer.send(Message::new("t", "small")).await.unwrap();
    let resp = stream
        .request(&sluice_protocol::ops::ListTopicsRequest, None)
        .await
        .unwrap();
    assert_eq!(resp.topics.len(), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_stream() {
    let broker = AsyncBroker::start_with(|c| c.limits.max_frame_bytes = 1 << 20).await;
    let client = broker.client().await;
    client.create_topic("t", 1, &[]).await.unwrap();
    // A long poll in flight on another stream of the same connection.
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait: Duration::from_secs(20),
        ..ConsumerConfig::default()
    });
    consumer.assign("t", &[0], SeekTo::Earliest).await.unwrap();
    let poll = tokio::spawn(async move { consumer.poll().await });

    // A frame declaring 100 MiB, over the 1 MiB limit.
    let (mut send, mut recv) = client.connection().open_raw_stream().await.unwrap();
    send.write_all(&[0x06, 0x40, 0x00, 0x00, 0x00, 0x20, 0, 0, 0, 9])
        .await
        .unwrap();
    let reply = recv.read_to_end(1 << 16).await.unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("over the limit"), "{text}");
    assert_eq!(u16::from_be_bytes([reply[4], reply[5]]), 0xFFFF);

    // A frame too short to hold op and request id.
    let (mut send, mut recv) = client.connection().open_raw_stream().await.unwrap();
    send.write_all(&[0, 0, 0, 2, 0, 0]).await.unwrap();
    let reply = recv.read_to_end(1 << 16).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("shorter"));

    // A well-framed request whose payload is garbage: an error, stream open.
    let stream = client.connection().open_stream().await.unwrap();
    let (mut send, mut recv) = client.connection().open_raw_stream().await.unwrap();
    let mut frame = bytes::BytesMut::new();
    sluice_protocol::frame::encode(0x0013, 7, &[0xff, 0xff], &mut frame);
    sluice_protocol::frame::encode(0x0012, 8, &[], &mut frame);
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 16).await.unwrap();
    let mut decoder = sluice_protocol::frame::FrameDecoder::default();
    decoder.extend(&reply);
    let first = decoder.decode().unwrap().unwrap();
    assert_eq!((first.op, first.request_id), (0xFFFF, 7));
    let second = decoder.decode().unwrap().unwrap();
    assert_eq!((second.op, second.request_id), (0x8012, 8));

    // The connection's other streams are unaffected: the long poll is still
    // waiting and receives what is produced now.
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    producer.send(Message::new("t", "after")).await.unwrap();
    let got = poll.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    stream
        .request(&sluice_protocol::ops::ListTopicsRequest, None)
        .await
        .unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_and_batch_sends_arrive() {
    let broker = AsyncBroker::start().await;
    let client = broker.client().await;
    client.create_topic("t", 1, &[]).await.unwrap();
    let producer = client
        .producer(ProducerConfig {
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        })
        .await
        .unwrap();
    let results = producer
        .send_batch((0..50).map(|i| Message::new("t", format!("b{i}"))))
        .await;
    assert!(results.iter().all(Result::is_ok));
    for i in 0..5 {
        producer
            .send_oneway(Message::new("t", format!("o{i}")))
            .await
            .unwrap();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .send_with_callback(Message::new("t", "cb"), move |r| {
            let _ = tx.send(r.map(|d| d.offset));
        })
        .await
        .unwrap();
    let offset = rx.await.unwrap().unwrap();
    assert!(offset >= 50);
    let got = consume_topic(&client, "t", 56).await;
    assert_eq!(got.len(), 56);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_in_flight_requests_then_refuses() {
    let broker = AsyncBroker::start().await;
    let client = broker.client().await;
    client.create_topic("t", 1, &[]).await.unwrap();
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    producer.send(Message::new("t", "x")).await.unwrap();
    // A long poll in flight is answered (empty) when the broker stops.
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait: Duration::from_secs(60),
        ..ConsumerConfig::default()
    });
    consumer.assign("t", &[0], SeekTo::Latest).await.unwrap();
    let poll = tokio::spawn(async move { consumer.poll().await });
    tokio::task::yield_now().await;
    let addr = broker.node().addr();
    let config = broker.client_config();
    let _dir = broker.stop().await;
    let polled = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(polled.map(|m| m.is_empty()).unwrap_or(true));
    let err = Client::connect(config).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unreachable { .. }),
        "{addr}: {err:?}"
    );
}
