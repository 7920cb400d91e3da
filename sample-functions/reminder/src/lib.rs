//! A handler that schedules a follow-up message for each message.
//!
//! For each message it schedules, through the broker's delay scheduler, a
//! copy of the message (same key and value, no tags) to config `topic`
//! (default `reminders`) after config `delay_ms` milliseconds (default
//! 60000, one minute), with a `reminder-of` property naming the original:
//! its message id (a UUID) when it has one, `<topic>/<partition>/<offset>`
//! otherwise. Then it acks. When the scheduler is unavailable the message
//! is retried after the group's backoff; any other refusal dead-letters it.

use sluice_guest::{Handler, Message, OutMessage, Outcome, config, debug, schedule};

/// The deployed handler.
#[derive(Debug)]
pub struct Reminder {
    topic: String,
    delay_ms: u64,
}

const DEFAULT_TOPIC: &str = "reminders";
const DEFAULT_DELAY_MS: u64 = 60_000;

impl Handler for Reminder {
    fn init() -> Result<Self, String> {
        let topic = config::get("topic").unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
        if topic.trim().is_empty() {
            return Err("config `topic` is empty".into());
        }
        let delay_ms = config::get_parsed("delay_ms")?.unwrap_or(DEFAULT_DELAY_MS);
        Ok(Reminder { topic, delay_ms })
    }

    fn handle(&mut self, msg: &Message<'_>) -> Outcome {
        let original = match msg.id() {
            Some(id) => id.to_string(),
            None => format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()),
        };
        let mut reminder = OutMessage::new(msg.value()).header("reminder-of", original.as_str());
        if let Some(key) = msg.key() {
            reminder = reminder.key(key);
        }
        match schedule::after_ms(&self.topic, self.delay_ms, reminder) {
            Ok(delay_id) => {
                debug!("reminder {delay_id} for {original} in {} ms", self.delay_ms);
                Outcome::Ack
            }
            Err(e) => e.into(),
        }
    }
}

sluice_guest::export_handler!(Reminder);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{self, Capability, MessageBuilder, run_handler};
    use sluice_guest::{HostError, clock};

    #[test]
    fn schedules_a_copy_with_the_defaults() {
        let id = [
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1,
        ];
        let outcomes = run_handler::<Reminder>(&[
            MessageBuilder::new("pay invoice 7")
                .key("c-1")
                .tag("billing")
                .id(id),
            MessageBuilder::new("no id").topic("test").offset(5).no_id(),
        ]);
        assert_eq!(outcomes, [Outcome::Ack, Outcome::Ack]);
        let scheduled = testing::scheduled();
        assert_eq!(scheduled.len(), 2);
        assert_eq!(scheduled[0].topic, "reminders");
        assert_eq!(scheduled[0].at_ms, clock::now_ms() + 60_000);
        assert_eq!(
            scheduled[0].message,
            OutMessage::new("pay invoice 7")
                .header("reminder-of", "018bcfe5-6800-7000-8000-000000000001")
                .key("c-1")
        );
        assert_eq!(
            scheduled[1].message.header_value("reminder-of"),
            Some(&b"test/0/5"[..])
        );
        assert_eq!(scheduled[1].message.key, None);
    }

    #[test]
    fn topic_and_delay_come_from_config() {
        testing::set_config("topic", "follow-ups");
        testing::set_config("delay_ms", "1500");
        run_handler::<Reminder>(&[MessageBuilder::new("x")]);
        let s = &testing::scheduled()[0];
        assert_eq!((s.topic.as_str(), s.delay_ms), ("follow-ups", Some(1_500)));
        testing::set_config("delay_ms", "soon");
        assert!(
            Reminder::init()
                .unwrap_err()
                .contains("`delay_ms` = `soon` is invalid")
        );
    }

    #[test]
    fn scheduler_errors_become_outcomes() {
        testing::fail(
            Capability::Schedule,
            HostError::Unavailable("restarting".into()),
        );
        assert_eq!(
            run_handler::<Reminder>(&[MessageBuilder::new("x")]),
            [Outcome::retry()]
        );
        testing::fail(
            Capability::Schedule,
            HostError::Denied("topic reminders".into()),
        );
        assert_eq!(
            run_handler::<Reminder>(&[MessageBuilder::new("x")]),
            [Outcome::dead_letter("denied: topic reminders")]
        );
    }
}
