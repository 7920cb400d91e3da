//! A handler that keeps a running order total per customer.
//!
//! Each message is an order, `{"customer": "c-42", "amount": 12.5}`. The
//! handler adds the amount to the customer's total in kv (key
//! `total/<customer>`, the total as decimal text), logs the new total and
//! acks. An order that is not such JSON is dead-lettered with the reason;
//! when kv is unavailable the message is retried after one second.
//!
//! Delivery is at least once: an order redelivered after its total was
//! stored (the broker crashed before recording the ack) is counted again.
//! Where that matters, record each order's message id in kv and skip the
//! ones already seen.

use serde::Deserialize;
use sluice_guest::{Handler, HostError, Message, Outcome, info, kv};

/// The deployed handler; it has no configuration.
#[derive(Debug)]
pub struct OrderTotals;

#[derive(Debug, Deserialize)]
struct Order {
    customer: String,
    amount: f64,
}

/// How long to wait before retrying when kv is unavailable.
const KV_RETRY_MS: u64 = 1_000;

impl Handler for OrderTotals {
    fn init() -> Result<Self, String> {
        Ok(OrderTotals)
    }

    fn handle(&mut self, msg: &Message<'_>) -> Outcome {
        let order: Order = match msg.json() {
            Ok(order) => order,
            Err(e) => return Outcome::dead_letter(format!("invalid order: {e}")),
        };
        if order.customer.is_empty() || !order.amount.is_finite() {
            return Outcome::dead_letter("invalid order: empty customer or amount out of range");
        }
        let key = format!("total/{}", order.customer);
        let stored = match kv::get(&key) {
            Ok(stored) => stored,
            Err(e) => return kv_failed(e),
        };
        let previous = match stored.as_deref().map(parse_total) {
            None => 0.0,
            Some(Some(total)) => total,
            Some(None) => {
                return Outcome::dead_letter(format!(
                    "the stored total under `{key}` is not a number"
                ));
            }
        };
        let total = previous + order.amount;
        if let Err(e) = kv::set(&key, total.to_string()) {
            return kv_failed(e);
        }
        info!("customer {} total {total}", order.customer);
        Outcome::Ack
    }
}

sluice_guest::export_handler!(OrderTotals);

fn parse_total(bytes: &[u8]) -> Option<f64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn kv_failed(e: HostError) -> Outcome {
    match e {
        HostError::Unavailable(_) => Outcome::retry_after_ms(KV_RETRY_MS),
        e => Outcome::dead_letter(format!("kv: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{self, Capability, MessageBuilder, run_handler};

    #[test]
    fn totals_accumulate_per_customer() {
        testing::set_kv("total/c-1", "10");
        let outcomes = run_handler::<OrderTotals>(&[
            MessageBuilder::new(r#"{"customer": "c-1", "amount": 12.5}"#),
            MessageBuilder::new(r#"{"customer": "c-2", "amount": 3}"#),
            MessageBuilder::new(
                r#"{"customer": "c-1", "amount": 0.5, "note": "extra fields are fine"}"#,
            ),
        ]);
        assert_eq!(outcomes, [Outcome::Ack, Outcome::Ack, Outcome::Ack]);
        let kv = testing::kv_snapshot();
        assert_eq!(kv["total/c-1"], b"23");
        assert_eq!(kv["total/c-2"], b"3");
        let logs: Vec<String> = testing::logs().into_iter().map(|l| l.message).collect();
        assert_eq!(
            logs,
            [
                "customer c-1 total 22.5",
                "customer c-2 total 3",
                "customer c-1 total 23"
            ]
        );
    }

    #[test]
    fn invalid_orders_are_dead_lettered() {
        testing::set_kv("total/bad", "lots");
        let outcomes = run_handler::<OrderTotals>(&[
            MessageBuilder::new("not json"),
            MessageBuilder::new(r#"{"customer": "c-1"}"#),
            MessageBuilder::new(r#"{"customer": "", "amount": 1}"#),
            MessageBuilder::new(r#"{"customer": "bad", "amount": 1}"#),
        ]);
        for outcome in &outcomes {
            assert!(matches!(outcome, Outcome::DeadLetter(_)), "{outcome:?}");
        }
        let Outcome::DeadLetter(reason) = &outcomes[1] else {
            unreachable!()
        };
        assert!(
            reason.starts_with("invalid order: missing field `amount`"),
            "{reason}"
        );
        assert_eq!(
            outcomes[3],
            Outcome::dead_letter("the stored total under `total/bad` is not a number")
        );
    }

    #[test]
    fn kv_trouble_retries_or_dead_letters() {
        let order = [MessageBuilder::new(r#"{"customer": "c-1", "amount": 1}"#)];
        testing::fail(Capability::Kv, HostError::Unavailable("compacting".into()));
        assert_eq!(
            run_handler::<OrderTotals>(&order),
            [Outcome::retry_after_ms(1_000)]
        );
        testing::fail(
            Capability::Kv,
            HostError::LimitExceeded("too many keys".into()),
        );
        assert_eq!(
            run_handler::<OrderTotals>(&order),
            [Outcome::dead_letter("kv: limit exceeded: too many keys")]
        );
        testing::clear_failures();
        assert_eq!(run_handler::<OrderTotals>(&order), [Outcome::Ack]);
    }
}
