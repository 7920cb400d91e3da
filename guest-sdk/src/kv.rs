//! The function's own durable key-value state, private to its deployment.
//!
//! Values are bytes; with the `json` feature, `get_json` and `set_json`
//! store any serde type as JSON. In native tests the store is
//! [`testing`](crate::testing)'s in-memory map (see
//! [`testing::kv_snapshot`](crate::testing::kv_snapshot) and
//! [`testing::set_kv`](crate::testing::set_kv)).

use crate::HostError;

/// The value stored under `key`, if any.
///
/// ```
/// use sluice_guest::kv;
/// assert_eq!(kv::get("visits"), Ok(None));
/// kv::set("visits", "1").unwrap();
/// assert_eq!(kv::get("visits"), Ok(Some(b"1".to_vec())));
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::kv::get(key).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::kv_get(key)
}

/// Stores `value` under `key`, replacing what was there.
///
/// ```
/// sluice_guest::kv::set("last", [1u8, 2, 3]).unwrap();
/// assert_eq!(sluice_guest::testing::kv_snapshot()["last"], [1, 2, 3]);
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::kv::set(key, value.as_ref()).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::kv_set(key, value.as_ref())
}

/// Removes `key`; removing a missing key is not an error.
///
/// ```
/// use sluice_guest::kv;
/// kv::set("k", "v").unwrap();
/// kv::delete("k").unwrap();
/// kv::delete("k").unwrap();
/// assert_eq!(kv::get("k"), Ok(None));
/// ```
pub fn delete(key: &str) -> Result<(), HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::kv::delete(key).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::kv_delete(key)
}

/// The value under `key` decoded from JSON.
///
/// ```
/// use sluice_guest::kv;
/// kv::set("limits", r#"[1, 2]"#).unwrap();
/// assert_eq!(kv::get_json::<Vec<u32>>("limits").unwrap(), Some(vec![1, 2]));
/// kv::set("broken", "{").unwrap();
/// assert!(matches!(kv::get_json::<Vec<u32>>("broken"), Err(kv::JsonError::Json(_))));
/// ```
#[cfg(feature = "json")]
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, JsonError> {
    match get(key)? {
        Some(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(JsonError::Json)?,
        )),
        None => Ok(None),
    }
}

/// Stores `value` under `key` as JSON.
///
/// ```
/// use sluice_guest::kv;
/// kv::set_json("totals", &[("c-1", 12.5)]).unwrap();
/// assert_eq!(kv::get("totals").unwrap().unwrap(), br#"[["c-1",12.5]]"#);
/// ```
#[cfg(feature = "json")]
pub fn set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<(), JsonError> {
    let bytes = serde_json::to_vec(value).map_err(JsonError::Json)?;
    Ok(set(key, bytes)?)
}

/// Why [`get_json`] or [`set_json`] failed.
///
/// As an [`Outcome`](crate::Outcome): host errors convert as usual,
/// encoding errors dead-letter.
///
/// ```
/// use sluice_guest::{kv::JsonError, HostError, Outcome};
/// let e = JsonError::Host(HostError::Unavailable("busy".into()));
/// assert_eq!(Outcome::from(e), Outcome::retry());
/// ```
#[cfg(feature = "json")]
#[derive(Debug)]
pub enum JsonError {
    /// The host call failed.
    Host(HostError),
    /// The stored bytes are not the JSON of that type, or the value cannot
    /// be encoded as JSON.
    Json(serde_json::Error),
}

#[cfg(feature = "json")]
impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Host(e) => write!(f, "kv call failed: {e}"),
            JsonError::Json(e) => write!(f, "kv value is not valid JSON for this type: {e}"),
        }
    }
}

#[cfg(feature = "json")]
impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JsonError::Host(e) => Some(e),
            JsonError::Json(e) => Some(e),
        }
    }
}

#[cfg(feature = "json")]
impl From<HostError> for JsonError {
    fn from(e: HostError) -> Self {
        JsonError::Host(e)
    }
}

#[cfg(feature = "json")]
impl From<JsonError> for crate::Outcome {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Host(e) => e.into(),
            JsonError::Json(e) => crate::Outcome::DeadLetter(format!("kv value: {e}")),
        }
    }
}
