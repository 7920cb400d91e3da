//! Write Sluice functions in Rust: one method per message, compiled to a
//! WebAssembly component that runs next to the broker's log.
//!
//! A function implements one of three worlds, as one trait and one export
//! macro each:
//!
//! | world       | trait         | answers, per message                         | macro                 |
//! |-------------|---------------|----------------------------------------------|-----------------------|
//! | `filter`    | [`Filter`]    | keep (`true`) or skip (`false`)              | [`export_filter!`]    |
//! | `transform` | [`Transform`] | zero or more [`OutMessage`]s, or a failure   | [`export_transform!`] |
//! | `handler`   | [`Handler`]   | an [`Outcome`]: ack, retry or dead-letter    | [`export_handler!`]   |
//!
//! The broker calls a function with whole record batches in one flat buffer
//! (crossing the WebAssembly boundary once per batch, not once per message);
//! the export macro parses that buffer without copying, calls your method
//! for each message and encodes the answers.
//!
//! ```
//! use sluice_guest::{Filter, Message};
//!
//! struct Urgent;
//!
//! impl Filter for Urgent {
//!     fn init() -> Result<Self, String> {
//!         Ok(Urgent)
//!     }
//!     fn filter(&mut self, msg: &Message<'_>) -> bool {
//!         msg.has_tag("urgent")
//!     }
//! }
//!
//! sluice_guest::export_filter!(Urgent);
//!
//! # use sluice_guest::testing::{run_filter, MessageBuilder};
//! let kept = run_filter::<Urgent>(&[
//!     MessageBuilder::new("a").tag("urgent"),
//!     MessageBuilder::new("b"),
//! ]);
//! assert_eq!(kept, [true, false]);
//! ```
//!
//! Modules:
//!
//! - [`message`]: [`Message`], the zero-copy view of one input message, and
//!   [`MessageId`];
//! - [`out`]: [`OutMessage`], an owned message to publish;
//! - [`world`]: the [`Filter`], [`Transform`] and [`Handler`] traits,
//!   [`Outputs`] and [`Outcome`] (the export macros live at the crate root);
//! - host calls: [`log`] (and the [`trace!`], [`debug!`], [`info!`],
//!   [`warn!`], [`error!`] macros), [`emit()`], [`schedule`], [`kv`],
//!   [`config`], [`clock`]; they fail with [`HostError`];
//! - [`testing`] (native targets only): the in-memory host that answers
//!   every host call in `cargo test`, a [`testing::MessageBuilder`] and
//!   `run_*` helpers that drive a function through the same batch code
//!   the component runs;
//! - `bindings` (hidden): the wit-bindgen output for `wit/sluice-bus.wit`.
//!
//! On `wasm32` targets host calls go to the broker through the component's
//! imports; everywhere else they go to [`testing`]'s mock, so function logic
//! is unit-tested with plain `cargo test`.
//!
//! The `json` feature adds `Message::json`, `OutMessage::json`,
//! `kv::get_json`/`kv::set_json` and re-exports `serde` and `serde_json`.

#![warn(missing_docs)]

extern crate self as sluice_guest;

#[doc(hidden)]
pub mod bindings;
pub mod clock;
pub mod config;
mod emit;
mod error;
pub mod kv;
pub mod log;
pub mod message;
pub mod out;
pub mod schedule;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod world;

mod run;

pub use emit::emit;
pub use error::HostError;
pub use message::{Message, MessageId};
pub use out::OutMessage;
pub use world::{Filter, Handler, Outcome, Output, Outputs, Transform};

#[cfg(feature = "json")]
pub use serde;
#[cfg(feature = "json")]
pub use serde_json;

/// The wit-bindgen runtime, for the code the export macros expand in the
/// author's crate (so authors need no direct wit-bindgen dependency).
#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

/// What the export macros expand to call; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::run::{filter_export, handler_export, transform_export};
    pub use std::cell::RefCell;
}

/// Exports a [`Filter`] as the component's `filter` world.
///
/// Use it once per crate, at module level. The instance is created with
/// [`Filter::init`] on the first call and reused for every later batch of
/// the same WebAssembly instance; if `init` fails the call traps with its
/// reason (the broker logs it and retries the batch).
///
/// ```
/// struct KeepAll;
/// impl sluice_guest::Filter for KeepAll {
///     fn init() -> Result<Self, String> {
///         Ok(KeepAll)
///     }
///     fn filter(&mut self, _msg: &sluice_guest::Message<'_>) -> bool {
///         true
///     }
/// }
/// sluice_guest::export_filter!(KeepAll);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceFilterExport;

            ::std::thread_local! {
                static __SLUICE_INSTANCE: $crate::__private::RefCell<::std::option::Option<$ty>> =
                    const { $crate::__private::RefCell::new(::std::option::Option::None) };
            }

            impl $crate::bindings::filter::Guest for __SluiceFilterExport {
                fn filter(
                    context: $crate::bindings::BatchContext,
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::vec::Vec<u8> {
                    $crate::__private::filter_export::<$ty>(&__SLUICE_INSTANCE, &context, &batch)
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::filter::__export_filter_world!(
                __SluiceFilterExport with_types_in $crate::bindings::filter
            );
        };
    };
}

/// Exports a [`Transform`] as the component's `transform` world.
///
/// Use it once per crate, at module level; the instance lives as for
/// [`export_filter!`].
///
/// ```
/// use sluice_guest::{Message, OutMessage, Outputs, Transform};
///
/// struct Upper;
/// impl Transform for Upper {
///     fn init() -> Result<Self, String> {
///         Ok(Upper)
///     }
///     fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
///         let text = msg.value_str().ok_or("value is not UTF-8")?;
///         out.emit(OutMessage::from_input_with_value(msg, text.to_uppercase()));
///         Ok(())
///     }
/// }
/// sluice_guest::export_transform!(Upper);
/// ```
#[macro_export]
macro_rules! export_transform {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceTransformExport;

            ::std::thread_local! {
                static __SLUICE_INSTANCE: $crate::__private::RefCell<::std::option::Option<$ty>> =
                    const { $crate::__private::RefCell::new(::std::option::Option::None) };
            }

            impl $crate::bindings::transform::Guest for __SluiceTransformExport {
                fn transform(
                    context: $crate::bindings::BatchContext,
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::vec::Vec<u8> {
                    $crate::__private::transform_export::<$ty>(&__SLUICE_INSTANCE, &context, &batch)
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::transform::__export_transform_world!(
                __SluiceTransformExport with_types_in $crate::bindings::transform
            );
        };
    };
}

/// Exports a [`Handler`] as the component's `handler` world.
///
/// Use it once per crate, at module level; the instance lives as for
/// [`export_filter!`].
///
/// ```
/// use sluice_guest::{Handler, Message, Outcome};
///
/// struct Printer;
/// impl Handler for Printer {
///     fn init() -> Result<Self, String> {
///         Ok(Printer)
///     }
///     fn handle(&mut self, msg: &Message<'_>) -> Outcome {
///         sluice_guest::info!("got {} bytes at offset {}", msg.value().len(), msg.offset());
///         Outcome::Ack
///     }
/// }
/// sluice_guest::export_handler!(Printer);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceHandlerExport;

            ::std::thread_local! {
                static __SLUICE_INSTANCE: $crate::__private::RefCell<::std::option::Option<$ty>> =
                    const { $crate::__private::RefCell::new(::std::option::Option::None) };
            }

            impl $crate::bindings::handler::Guest for __SluiceHandlerExport {
                fn handle(
                    context: $crate::bindings::BatchContext,
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::vec::Vec<$crate::bindings::WitOutcome> {
                    $crate::__private::handler_export::<$ty>(&__SLUICE_INSTANCE, &context, &batch)
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::handler::__export_handler_world!(
                __SluiceHandlerExport with_types_in $crate::bindings::handler
            );
        };
    };
}
