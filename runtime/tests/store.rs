//! The store as the broker uses it: topic definitions in RocksDB, data in the
//! log, both from one data directory.

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use sluice_broker::clock::SystemClock;
use sluice_broker::log::{Durability, LogError, TopicConfig};
use sluice_broker::store::{Catalog, Store, StoreError};

use common::store::{batch, open_store};

fn open(dir: &std::path::Path) -> Store {
    open_store(dir, Arc::new(SystemClock))
}

fn one_record() -> BytesMut {
    batch(&[b"hello"])
}

#[test]
fn topics_and_their_data_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TopicConfig {
        partitions: 3,
        durability: Durability::Interval(50),
        ..TopicConfig::default()
    };
    {
        let store = open(dir.path());
        store.create_topic("orders", cfg.clone()).unwrap();
        let p = store.log().partition("orders", 2).unwrap();
        p.append(one_record()).unwrap();
        p.append(one_record()).unwrap();
        store.close().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.meta().get_topic("orders").unwrap(), Some(cfg));
    let topic = store.log().topic("orders").unwrap();
    assert_eq!(topic.partitions().len(), 3);
    assert_eq!(topic.partition(2).unwrap().high_watermark(), 2);
    assert_eq!(topic.partition(0).unwrap().high_watermark(), 0);
}

#[test]
fn deleting_a_topic_removes_definition_offsets_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("a", TopicConfig::default()).unwrap();
    store.create_topic("b", TopicConfig::default()).unwrap();
    store
        .meta()
        .commit_offsets("g", &[("a", 0, 5), ("b", 0, 7)])
        .unwrap();
    store.delete_topic("a").unwrap();
    assert!(store.meta().get_topic("a").unwrap().is_none());
    assert_eq!(store.meta().committed_offset("g", "a", 0).unwrap(), None);
    assert_eq!(store.meta().committed_offset("g", "b", 0).unwrap(), Some(7));
    assert!(!dir.path().join("log").join("a").exists());
    assert!(matches!(
        store.delete_topic("a"),
        Err(StoreError::Log(LogError::UnknownTopic(_)))
    ));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.log().topics().len(), 1);
}

#[test]
fn bad_topic_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", TopicConfig::default()).unwrap();
    assert!(matches!(
        store.create_topic("t", TopicConfig::default()),
        Err(StoreError::Log(LogError::TopicExists(_)))
    ));
    assert!(matches!(
        store.create_topic("bad name", TopicConfig::default()),
        Err(StoreError::Log(LogError::InvalidTopicName { .. }))
    ));
    let huge = TopicConfig {
        segment_bytes: 1 << 40,
        ..TopicConfig::default()
    };
    assert!(matches!(
        store.create_topic("u", huge),
        Err(StoreError::Log(LogError::InvalidConfig(_)))
    ));
    assert_eq!(store.meta().list_topics().unwrap().len(), 1);
    assert!(!dir.path().join("log").join("u").exists());
}

#[test]
fn data_of_a_topic_missing_from_metadata_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_topic("t", TopicConfig::default()).unwrap();
        store
            .log()
            .partition("t", 0)
            .unwrap()
            .append(one_record())
            .unwrap();
    }
    // Lose the metadata: the log's files must not be deleted for it.
    std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
    let store = open(dir.path());
    assert!(store.log().topics().is_empty());
    assert!(dir.path().join("log/t/0/00000000000000000000.log").exists());
}
