//! The admin calls, all methods on [`Client`](crate::Client), one file per
//! area so that they are found in one place:
//!
//! - topics: [`create_topic`](crate::Client::create_topic),
//!   [`delete_topic`](crate::Client::delete_topic),
//!   [`list_topics`](crate::Client::list_topics),
//!   [`describe_topic`](crate::Client::describe_topic),
//!   [`list_offsets`](crate::Client::list_offsets);
//! - groups: [`describe_group`](crate::Client::describe_group),
//!   [`list_groups`](crate::Client::list_groups),
//!   [`reset_group`](crate::Client::reset_group),
//!   [`redrive_dead_letters`](crate::Client::redrive_dead_letters),
//!   [`delete_group`](crate::Client::delete_group);
//! - delays: [`cancel_delay`](crate::Client::cancel_delay),
//!   [`cancel_delays`](crate::Client::cancel_delays),
//!   [`list_delays`](crate::Client::list_delays);
//! - functions: [`deploy_function`](crate::Client::deploy_function),
//!   [`list_functions`](crate::Client::list_functions),
//!   [`describe_function`](crate::Client::describe_function),
//!   [`function_logs`](crate::Client::function_logs),
//!   [`delete_function`](crate::Client::delete_function),
//!   [`rollback_function`](crate::Client::rollback_function).
//!
//! The types they take and answer with stay with their area
//! ([`group`](crate::group), [`delay`](crate::delay),
//! [`function`](crate::function)) and at the crate root.

mod delay;
mod function;
mod group;
mod topic;
