//! Byte layouts of the keys and values in the catalog's column families.
//!
//! These bytes outlive any one build of the broker, so every layout is
//! written down here and nowhere else, values carry a version byte so they can
//! evolve, and every decoder returns [`MetaError::Corrupt`] instead of
//! panicking on bytes it does not understand.
//!
//! | CF              | key                                                        | value                          |
//! |-----------------|------------------------------------------------------------|--------------------------------|
//! | `topics`        | topic name, UTF-8                                          | `1` ++ JSON of `TopicConfig`   |
//! | `group_offsets` | u16 BE len ++ group ++ u16 BE len ++ topic ++ u32 BE part. | `1` ++ u64 BE next offset      |
//!
//! Integers are big-endian so that byte order is numeric order. The names in
//! offset keys are length-prefixed so that no group's keys can be a prefix of
//! another group's: with plain concatenation the keys of group `a` for topic
//! `bx` and of group `ab` for topic `x` would be indistinguishable, and a
//! prefix scan for group `a` would return group `ab`'s offsets.
//!
//! The price of the length prefix is the order: RocksDB orders offset keys by
//! (group length, group, topic length, topic, partition), not alphabetically.
//! What callers can rely on is that one group's keys are contiguous, one
//! (group, topic)'s keys are contiguous within them, and those are ordered by
//! partition. Listings that promise alphabetical order sort in memory.

use sluice_log::TopicConfig;
use sluice_meta::MetaError;

use super::{CF_GROUP_OFFSETS, CF_TOPICS};

/// Longest topic or group name, in bytes. Kafka's limit, so names that work
/// there work here; it also keeps every key far below the u16 length prefix.
pub const MAX_NAME_LEN: usize = 249;

/// Version byte of the values in the `topics` column family.
pub const TOPIC_VALUE_VERSION: u8 = 1;

/// Version byte of the values in the `group_offsets` column family.
pub const OFFSET_VALUE_VERSION: u8 = 1;

/// Length of an encoded offset value: version byte + u64.
const OFFSET_VALUE_LEN: usize = 1 + 8;

/// Checks that `name` can be stored as a topic or group name.
///
/// `what` says which kind of name it is, for the error message.
pub fn validate_name(what: &str, name: &str) -> Result<(), MetaError> {
    if name.is_empty() {
        return Err(MetaError::InvalidName(format!("{what} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(MetaError::InvalidName(format!(
            "{what} name is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- topics ---

/// Key of a topic in the `topics` column family: the name itself, so that
/// RocksDB's byte order is the alphabetical (`str`) order of the names.
pub fn topic_key(name: &str) -> Result<Vec<u8>, MetaError> {
    validate_name("topic", name)?;
    Ok(name.as_bytes().to_vec())
}

/// Decodes a key of the `topics` column family back into the topic name.
pub fn decode_topic_key(key: &[u8]) -> Result<String, MetaError> {
    match std::str::from_utf8(key) {
        Ok(name) => Ok(name.to_owned()),
        Err(e) => Err(MetaError::corrupt(
            CF_TOPICS,
            format!("topic key is not UTF-8: {e}"),
        )),
    }
}

/// Encodes a topic's settings. JSON because `TopicConfig` fills missing fields
/// with defaults, so settings written by an older broker stay readable after
/// fields are added; the version byte leaves room for a different encoding.
pub fn encode_topic_value(cfg: &TopicConfig) -> Result<Vec<u8>, MetaError> {
    let mut out = vec![TOPIC_VALUE_VERSION];
    serde_json::to_writer(&mut out, cfg).map_err(|e| MetaError::Encode {
        what: "topic config",
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes a value of the `topics` column family.
pub fn decode_topic_value(value: &[u8]) -> Result<TopicConfig, MetaError> {
    match value.split_first() {
        None => Err(MetaError::corrupt(CF_TOPICS, "topic value is empty")),
        Some((&TOPIC_VALUE_VERSION, json)) => serde_json::from_slice(json).map_err(|e| {
            MetaError::corrupt(CF_TOPICS, format!("topic config does not parse: {e}"))
        }),
        Some((version, _)) => Err(MetaError::corrupt(
            CF_TOPICS,
            format!(
                "topic value has unknown version {version} (this broker reads version {TOPIC_VALUE_VERSION})"
            ),
        )),
    }
}

// --------------------------------------------------------- group offsets ---

/// A decoded key of the `group_offsets` column family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

/// Appends `u16 BE len ++ bytes`. The caller has validated the name, so the
/// length fits; checked anyway because these bytes go to disk.
fn put_name(out: &mut Vec<u8>, what: &str, name: &str) -> Result<(), MetaError> {
    validate_name(what, name)?;
    let len = u16::try_from(name.len())
        .map_err(|_| MetaError::InvalidName(format!("{what} name is too long")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// The prefix shared by every offset key of `group`, and by no other group's.
pub fn group_prefix(group: &str) -> Result<Vec<u8>, MetaError> {
    let mut out = Vec::with_capacity(2 + group.len());
    put_name(&mut out, "group", group)?;
    Ok(out)
}

/// The prefix shared by every offset key of `group` for `topic`.
pub fn group_topic_prefix(group: &str, topic: &str) -> Result<Vec<u8>, MetaError> {
    let mut out = Vec::with_capacity(4 + group.len() + topic.len());
    put_name(&mut out, "group", group)?;
    put_name(&mut out, "topic", topic)?;
    Ok(out)
}

/// Key of a committed offset in the `group_offsets` column family.
pub fn offset_key(group: &str, topic: &str, partition: u32) -> Result<Vec<u8>, MetaError> {
    let mut out = group_topic_prefix(group, topic)?;
    out.extend_from_slice(&partition.to_be_bytes());
    Ok(out)
}

/// Reads one `u16 BE len ++ UTF-8 bytes` field from the front of `rest`.
fn take_name<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a str, MetaError> {
    let bytes: &'a [u8] = rest;
    let Some((len, tail)) = bytes.split_first_chunk::<2>() else {
        return Err(MetaError::corrupt(
            CF_GROUP_OFFSETS,
            format!("offset key ends inside the {what} name length"),
        ));
    };
    let len = usize::from(u16::from_be_bytes(*len));
    let Some((name, tail)) = tail.split_at_checked(len) else {
        return Err(MetaError::corrupt(
            CF_GROUP_OFFSETS,
            format!(
                "offset key {what} name claims {len} bytes, {} remain",
                tail.len()
            ),
        ));
    };
    let name = std::str::from_utf8(name).map_err(|e| {
        MetaError::corrupt(
            CF_GROUP_OFFSETS,
            format!("offset key {what} name is not UTF-8: {e}"),
        )
    })?;
    *rest = tail;
    Ok(name)
}

/// Decodes just the group name at the front of an offset key, for scans that
/// only need to know where one group's keys end.
pub fn decode_offset_key_group(key: &[u8]) -> Result<&str, MetaError> {
    let mut rest = key;
    take_name(&mut rest, "group")
}

/// Decodes a key of the `group_offsets` column family.
pub fn decode_offset_key(key: &[u8]) -> Result<OffsetKey, MetaError> {
    let mut rest = key;
    let group = take_name(&mut rest, "group")?;
    let topic = take_name(&mut rest, "topic")?;
    let partition: [u8; 4] = rest.try_into().map_err(|_| {
        MetaError::corrupt(
            CF_GROUP_OFFSETS,
            format!(
                "offset key has {} bytes after the topic name, expected a 4-byte partition",
                rest.len()
            ),
        )
    })?;
    Ok(OffsetKey {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition: u32::from_be_bytes(partition),
    })
}

/// Encodes a committed offset: version byte ++ u64 BE.
pub fn encode_offset_value(offset: u64) -> [u8; OFFSET_VALUE_LEN] {
    let mut out = [0; OFFSET_VALUE_LEN];
    out[0] = OFFSET_VALUE_VERSION;
    out[1..].copy_from_slice(&offset.to_be_bytes());
    out
}

/// Decodes a value of the `group_offsets` column family.
pub fn decode_offset_value(value: &[u8]) -> Result<u64, MetaError> {
    match value.split_first() {
        None => Err(MetaError::corrupt(
            CF_GROUP_OFFSETS,
            "offset value is empty",
        )),
        Some((&OFFSET_VALUE_VERSION, rest)) => match <[u8; 8]>::try_from(rest) {
            Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
            Err(_) => Err(MetaError::corrupt(
                CF_GROUP_OFFSETS,
                format!(
                    "offset value has {} bytes, expected {OFFSET_VALUE_LEN}",
                    value.len()
                ),
            )),
        },
        Some((version, _)) => Err(MetaError::corrupt(
            CF_GROUP_OFFSETS,
            format!(
                "offset value has unknown version {version} (this broker reads version {OFFSET_VALUE_VERSION})"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_meta::prefix_successor;

    fn is_corrupt(r: Result<impl std::fmt::Debug, MetaError>, want_cf: &str) -> bool {
        matches!(r, Err(MetaError::Corrupt { cf, .. }) if cf == want_cf)
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("topic", "t").is_ok());
        assert!(validate_name("topic", &"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(matches!(
            validate_name("topic", ""),
            Err(MetaError::InvalidName(_))
        ));
        assert!(matches!(
            validate_name("group", &"x".repeat(MAX_NAME_LEN + 1)),
            Err(MetaError::InvalidName(_))
        ));
        // The limit is in bytes, not characters.
        assert!(validate_name("topic", &"é".repeat(125)).is_err());
        assert!(offset_key("", "t", 0).is_err());
        assert!(offset_key("g", "", 0).is_err());
        assert!(topic_key("").is_err());
    }

    #[test]
    fn offset_key_layout_is_as_documented() {
        assert_eq!(
            offset_key("ab", "t", 0x0102_0304).unwrap(),
            [0, 2, b'a', b'b', 0, 1, b't', 1, 2, 3, 4]
        );
        assert_eq!(group_prefix("ab").unwrap(), [0, 2, b'a', b'b']);
        assert_eq!(encode_offset_value(258), [1, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn group_prefixes_do_not_mix() {
        // Without the length prefix these two keys would be identical.
        let a = offset_key("a", "bx", 0).unwrap();
        let ab = offset_key("ab", "x", 0).unwrap();
        assert_ne!(a, ab);
        assert!(a.starts_with(&group_prefix("a").unwrap()));
        assert!(!ab.starts_with(&group_prefix("a").unwrap()));
        assert!(!a.starts_with(&group_prefix("ab").unwrap()));
    }

    #[test]
    fn bad_offset_keys_are_corrupt() {
        let good = offset_key("g", "t", 7).unwrap();
        for bad in [
            &[][..],
            &[0][..],
            &[0, 5, b'g'][..],
            &good[..good.len() - 1],
            &[good.as_slice(), &[0]].concat()[..],
            &[0, 1, 0xff, 0, 1, b't', 0, 0, 0, 0][..],
        ] {
            assert!(
                is_corrupt(decode_offset_key(bad), CF_GROUP_OFFSETS),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_values_are_corrupt() {
        for bad in [&[][..], &[1, 0][..], &[2, 0, 0, 0, 0, 0, 0, 0, 0][..]] {
            assert!(is_corrupt(decode_offset_value(bad), CF_GROUP_OFFSETS));
        }
        for bad in [&[][..], &[1][..], &b"\x01{nope"[..], &b"\x02{}"[..]] {
            assert!(is_corrupt(decode_topic_value(bad), CF_TOPICS));
        }
        assert!(is_corrupt(decode_topic_key(&[0xff]), CF_TOPICS));
    }

    #[test]
    fn topic_values_round_trip_and_fill_defaults() {
        let cfg = TopicConfig {
            partitions: 12,
            retention_bytes: Some(1 << 20),
            ..TopicConfig::default()
        };
        let bytes = encode_topic_value(&cfg).unwrap();
        assert_eq!(bytes[0], TOPIC_VALUE_VERSION);
        assert_eq!(decode_topic_value(&bytes).unwrap(), cfg);
        // Values written before a field existed still read.
        let old = decode_topic_value(b"\x01{\"partitions\":3}").unwrap();
        assert_eq!(old.partitions, 3);
    }

    /// Valid names: 1..=MAX_NAME_LEN bytes of any characters, including
    /// multi-byte ones and the bytes that look like length prefixes.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{1,3}",
            "\\PC{1,40}",
            "[\\x00-\\x02a]{1,4}",
            "x{240,249}",
        ]
        .prop_filter("length within limit", |s| {
            !s.is_empty() && s.len() <= MAX_NAME_LEN
        })
    }

    proptest! {
        #[test]
        fn offset_keys_round_trip(group in name(), topic in name(), partition: u32) {
            let key = offset_key(&group, &topic, partition).unwrap();
            let decoded = decode_offset_key(&key).unwrap();
            prop_assert_eq!(decode_offset_key_group(&key).unwrap(), group.as_str());
            prop_assert_eq!(decoded, OffsetKey { group, topic, partition });
        }

        #[test]
        fn offset_values_round_trip(offset: u64) {
            prop_assert_eq!(decode_offset_value(&encode_offset_value(offset)).unwrap(), offset);
        }

        #[test]
        fn topic_keys_round_trip(topic in name()) {
            prop_assert_eq!(decode_topic_key(&topic_key(&topic).unwrap()).unwrap(), topic);
        }

        /// A key carries a group's prefix exactly when it belongs to that
        /// group, and a (group, topic) prefix exactly when it belongs to both.
        #[test]
        fn prefixes_match_exactly_their_own_keys(
            g1 in name(), t1 in name(), p: u32, g2 in name(), t2 in name(),
        ) {
            let key = offset_key(&g1, &t1, p).unwrap();
            prop_assert_eq!(key.starts_with(&group_prefix(&g2).unwrap()), g1 == g2);
            prop_assert_eq!(
                key.starts_with(&group_topic_prefix(&g2, &t2).unwrap()),
                g1 == g2 && t1 == t2
            );
            let succ = prefix_successor(&group_prefix(&g1).unwrap()).unwrap();
            prop_assert!(key < succ);
        }

        /// Within one group, key order is (topic length, topic, partition)
        /// order; within one (group, topic), it is partition order.
        #[test]
        fn key_order_within_a_group(
            g in name(), t1 in name(), p1: u32, t2 in name(), p2: u32,
        ) {
            let k1 = offset_key(&g, &t1, p1).unwrap();
            let k2 = offset_key(&g, &t2, p2).unwrap();
            prop_assert_eq!(
                k1.cmp(&k2),
                (t1.len(), t1.as_bytes(), p1).cmp(&(t2.len(), t2.as_bytes(), p2))
            );
            let same_topic = offset_key(&g, &t1, p2).unwrap();
            prop_assert_eq!(k1.cmp(&same_topic), p1.cmp(&p2));
        }

        /// One group's keys are contiguous: no other group's key sorts
        /// between two of them.
        #[test]
        fn group_keys_are_contiguous(
            g in name(), other in name(), t1 in name(), t2 in name(), t3 in name(),
            p1: u32, p2: u32, p3: u32,
        ) {
            prop_assume!(g != other);
            let a = offset_key(&g, &t1, p1).unwrap();
            let b = offset_key(&g, &t2, p2).unwrap();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let x = offset_key(&other, &t3, p3).unwrap();
            prop_assert!(!(lo < x && x < hi));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_offset_key(&bytes);
            let _ = decode_offset_key_group(&bytes);
            let _ = decode_offset_value(&bytes);
            let _ = decode_topic_key(&bytes);
            let _ = decode_topic_value(&bytes);
        }
    }
}
