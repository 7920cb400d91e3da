//! Test-only: a handler that makes host calls, for round-trip tests of the
//! engine's host functions.
//!
//! For every message, in this order:
//!
//! 1. sets kv `last` to the message's value;
//! 2. reads config `greeting` (empty when unset) and logs, at info,
//!    `"{greeting} {value}"` (the value as lossy UTF-8);
//! 3. emits the value (no key, no headers) to topic `echo`;
//! 4. acks.
//!
//! Properties on the message ask for more calls, made between steps 3
//! and 4 in the order of this table, each logging its result at info:
//!
//! | property            | call                                        | logs                      |
//! |---------------------|---------------------------------------------|---------------------------|
//! | `schedule-after-ms` | `schedule::after_ms("echo", n, value)`      | `scheduled {id}`          |
//! | `schedule-at-ms`    | `schedule::at("echo", n, value)`            | `scheduled {id}`          |
//! | `cancel`            | `schedule::cancel(id)`                      | `cancelled {id}: {bool}`  |
//! | `kv-get`            | `kv::get(key)`                              | `kv {key} = {value}` or `kv {key} missing` |
//! | `kv-delete`         | `kv::delete(key)`                           | `deleted {key}`           |
//! | `now`               | `clock::now_ms()`                           | `now {ms}`                |
//! | `config-all`        | `config::all()`                             | `config {k}={v},...`      |
//! | `print`             | prints `n` lines to stdout (`println!`)     | —                         |
//! | `sleep-ms`          | `std::thread::sleep` (blocks in WASI poll)  | —                         |
//! | `panic`             | panics with `kv-config: asked to panic`     | —                         |
//!
//! A failing host call ends the message with the error's outcome:
//! `unavailable` retries after the group's backoff, anything else
//! dead-letters with the error text (`denied: ...`).

use sluice_guest::{
    Handler, HostError, Message, OutMessage, Outcome, clock, config, emit, info, kv, schedule,
};

/// The round-trip handler.
#[derive(Debug)]
pub struct KvConfig;

impl Handler for KvConfig {
    fn init() -> Result<Self, String> {
        Ok(KvConfig)
    }

    fn handle(&mut self, msg: &Message<'_>) -> Outcome {
        match calls(msg) {
            Ok(()) => Outcome::Ack,
            Err(e) => e.into(),
        }
    }
}

sluice_guest::export_handler!(KvConfig);

fn calls(msg: &Message<'_>) -> Result<(), HostError> {
    let value = msg.value();
    kv::set("last", value)?;
    let greeting = config::get("greeting").unwrap_or_default();
    info!("{greeting} {}", String::from_utf8_lossy(value));
    emit("echo", OutMessage::new(value))?;

    let number = |name: &str| {
        msg.header_str(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|e| HostError::Invalid(format!("{name}: {e}")))
            })
            .transpose()
    };
    if let Some(ms) = number("schedule-after-ms")? {
        let id = schedule::after_ms("echo", ms, OutMessage::new(value))?;
        info!("scheduled {id}");
    }
    if let Some(at) = number("schedule-at-ms")? {
        let id = schedule::at("echo", at, OutMessage::new(value))?;
        info!("scheduled {id}");
    }
    if let Some(id) = msg.header_str("cancel") {
        let cancelled = schedule::cancel(id)?;
        info!("cancelled {id}: {cancelled}");
    }
    if let Some(key) = msg.header_str("kv-get") {
        match kv::get(key)? {
            Some(v) => info!("kv {key} = {}", String::from_utf8_lossy(&v)),
            None => info!("kv {key} missing"),
        }
    }
    if let Some(key) = msg.header_str("kv-delete") {
        kv::delete(key)?;
        info!("deleted {key}");
    }
    if msg.header("now").is_some() {
        info!("now {}", clock::now_ms());
    }
    if msg.header("config-all").is_some() {
        let all: Vec<String> = config::all()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        info!("config {}", all.join(","));
    }
    if let Some(n) = number("print")? {
        for i in 0..n {
            println!("line {i} of {n} printed by kv-config");
        }
    }
    if let Some(ms) = number("sleep-ms")? {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if msg.header("panic").is_some() {
        panic!("kv-config: asked to panic");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{self, Capability, MessageBuilder, run_handler};

    fn log_lines() -> Vec<String> {
        testing::logs().into_iter().map(|l| l.message).collect()
    }

    #[test]
    fn the_basic_round_trip() {
        testing::set_config("greeting", "hello");
        let outcomes = run_handler::<KvConfig>(&[MessageBuilder::new("world").key("k").tag("t")]);
        assert_eq!(outcomes, [Outcome::Ack]);
        assert_eq!(testing::kv_snapshot()["last"], b"world");
        assert_eq!(log_lines(), ["hello world"]);
        let emitted = testing::emitted();
        assert_eq!(emitted[0].topic, "echo");
        assert_eq!(emitted[0].message, OutMessage::new("world"));
    }

    #[test]
    fn the_optional_calls() {
        testing::set_config("greeting", "hi");
        testing::set_now_ms(5_000);
        let outcomes = run_handler::<KvConfig>(&[
            MessageBuilder::new("a")
                .header("schedule-after-ms", "100")
                .header("kv-get", "last")
                .header("now", ""),
            MessageBuilder::new("b")
                .header("cancel", "delay-1")
                .header("kv-delete", "last")
                .header("kv-get", "last"),
            MessageBuilder::new("c")
                .header("schedule-at-ms", "9000")
                .header("config-all", ""),
        ]);
        assert_eq!(outcomes, [Outcome::Ack, Outcome::Ack, Outcome::Ack]);
        assert_eq!(
            log_lines(),
            [
                "hi a",
                "scheduled delay-1",
                "kv last = a",
                "now 5000",
                "hi b",
                "cancelled delay-1: true",
                "kv last = b",
                "deleted last",
                "hi c",
                "scheduled delay-2",
                "config greeting=hi",
            ]
        );
        let scheduled = testing::scheduled();
        assert_eq!((scheduled.len(), scheduled[0].at_ms), (1, 9_000));
    }

    #[test]
    fn host_errors_become_outcomes() {
        testing::fail(Capability::Emit, HostError::Denied("topic echo".into()));
        assert_eq!(
            run_handler::<KvConfig>(&[MessageBuilder::new("x")]),
            [Outcome::dead_letter("denied: topic echo")]
        );
        testing::fail(Capability::Kv, HostError::Unavailable("later".into()));
        assert_eq!(
            run_handler::<KvConfig>(&[MessageBuilder::new("x")]),
            [Outcome::retry()]
        );
    }
}
