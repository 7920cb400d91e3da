//! The deployment's parameters (the manifest's `config` table).
//!
//! Read them in `init` and keep what you parsed in the instance: every read
//! is a host call. In native tests set them with
//! [`testing::set_config`](crate::testing::set_config).

use std::fmt::Display;
use std::str::FromStr;

/// The value of parameter `key`.
///
/// ```
/// sluice_guest::testing::set_config("topic", "reminders");
/// assert_eq!(sluice_guest::config::get("topic").as_deref(), Some("reminders"));
/// assert_eq!(sluice_guest::config::get("missing"), None);
/// ```
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::config::get(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::config_get(key)
}

/// All parameters, sorted by key.
///
/// ```
/// sluice_guest::testing::set_config("b", "2");
/// sluice_guest::testing::set_config("a", "1");
/// let all = sluice_guest::config::all();
/// assert_eq!(all, [("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
/// ```
pub fn all() -> Vec<(String, String)> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::imports::sluice::bus::config::all()
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::mock::config_all()
}

/// The value of parameter `key`, or an error naming it (for `init`, with `?`).
///
/// ```
/// sluice_guest::testing::set_config("field", "region");
/// assert_eq!(sluice_guest::config::require("field"), Ok("region".to_string()));
/// assert_eq!(
///     sluice_guest::config::require("routes"),
///     Err("missing config parameter `routes`".to_string())
/// );
/// ```
pub fn require(key: &str) -> Result<String, String> {
    get(key).ok_or_else(|| format!("missing config parameter `{key}`"))
}

/// Parameter `key` parsed with [`FromStr`]: `Ok(None)` when it is not set,
/// an error naming the parameter when it does not parse (for `init`, with `?`).
///
/// ```
/// use sluice_guest::{config, testing};
/// testing::set_config("delay_ms", "60000");
/// testing::set_config("limit", "many");
/// assert_eq!(config::get_parsed::<u64>("delay_ms"), Ok(Some(60_000)));
/// assert_eq!(config::get_parsed::<u64>("unset"), Ok(None));
/// assert_eq!(
///     config::get_parsed::<u64>("limit"),
///     Err("config parameter `limit` = `many` is invalid: invalid digit found in string".to_string())
/// );
/// ```
pub fn get_parsed<T>(key: &str) -> Result<Option<T>, String>
where
    T: FromStr,
    T::Err: Display,
{
    get(key)
        .map(|raw| {
            raw.trim()
                .parse()
                .map_err(|e| format!("config parameter `{key}` = `{raw}` is invalid: {e}"))
        })
        .transpose()
}
