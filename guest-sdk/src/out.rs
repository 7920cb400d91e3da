//! Messages a function publishes: transform outputs, [`emit`](crate::emit())
//! and [`schedule`](crate::schedule).

use std::fmt;

use sluice_protocol::headers;

use crate::Message;

/// An owned message to publish, built with chained calls.
///
/// Tags are `sluice.tag` headers, so `headers` holds user properties and
/// tags together, in the order they were added, exactly as they will be
/// written. The broker gives every published message its own message id.
///
/// ```
/// use sluice_guest::OutMessage;
///
/// let msg = OutMessage::new("payload")
///     .key("customer-7")
///     .tag("eu")
///     .header("source", "checkout");
/// assert_eq!(msg.key.as_deref(), Some(&b"customer-7"[..]));
/// assert_eq!(msg.value, b"payload");
/// assert_eq!(msg.tags().collect::<Vec<_>>(), ["eu"]);
/// assert_eq!(msg.header_value("source"), Some(&b"checkout"[..]));
/// assert_eq!(msg.headers.len(), 2);
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OutMessage {
    /// Partitioning key; messages with the same key keep their order.
    pub key: Option<Vec<u8>>,
    /// The message body, raw bytes.
    pub value: Vec<u8>,
    /// User properties and `sluice.tag` headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutMessage {
    /// A message with this value, no key and no headers.
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::new(vec![1, 2, 3]);
    /// assert_eq!(msg.value, [1, 2, 3]);
    /// assert!(msg.key.is_none() && msg.headers.is_empty());
    /// ```
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        OutMessage {
            key: None,
            value: value.into(),
            headers: Vec::new(),
        }
    }

    /// A copy of an input message: its key, value, user properties and
    /// tags (in their original order). The message id is not copied: the
    /// output is a new message and gets its own.
    ///
    /// ```
    /// use sluice_guest::{testing::MessageBuilder, OutMessage};
    /// let input = MessageBuilder::new("v").key("k").tag("red").header("h", "1").build();
    /// let out = OutMessage::from_input(&input.message());
    /// assert_eq!(out, OutMessage::new("v").key("k").tag("red").header("h", "1"));
    /// ```
    pub fn from_input(msg: &Message<'_>) -> Self {
        Self::from_input_with_value(msg, msg.value())
    }

    /// Like [`Self::from_input`] with another value (without copying the
    /// input's value first).
    ///
    /// ```
    /// use sluice_guest::{testing::MessageBuilder, OutMessage};
    /// let input = MessageBuilder::new("secret").key("k").tag("red").build();
    /// let out = OutMessage::from_input_with_value(&input.message(), "[redacted]");
    /// assert_eq!(out, OutMessage::new("[redacted]").key("k").tag("red"));
    /// ```
    pub fn from_input_with_value(msg: &Message<'_>, value: impl Into<Vec<u8>>) -> Self {
        OutMessage {
            key: msg.key().map(<[u8]>::to_vec),
            value: value.into(),
            headers: msg
                .all_headers()
                .filter(|(name, _)| *name == headers::TAG || !headers::is_reserved(name))
                .map(|(name, value)| (name.to_owned(), value.to_vec()))
                .collect(),
        }
    }

    /// A message whose value is `value` encoded as JSON.
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::json(&sluice_guest::serde_json::json!({"total": 3})).unwrap();
    /// assert_eq!(msg.value, br#"{"total":3}"#);
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::new(serde_json::to_vec(value)?))
    }

    /// Sets the partitioning key.
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::new("v").key("k");
    /// assert_eq!(msg.key, Some(b"k".to_vec()));
    /// ```
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a tag (a `sluice.tag` header).
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::new("v").tag("red").tag("big");
    /// assert_eq!(msg.tags().collect::<Vec<_>>(), ["red", "big"]);
    /// ```
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.headers
            .push((headers::TAG.to_owned(), tag.into().into_bytes()));
        self
    }

    /// Adds a user property.
    ///
    /// # Panics
    /// If `name` starts with `sluice.`: those names are reserved (use
    /// [`Self::tag`] for tags; the broker sets the message id).
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::new("v").header("trace", "abc");
    /// assert_eq!(msg.header_value("trace"), Some(&b"abc"[..]));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let name = name.into();
        assert!(
            !headers::is_reserved(&name),
            "header name `{name}` is reserved (names starting with `sluice.` are; use OutMessage::tag for tags)"
        );
        self.headers.push((name, value.into()));
        self
    }

    /// The tags, in order.
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::new("v").tag("a");
    /// assert_eq!(msg.tags().next(), Some("a"));
    /// ```
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(|(name, _)| name == headers::TAG)
            .filter_map(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The value of the first user property named `name`.
    ///
    /// ```
    /// let msg = sluice_guest::OutMessage::new("v").header("a", "1").header("a", "2");
    /// assert_eq!(msg.header_value("a"), Some(&b"1"[..]));
    /// assert_eq!(msg.header_value("b"), None);
    /// ```
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name && !headers::is_reserved(n))
            .map(|(_, v)| v.as_slice())
    }

    /// The value as UTF-8 text, or `None` when it is not UTF-8.
    ///
    /// ```
    /// assert_eq!(sluice_guest::OutMessage::new("hi").value_str(), Some("hi"));
    /// ```
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

impl fmt::Debug for OutMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutMessage")
            .field("key", &self.key.as_deref().map(Bytes))
            .field("value", &Bytes(&self.value))
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, v)| (n, Bytes(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Shows bytes as a string when they are UTF-8, as a byte list otherwise.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "b{s:?}"),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl From<OutMessage> for crate::bindings::imports::sluice::bus::types::OutgoingMessage {
    fn from(msg: OutMessage) -> Self {
        use crate::bindings::imports::sluice::bus::types::Header;
        Self {
            key: msg.key,
            value: msg.value,
            headers: msg
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
        }
    }
}
