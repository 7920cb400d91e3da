//! The catalog: which topics exist, with what settings, and how far each
//! consumer group has read them. Two column families of the metadata store,
//! kept together because deleting a topic must drop every group's offsets for
//! it in the same atomic write (offsets left behind would be picked up by a
//! later topic of the same name, whose offsets start again at zero).
//!
//! Byte layouts are in [`keys`].

pub mod keys;

use sluice_log::TopicConfig;
use sluice_meta::{Batch, Keyspace, MetaError, MetaStore, WriteMode, prefix_successor};

/// Topic name → topic settings.
pub const CF_TOPICS: &str = "topics";

/// (group, topic, partition) → committed offset.
pub const CF_GROUP_OFFSETS: &str = "group_offsets";

/// The catalog's column families, for [`MetaStore::open`].
pub const KEYSPACES: &[Keyspace] = &[
    Keyspace::plain(CF_TOPICS),
    Keyspace::plain(CF_GROUP_OFFSETS),
];

const TOPICS: Keyspace = Keyspace::plain(CF_TOPICS);
const GROUP_OFFSETS: Keyspace = Keyspace::plain(CF_GROUP_OFFSETS);

/// Topic and group-offset records, read and written on the metadata store.
///
/// An extension of [`MetaStore`] rather than a wrapper, so that one
/// [`MetaStore::call`] closure can mix catalog calls with the caller's own
/// tables. Every method blocks on disk.
pub trait Catalog {
    /// Creates or replaces a topic's settings. The caller validates `cfg`
    /// (`TopicConfig::validate`); the store keeps whatever it is given.
    fn put_topic(&self, name: &str, cfg: &TopicConfig) -> Result<(), MetaError>;
    /// A topic's settings, or `None` if there is no such topic.
    fn get_topic(&self, name: &str) -> Result<Option<TopicConfig>, MetaError>;
    /// Every topic, sorted by name.
    fn list_topics(&self) -> Result<Vec<(String, TopicConfig)>, MetaError>;
    /// Deletes a topic together with every group's committed offsets for it.
    fn delete_topic(&self, name: &str) -> Result<bool, MetaError>;
    /// Records `group`'s committed offsets (synced), all or none.
    fn commit_offsets(&self, group: &str, offsets: &[(&str, u32, u64)]) -> Result<(), MetaError>;
    /// [`Catalog::commit_offsets`], choosing whether the write waits for an fsync.
    fn commit_offsets_with(
        &self,
        group: &str,
        offsets: &[(&str, u32, u64)],
        mode: WriteMode,
    ) -> Result<(), MetaError>;
    /// Adds offset commits of `group` to `batch`, for a caller that writes
    /// them together with other state in one atomic write.
    fn stage_offsets(
        &self,
        batch: &mut Batch,
        group: &str,
        offsets: &[(&str, u32, u64)],
    ) -> Result<(), MetaError>;
    /// The offset `group` committed for one partition, if any.
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, MetaError>;
    /// Every offset `group` has committed, sorted by topic then partition.
    fn group_offsets(&self, group: &str) -> Result<Vec<(String, u32, u64)>, MetaError>;
    /// Every group with at least one committed offset, sorted by name.
    fn list_groups(&self) -> Result<Vec<String>, MetaError>;
    /// Forgets every offset `group` has committed.
    fn delete_group(&self, group: &str) -> Result<bool, MetaError>;
}

impl Catalog for MetaStore {
    // ------------------------------------------------------------ topics ---

    /// Creates or replaces a topic's settings. The caller validates `cfg`
    /// (`TopicConfig::validate`); the store keeps whatever it is given.
    fn put_topic(&self, name: &str, cfg: &TopicConfig) -> Result<(), MetaError> {
        let key = keys::topic_key(name)?;
        let value = keys::encode_topic_value(cfg)?;
        let mut batch = Batch::default();
        batch.put(&self.table(&TOPICS)?, key, value);
        self.write(batch, WriteMode::Synced)?;
        tracing::debug!(topic = name, "stored topic config");
        Ok(())
    }

    /// A topic's settings, or `None` if there is no such topic.
    fn get_topic(&self, name: &str) -> Result<Option<TopicConfig>, MetaError> {
        let key = keys::topic_key(name)?;
        match self.table(&TOPICS)?.get(key)? {
            Some(value) => Ok(Some(keys::decode_topic_value(&value)?)),
            None => Ok(None),
        }
    }

    /// Every topic, sorted by name. Topic keys are the bare names, so RocksDB's
    /// byte order is already name order.
    fn list_topics(&self) -> Result<Vec<(String, TopicConfig)>, MetaError> {
        self.table(&TOPICS)?
            .scan()
            .map(|item| {
                let (key, value) = item?;
                Ok((
                    keys::decode_topic_key(&key)?,
                    keys::decode_topic_value(&value)?,
                ))
            })
            .collect()
    }

    /// Deletes a topic together with every group's committed offsets for it,
    /// in one atomic write: offsets left behind would be picked up by a later
    /// topic of the same name, whose offsets start again at zero.
    ///
    /// Returns whether the topic existed. Offsets for the topic are removed
    /// even if it did not, which also cleans up after a caller that committed
    /// offsets for a topic that was being deleted.
    fn delete_topic(&self, name: &str) -> Result<bool, MetaError> {
        let key = keys::topic_key(name)?;
        let topics = self.table(&TOPICS)?;
        let offsets = self.table(&GROUP_OFFSETS)?;
        let existed = topics.contains(&key)?;

        let mut batch = Batch::default();
        batch.delete(&topics, &key);

        // Visit each group once: jump to its (group, topic) range, take the
        // keys there, then jump past the group. Cost is one seek per group
        // plus the deleted keys, not a read of every offset of every group.
        let mut removed = 0usize;
        let mut it = offsets.cursor(Default::default());
        it.seek_to_first();
        while let Some(first) = it.key() {
            let group = keys::decode_offset_key_group(first)?.to_owned();
            let range = keys::group_topic_prefix(&group, name)?;
            it.seek(&range);
            while let Some(k) = it.key().filter(|k| k.starts_with(&range)) {
                batch.delete(&offsets, k);
                removed += 1;
                it.next();
            }
            match prefix_successor(&keys::group_prefix(&group)?) {
                Some(next_group) => it.seek(next_group),
                None => break,
            }
        }
        it.status()?;
        drop(it);

        self.write(batch, WriteMode::Synced)?;
        tracing::debug!(
            topic = name,
            existed,
            offsets_removed = removed,
            "deleted topic"
        );
        Ok(existed)
    }

    // ----------------------------------------------------- group offsets ---

    /// Records `group`'s committed offsets, given as (topic, partition,
    /// offset), all or none. If a (topic, partition) appears twice the last
    /// one wins.
    ///
    /// The store does not check that the topics exist: that is the caller's
    /// decision, made under whatever lock orders commits against deletes.
    fn commit_offsets(&self, group: &str, offsets: &[(&str, u32, u64)]) -> Result<(), MetaError> {
        self.commit_offsets_with(group, offsets, WriteMode::Synced)
    }

    /// [`commit_offsets`](Self::commit_offsets), choosing whether the write
    /// waits for an fsync. Consumer groups commit their progress every few
    /// tens of milliseconds `Unsynced`: the write survives a crash of the
    /// broker process (it is in the OS's page cache) but not a power loss,
    /// which costs redeliveries, never a lost message — and keeps those
    /// fsyncs from queueing behind (and in front of) the log's.
    fn commit_offsets_with(
        &self,
        group: &str,
        offsets: &[(&str, u32, u64)],
        mode: WriteMode,
    ) -> Result<(), MetaError> {
        keys::validate_name("group", group)?;
        if offsets.is_empty() {
            // Nothing to make durable; skip the fsync.
            return Ok(());
        }
        let mut batch = Batch::default();
        self.stage_offsets(&mut batch, group, offsets)?;
        self.write(batch, mode)
    }

    fn stage_offsets(
        &self,
        batch: &mut Batch,
        group: &str,
        offsets: &[(&str, u32, u64)],
    ) -> Result<(), MetaError> {
        keys::validate_name("group", group)?;
        let table = self.table(&GROUP_OFFSETS)?;
        for &(topic, partition, offset) in offsets {
            batch.put(
                &table,
                keys::offset_key(group, topic, partition)?,
                keys::encode_offset_value(offset),
            );
        }
        Ok(())
    }

    /// The offset `group` committed for one partition, if any.
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, MetaError> {
        let key = keys::offset_key(group, topic, partition)?;
        match self.table(&GROUP_OFFSETS)?.get(key)? {
            Some(value) => Ok(Some(keys::decode_offset_value(&value)?)),
            None => Ok(None),
        }
    }

    /// Every offset `group` has committed, as (topic, partition, offset),
    /// sorted by topic name then partition.
    fn group_offsets(&self, group: &str) -> Result<Vec<(String, u32, u64)>, MetaError> {
        let prefix = keys::group_prefix(group)?;
        let mut out = Vec::new();
        for item in self.table(&GROUP_OFFSETS)?.scan_prefix(&prefix) {
            let (key, value) = item?;
            let key = keys::decode_offset_key(&key)?;
            out.push((key.topic, key.partition, keys::decode_offset_value(&value)?));
        }
        // Keys order topics by length first (see `keys`); callers want names.
        out.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Every group with at least one committed offset, sorted by name.
    fn list_groups(&self) -> Result<Vec<String>, MetaError> {
        // One seek per group: read a group's name from its first key, then
        // jump past all of its keys.
        let mut groups = Vec::new();
        let table = self.table(&GROUP_OFFSETS)?;
        let mut it = table.cursor(Default::default());
        it.seek_to_first();
        while let Some(key) = it.key() {
            let group = keys::decode_offset_key_group(key)?.to_owned();
            let next = prefix_successor(&keys::group_prefix(&group)?);
            groups.push(group);
            match next {
                Some(next) => it.seek(next),
                None => break,
            }
        }
        it.status()?;
        // Keys order groups by length first (see `keys`); callers want names.
        groups.sort_unstable();
        Ok(groups)
    }

    /// Forgets every offset `group` has committed, in one atomic write.
    /// Returns whether there was anything to forget.
    fn delete_group(&self, group: &str) -> Result<bool, MetaError> {
        let prefix = keys::group_prefix(group)?;
        let table = self.table(&GROUP_OFFSETS)?;
        let mut batch = Batch::default();
        for item in table.scan_prefix(&prefix) {
            let (key, _) = item?;
            batch.delete(&table, key);
        }
        let removed = batch.len();
        if removed == 0 {
            return Ok(false);
        }
        self.write(batch, WriteMode::Synced)?;
        tracing::debug!(group, offsets_removed = removed, "deleted group offsets");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::sync::Arc;

    fn topic_cfg(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    fn open_temp() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path(), KEYSPACES).unwrap();
        (dir, store)
    }

    #[test]
    fn topics_round_trip() {
        let (_dir, store) = open_temp();
        assert_eq!(store.get_topic("orders").unwrap(), None);
        assert!(store.list_topics().unwrap().is_empty());

        for (name, parts) in [("orders", 3), ("audit", 1), ("payments", 8)] {
            store.put_topic(name, &topic_cfg(parts)).unwrap();
        }
        assert_eq!(store.get_topic("orders").unwrap(), Some(topic_cfg(3)));

        // Replacing keeps one entry.
        store.put_topic("orders", &topic_cfg(4)).unwrap();
        let listed = store.list_topics().unwrap();
        let names: Vec<_> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["audit", "orders", "payments"]);
        assert_eq!(listed[1].1, topic_cfg(4));
    }

    #[test]
    fn reopen_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetaStore::open(dir.path(), KEYSPACES).unwrap();
            store.put_topic("t", &topic_cfg(2)).unwrap();
            store
                .commit_offsets("g", &[("t", 0, 10), ("t", 1, 20)])
                .unwrap();
        }
        let store = MetaStore::open(dir.path(), KEYSPACES).unwrap();
        assert_eq!(store.get_topic("t").unwrap(), Some(topic_cfg(2)));
        assert_eq!(store.committed_offset("g", "t", 1).unwrap(), Some(20));
        assert_eq!(store.list_groups().unwrap(), ["g"]);
        assert!(format!("{store:?}").starts_with("MetaStore"));
    }

    #[test]
    fn commit_and_read_offsets() {
        let (_dir, store) = open_temp();
        assert_eq!(store.committed_offset("g", "t", 0).unwrap(), None);
        assert!(store.group_offsets("g").unwrap().is_empty());

        store
            .commit_offsets("g", &[("t", 1, 5), ("t", 0, 7), ("aa", 3, 1), ("b", 0, 2)])
            .unwrap();
        store.commit_offsets("g", &[("t", 1, 9)]).unwrap();
        store.commit_offsets("g", &[]).unwrap();

        assert_eq!(store.committed_offset("g", "t", 1).unwrap(), Some(9));
        assert_eq!(store.committed_offset("g", "t", 0).unwrap(), Some(7));
        assert_eq!(store.committed_offset("g", "t", 2).unwrap(), None);
        assert_eq!(store.committed_offset("other", "t", 0).unwrap(), None);
        // Sorted by topic name then partition, although "b" sorts before
        // "aa" in the keys (shorter name first).
        assert_eq!(
            store.group_offsets("g").unwrap(),
            [
                ("aa".to_owned(), 3, 1),
                ("b".to_owned(), 0, 2),
                ("t".to_owned(), 0, 7),
                ("t".to_owned(), 1, 9),
            ]
        );
    }

    #[test]
    fn group_prefixes_do_not_mix() {
        let (_dir, store) = open_temp();
        // With unprefixed keys "a"+"bx" and "ab"+"x" would collide.
        store.commit_offsets("a", &[("bx", 0, 1)]).unwrap();
        store.commit_offsets("ab", &[("x", 0, 2)]).unwrap();
        store.commit_offsets("b", &[("x", 0, 3)]).unwrap();

        assert_eq!(store.group_offsets("a").unwrap(), [("bx".to_owned(), 0, 1)]);
        assert_eq!(store.group_offsets("ab").unwrap(), [("x".to_owned(), 0, 2)]);
        assert_eq!(store.committed_offset("a", "bx", 0).unwrap(), Some(1));
        assert_eq!(store.committed_offset("ab", "x", 0).unwrap(), Some(2));

        assert!(store.delete_group("a").unwrap());
        assert!(store.group_offsets("a").unwrap().is_empty());
        assert_eq!(store.group_offsets("ab").unwrap(), [("x".to_owned(), 0, 2)]);
    }

    #[test]
    fn list_groups_sorted_by_name() {
        let (_dir, store) = open_temp();
        assert!(store.list_groups().unwrap().is_empty());
        for group in ["zz", "b", "ab", "a"] {
            store
                .commit_offsets(group, &[("t", 0, 1), ("t", 1, 1), ("u", 0, 1)])
                .unwrap();
        }
        assert_eq!(store.list_groups().unwrap(), ["a", "ab", "b", "zz"]);
    }

    #[test]
    fn delete_group_removes_only_that_group() {
        let (_dir, store) = open_temp();
        store
            .commit_offsets("g1", &[("t", 0, 1), ("u", 0, 2)])
            .unwrap();
        store.commit_offsets("g2", &[("t", 0, 3)]).unwrap();

        assert!(store.delete_group("g1").unwrap());
        assert!(!store.delete_group("g1").unwrap());
        assert!(!store.delete_group("never").unwrap());
        assert_eq!(store.committed_offset("g1", "t", 0).unwrap(), None);
        assert_eq!(store.committed_offset("g2", "t", 0).unwrap(), Some(3));
        assert_eq!(store.list_groups().unwrap(), ["g2"]);
    }

    #[test]
    fn delete_topic_removes_its_offsets_in_every_group() {
        let (_dir, store) = open_temp();
        for t in ["t", "tt", "u"] {
            store.put_topic(t, &topic_cfg(2)).unwrap();
        }
        store
            .commit_offsets("g1", &[("t", 0, 1), ("t", 1, 2), ("tt", 0, 3), ("u", 0, 4)])
            .unwrap();
        store.commit_offsets("g2", &[("t", 1, 5)]).unwrap();
        store.commit_offsets("g3", &[("u", 1, 6)]).unwrap();

        assert!(store.delete_topic("t").unwrap());

        assert_eq!(store.get_topic("t").unwrap(), None);
        let names: Vec<_> = store
            .list_topics()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["tt", "u"]);
        assert_eq!(
            store.group_offsets("g1").unwrap(),
            [("tt".to_owned(), 0, 3), ("u".to_owned(), 0, 4)]
        );
        assert!(store.group_offsets("g2").unwrap().is_empty());
        assert_eq!(store.group_offsets("g3").unwrap(), [("u".to_owned(), 1, 6)]);
        assert_eq!(store.list_groups().unwrap(), ["g1", "g3"]);

        // Deleting again reports that nothing was there and changes nothing.
        assert!(!store.delete_topic("t").unwrap());
        assert_eq!(store.group_offsets("g1").unwrap().len(), 2);
    }

    #[test]
    fn delete_topic_cleans_orphan_offsets() {
        let (_dir, store) = open_temp();
        store
            .commit_offsets("g", &[("gone", 0, 1), ("kept", 0, 2)])
            .unwrap();
        assert!(!store.delete_topic("gone").unwrap());
        assert_eq!(
            store.group_offsets("g").unwrap(),
            [("kept".to_owned(), 0, 2)]
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        let (_dir, store) = open_temp();
        let long = "x".repeat(keys::MAX_NAME_LEN + 1);
        let invalid = |r: Result<(), MetaError>| matches!(r, Err(MetaError::InvalidName(_)));

        assert!(invalid(store.put_topic("", &topic_cfg(1))));
        assert!(invalid(store.put_topic(&long, &topic_cfg(1))));
        assert!(invalid(store.get_topic("").map(drop)));
        assert!(invalid(store.delete_topic(&long).map(drop)));
        assert!(invalid(store.commit_offsets("", &[("t", 0, 1)])));
        assert!(invalid(store.commit_offsets("", &[])));
        assert!(invalid(store.commit_offsets(&long, &[("t", 0, 1)])));
        assert!(invalid(
            store.commit_offsets("g", &[("t", 0, 1), ("", 0, 1)])
        ));
        assert!(invalid(store.committed_offset("g", &long, 0).map(drop)));
        assert!(invalid(store.group_offsets("").map(drop)));
        assert!(invalid(store.delete_group("").map(drop)));

        // A rejected batch writes nothing, not even its valid entries.
        assert!(store.list_groups().unwrap().is_empty());
        // The longest allowed name works.
        let max = "y".repeat(keys::MAX_NAME_LEN);
        store.put_topic(&max, &topic_cfg(1)).unwrap();
        store.commit_offsets(&max, &[(&max, 0, 1)]).unwrap();
        assert_eq!(store.committed_offset(&max, &max, 0).unwrap(), Some(1));
    }

    fn assert_corrupt<T: fmt::Debug>(r: Result<T, MetaError>, want: &str) {
        match r {
            Err(MetaError::Corrupt { cf, ref reason }) => {
                assert_eq!(cf, want, "{reason}");
            }
            other => panic!("expected Corrupt in {want}, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_entries_are_errors_not_panics() {
        let (_dir, store) = open_temp();
        let topics = store.table(&TOPICS).unwrap();
        let offsets = store.table(&GROUP_OFFSETS).unwrap();
        let put = |table: &sluice_meta::Table<'_>, k: &[u8], v: &[u8]| {
            let mut batch = Batch::default();
            batch.put(table, k, v);
            store.write(batch, WriteMode::Synced).unwrap();
        };

        put(&topics, b"bad", b"\x01{not json");
        put(&topics, b"v9", b"\x09{}");
        assert_corrupt(store.get_topic("bad"), CF_TOPICS);
        assert_corrupt(store.get_topic("v9"), CF_TOPICS);
        assert_corrupt(store.list_topics(), CF_TOPICS);

        let key = keys::offset_key("g", "t", 0).unwrap();
        put(&offsets, &key, b"\x01short");
        assert_corrupt(store.committed_offset("g", "t", 0), CF_GROUP_OFFSETS);
        assert_corrupt(store.group_offsets("g"), CF_GROUP_OFFSETS);

        // A key that does not parse breaks scans over it, loudly.
        put(&offsets, &[0u8, 9, b'x'], &[1u8; 9]);
        assert_corrupt(store.list_groups(), CF_GROUP_OFFSETS);
        assert_corrupt(store.delete_topic("t"), CF_GROUP_OFFSETS);
        let err = store.get_topic("bad").unwrap_err();
        assert_eq!(err.code(), "meta.corrupt");
        assert!(err.to_string().contains("topics"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn call_runs_off_the_async_workers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(dir.path(), KEYSPACES).unwrap());

        store
            .call(|m| m.put_topic("t", &topic_cfg(3)))
            .await
            .unwrap();
        let got = store.call(|m| m.get_topic("t")).await.unwrap();
        assert_eq!(got, Some(topic_cfg(3)));

        let offset = store
            .call(|m| {
                m.commit_offsets("g", &[("t", 2, 42)])?;
                m.committed_offset("g", "t", 2)
            })
            .await
            .unwrap();
        assert_eq!(offset, Some(42));

        // Errors from the closure come back unchanged.
        let err = store.call(|m| m.get_topic("")).await.unwrap_err();
        assert!(matches!(err, MetaError::InvalidName(_)), "{err}");
    }

    #[tokio::test]
    async fn call_reports_a_panic_as_task_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(dir.path(), KEYSPACES).unwrap());
        let err = store
            .call(|_| -> Result<(), MetaError> { panic!("boom") })
            .await
            .unwrap_err();
        match err {
            MetaError::TaskFailed(msg) => assert!(msg.contains("boom"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        // The store is still usable afterwards.
        store.call(|m| m.list_topics()).await.unwrap();
    }
}
