//! A transform that routes JSON messages to topics by one of their fields.
//!
//! Config:
//!
//! - `field`: the dotted path of the field to route by (`region`,
//!   `customer.country`);
//! - `routes`: `value=topic` pairs separated by commas
//!   (`eu=orders-eu,us=orders-us`);
//! - `default` (optional): the topic for values without a route.
//!
//! Each message is copied unchanged (key, value, properties, tags) to the
//! topic of its field's value (a string, or the text of a number or bool).
//! A message that is not JSON, or whose value has no route and there is no
//! default, fails with the reason (`no route for region=xx`); the broker
//! handles failed inputs like any transform failure.
//!
//! The copies are the transform's outputs, not [`sluice_guest::emit`]
//! calls, so the broker commits them atomically with the input's offset:
//! each message is routed exactly once, even across crashes.

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_guest::{Message, OutMessage, Outputs, Transform, config};

/// The deployed router.
#[derive(Debug)]
pub struct Router {
    field: Vec<String>,
    field_name: String,
    routes: BTreeMap<String, String>,
    default: Option<String>,
}

impl Transform for Router {
    fn init() -> Result<Self, String> {
        let field_name = config::require("field")?;
        if field_name.split('.').any(str::is_empty) {
            return Err(format!(
                "config `field` = `{field_name}` is not a dotted path"
            ));
        }
        let routes = parse_routes(&config::require("routes")?)?;
        let default = config::get("default").filter(|d| !d.trim().is_empty());
        Ok(Router {
            field: field_name.split('.').map(str::to_owned).collect(),
            field_name,
            routes,
            default,
        })
    }

    fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
        let value: Value =
            serde_json::from_slice(msg.value()).map_err(|e| format!("value is not JSON: {e}"))?;
        let key = self.lookup(&value);
        let topic = key
            .as_deref()
            .and_then(|k| self.routes.get(k))
            .or(self.default.as_ref())
            .ok_or_else(|| match &key {
                Some(k) => format!("no route for {}={k}", self.field_name),
                None => format!("no route: the message has no field `{}`", self.field_name),
            })?;
        out.emit_to(topic.as_str(), OutMessage::from_input(msg));
        Ok(())
    }
}

sluice_guest::export_transform!(Router);

impl Router {
    /// The routing key: the field's value as text, when it is a string,
    /// number or bool.
    fn lookup(&self, value: &Value) -> Option<String> {
        let mut v = value;
        for step in &self.field {
            v = match v {
                Value::Object(map) => map.get(step)?,
                Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Parses `eu=orders-eu, us=orders-us`.
fn parse_routes(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut routes = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (value, topic) = pair
            .split_once('=')
            .map(|(v, t)| (v.trim(), t.trim()))
            .filter(|(v, t)| !v.is_empty() && !t.is_empty())
            .ok_or_else(|| format!("config `routes`: `{pair}` is not `value=topic`"))?;
        if routes.insert(value.to_owned(), topic.to_owned()).is_some() {
            return Err(format!("config `routes`: value `{value}` is routed twice"));
        }
    }
    if routes.is_empty() {
        return Err("config `routes` is empty".into());
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{self, MessageBuilder, run_transform};

    fn configure(default: Option<&str>) {
        testing::set_config("field", "region");
        testing::set_config("routes", "eu=orders-eu, us=orders-us,7=orders-seven");
        if let Some(d) = default {
            testing::set_config("default", d);
        }
    }

    fn topics(
        results: &[Result<Vec<sluice_guest::Output>, String>],
    ) -> Vec<Result<String, String>> {
        results
            .iter()
            .map(|r| match r {
                Ok(outs) => {
                    assert_eq!(outs.len(), 1);
                    Ok(outs[0].topic.clone().unwrap())
                }
                Err(e) => Err(e.clone()),
            })
            .collect()
    }

    #[test]
    fn routes_by_field() {
        configure(None);
        let results = run_transform::<Router>(&[
            MessageBuilder::new(r#"{"region": "eu", "id": 1}"#)
                .key("k")
                .tag("t"),
            MessageBuilder::new(r#"{"region": "us"}"#),
            MessageBuilder::new(r#"{"region": 7}"#),
            MessageBuilder::new(r#"{"region": "xx"}"#),
            MessageBuilder::new(r#"{"other": 1}"#),
            MessageBuilder::new("not json"),
        ]);
        let got = topics(&results);
        assert_eq!(got[0], Ok("orders-eu".into()));
        assert_eq!(got[1], Ok("orders-us".into()));
        assert_eq!(got[2], Ok("orders-seven".into()));
        assert_eq!(got[3], Err("no route for region=xx".into()));
        assert_eq!(
            got[4],
            Err("no route: the message has no field `region`".into())
        );
        assert!(
            got[5]
                .as_ref()
                .unwrap_err()
                .starts_with("value is not JSON")
        );
        let copy = &results[0].as_ref().unwrap()[0].message;
        assert_eq!(
            copy,
            &OutMessage::new(r#"{"region": "eu", "id": 1}"#)
                .key("k")
                .tag("t")
        );
    }

    #[test]
    fn unrouted_values_go_to_the_default() {
        configure(Some("orders-other"));
        testing::set_config("field", "customer.country");
        let got = topics(&run_transform::<Router>(&[
            MessageBuilder::new(r#"{"customer": {"country": "eu"}}"#),
            MessageBuilder::new(r#"{"customer": {"country": "br"}}"#),
            MessageBuilder::new(r#"{"customer": null}"#),
        ]));
        assert_eq!(
            got,
            [
                Ok("orders-eu".to_string()),
                Ok("orders-other".to_string()),
                Ok("orders-other".to_string())
            ]
        );
    }

    #[test]
    fn bad_config_is_reported() {
        assert_eq!(
            parse_routes("eu=a,us").unwrap_err(),
            "config `routes`: `us` is not `value=topic`"
        );
        assert_eq!(
            parse_routes("eu=a,eu=b").unwrap_err(),
            "config `routes`: value `eu` is routed twice"
        );
        assert_eq!(parse_routes(" , ").unwrap_err(), "config `routes` is empty");
        testing::set_config("field", "a..b");
        testing::set_config("routes", "x=y");
        assert!(Router::init().unwrap_err().contains("not a dotted path"));
        testing::set_config("field", "a.b");
        testing::unset_config("routes");
        assert_eq!(
            Router::init().unwrap_err(),
            "missing config parameter `routes`"
        );
    }
}
