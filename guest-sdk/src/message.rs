//! One input message, read in place from the batch the broker passed in.
//!
//! A Sluice message is a Kafka record: key and value as they are, and the
//! message id, tags and user properties as record headers (`sluice.id`,
//! `sluice.tag`, and every header not named `sluice.*`). [`Message`] borrows
//! all of it from the call's input buffer: reading a value, a header or a
//! tag copies nothing.

use std::fmt;

use sluice_protocol::batch::{HeaderIter, Record};
use sluice_protocol::headers;

/// Where a call's messages come from; shared by all messages of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) group: Option<&'a str>,
}

/// One input message: a zero-copy view into the batch being processed.
///
/// A message lives as long as the call that delivered it; copy out what
/// must outlive it (for example with [`OutMessage::from_input`](crate::OutMessage::from_input)).
///
/// ```
/// use sluice_guest::testing::MessageBuilder;
///
/// let input = MessageBuilder::new(r#"{"amount": 12.5}"#)
///     .topic("orders")
///     .partition(3)
///     .offset(42)
///     .key("customer-7")
///     .tag("eu")
///     .header("trace", "abc")
///     .build();
/// let msg = input.message();
/// assert_eq!(msg.topic(), "orders");
/// assert_eq!((msg.partition(), msg.offset()), (3, 42));
/// assert_eq!(msg.key(), Some(&b"customer-7"[..]));
/// assert_eq!(msg.value_str(), Some(r#"{"amount": 12.5}"#));
/// assert!(msg.has_tag("eu"));
/// assert_eq!(msg.header("trace"), Some(&b"abc"[..]));
/// ```
#[derive(Clone, Copy)]
pub struct Message<'a> {
    source: Source<'a>,
    record: Record<'a>,
}

impl<'a> Message<'a> {
    pub(crate) fn new(source: Source<'a>, record: Record<'a>) -> Self {
        Message { source, record }
    }

    /// The topic the message was read from.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").topic("payments").build();
    /// assert_eq!(input.message().topic(), "payments");
    /// ```
    pub fn topic(&self) -> &'a str {
        self.source.topic
    }

    /// The partition the message was read from.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").partition(5).build();
    /// assert_eq!(input.message().partition(), 5);
    /// ```
    pub fn partition(&self) -> u32 {
        self.source.partition
    }

    /// The consumer group the function serves: set for filters and
    /// handlers, `None` for transforms.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").group("billing").build();
    /// assert_eq!(input.message().group(), Some("billing"));
    /// ```
    pub fn group(&self) -> Option<&'a str> {
        self.source.group
    }

    /// The message's offset in its partition.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").offset(1_000).build();
    /// assert_eq!(input.message().offset(), 1_000);
    /// ```
    pub fn offset(&self) -> u64 {
        self.record.offset
    }

    /// Milliseconds since the Unix epoch: when the producer created the
    /// message, or when the broker appended it if the topic uses log-append
    /// time.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").timestamp(1_700_000_000_123).build();
    /// assert_eq!(input.message().timestamp(), 1_700_000_000_123);
    /// ```
    pub fn timestamp(&self) -> i64 {
        self.record.timestamp
    }

    /// The partitioning key, if the message has one.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// assert_eq!(MessageBuilder::new("v").key("k").build().message().key(), Some(&b"k"[..]));
    /// assert_eq!(MessageBuilder::new("v").build().message().key(), None);
    /// ```
    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key
    }

    /// The key as UTF-8 text; `None` without a key or when it is not UTF-8.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// assert_eq!(MessageBuilder::new("v").key("k").build().message().key_str(), Some("k"));
    /// ```
    pub fn key_str(&self) -> Option<&'a str> {
        self.record.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value; a record with a null value (a tombstone) reads as empty.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// assert_eq!(MessageBuilder::new([1u8, 2, 3]).build().message().value(), &[1, 2, 3]);
    /// ```
    pub fn value(&self) -> &'a [u8] {
        self.record.value.unwrap_or_default()
    }

    /// The value as UTF-8 text, or `None` when it is not UTF-8.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// assert_eq!(MessageBuilder::new("héllo").build().message().value_str(), Some("héllo"));
    /// assert_eq!(MessageBuilder::new([0xffu8]).build().message().value_str(), None);
    /// ```
    pub fn value_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value()).ok()
    }

    /// The value decoded from JSON.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// #[derive(serde::Deserialize)]
    /// struct Order {
    ///     amount: f64,
    /// }
    /// let input = MessageBuilder::new(r#"{"amount": 12.5}"#).build();
    /// let order: Order = input.message().json().unwrap();
    /// assert_eq!(order.amount, 12.5);
    /// assert!(MessageBuilder::new("not json").build().message().json::<Order>().is_err());
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.value())
    }

    /// The user properties: every header whose name does not start with
    /// `sluice.`, in order. A null header value reads as empty.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").header("a", "1").tag("red").header("b", "2").build();
    /// let props: Vec<(&str, &[u8])> = input.message().headers().collect();
    /// assert_eq!(props, [("a", &b"1"[..]), ("b", &b"2"[..])]);
    /// ```
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            inner: self.all_headers(),
        }
    }

    /// The first user property named `name` (names starting with `sluice.`
    /// are not properties: use [`Self::tags`] and [`Self::id`] for those).
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").header("trace", "abc").build();
    /// assert_eq!(input.message().header("trace"), Some(&b"abc"[..]));
    /// assert_eq!(input.message().header("other"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The first user property named `name`, as UTF-8 text.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").header("source", "web").build();
    /// assert_eq!(input.message().header_str("source"), Some("web"));
    /// ```
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The message's tags (its `sluice.tag` headers), in order. Tags that
    /// are not UTF-8 are skipped.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").tag("red").tag("big").build();
    /// assert_eq!(input.message().tags().collect::<Vec<_>>(), ["red", "big"]);
    /// ```
    pub fn tags(&self) -> Tags<'a> {
        Tags {
            inner: self.all_headers(),
        }
    }

    /// Whether the message carries tag `tag`.
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let input = MessageBuilder::new("v").tag("red").build();
    /// assert!(input.message().has_tag("red"));
    /// assert!(!input.message().has_tag("blue"));
    /// ```
    pub fn has_tag(&self, tag: &str) -> bool {
        self.all_headers()
            .any(|(n, v)| n == headers::TAG && v == tag.as_bytes())
    }

    /// The message id the producer set (the `sluice.id` header: 16 bytes,
    /// a UUIDv7), or `None` when the message has none (a record written by
    /// a client that sets no id).
    ///
    /// ```
    /// # use sluice_guest::testing::MessageBuilder;
    /// let id = [0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 7];
    /// let input = MessageBuilder::new("v").id(id).build();
    /// let got = input.message().id().unwrap();
    /// assert_eq!(got.as_bytes(), &id);
    /// assert_eq!(got.to_string(), "018bcfe5-6800-7000-8000-000000000007");
    /// assert_eq!(MessageBuilder::new("v").no_id().build().message().id(), None);
    /// ```
    pub fn id(&self) -> Option<MessageId> {
        self.all_headers()
            .find(|(n, _)| *n == headers::MESSAGE_ID)
            .and_then(|(_, v)| MessageId::from_slice(v))
    }

    /// Every header, reserved ones included (for copying a message as is).
    pub(crate) fn all_headers(&self) -> AllHeaders<'a> {
        AllHeaders {
            inner: self.record.headers(),
            offset: self.record.offset,
        }
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp());
        if let Some(id) = self.id() {
            d.field("id", &format_args!("{id}"));
        }
        d.field("key", &self.key().map(crate::out::Bytes))
            .field("value", &crate::out::Bytes(self.value()))
            .field("tags", &self.tags().collect::<Vec<_>>())
            .field(
                "headers",
                &self
                    .headers()
                    .map(|(n, v)| (n, crate::out::Bytes(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// All headers of a record, with a clear panic if one does not decode (the
/// broker validated every batch when it was produced, so that would be a
/// broker bug or a corrupted buffer, not something a function can handle).
#[derive(Debug, Clone)]
pub(crate) struct AllHeaders<'a> {
    inner: HeaderIter<'a>,
    offset: u64,
}

impl<'a> Iterator for AllHeaders<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self.inner.next()? {
            Ok((name, value)) => Some((name, value.unwrap_or_default())),
            Err(e) => panic!(
                "sluice-guest: the record at offset {} has a malformed header: {e}",
                self.offset
            ),
        }
    }
}

/// The user properties of a [`Message`]; see [`Message::headers`].
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    inner: AllHeaders<'a>,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.find(|(name, _)| !headers::is_reserved(name))
    }
}

/// The tags of a [`Message`]; see [`Message::tags`].
#[derive(Debug, Clone)]
pub struct Tags<'a> {
    inner: AllHeaders<'a>,
}

impl<'a> Iterator for Tags<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.find_map(|(name, value)| {
            if name == headers::TAG {
                std::str::from_utf8(value).ok()
            } else {
                None
            }
        })
    }
}

/// A 128-bit message id (the `sluice.id` header), a UUIDv7: 48 bits of Unix
/// milliseconds, then random bits. Displays as a lowercase hyphenated UUID.
///
/// ```
/// use sluice_guest::MessageId;
/// let id = MessageId::from_bytes([0xab; 16]);
/// assert_eq!(id.to_string(), "abababab-abab-abab-abab-abababababab");
/// assert_eq!(MessageId::from_slice(&[1, 2, 3]), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 16]);

impl MessageId {
    /// An id from its 16 bytes.
    ///
    /// ```
    /// let id = sluice_guest::MessageId::from_bytes([0; 16]);
    /// assert_eq!(id.as_bytes(), &[0; 16]);
    /// ```
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        MessageId(bytes)
    }

    /// An id from a header value; `None` unless it is exactly 16 bytes.
    ///
    /// ```
    /// assert!(sluice_guest::MessageId::from_slice(&[7; 16]).is_some());
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(MessageId)
    }

    /// The id's 16 bytes, as the header holds them.
    ///
    /// ```
    /// let id = sluice_guest::MessageId::from_bytes([9; 16]);
    /// assert_eq!(id.as_bytes()[0], 9);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i == 4 || i == 6 || i == 8 || i == 10 {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}
