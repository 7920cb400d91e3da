//! A filter that keeps JSON messages whose fields satisfy a predicate.
//!
//! Config `predicate` holds comparisons of a field with a literal, combined
//! with `&&`, `||`, `!` and parentheses, for example
//! `amount > 100 && currency == "EUR"` or
//! `customer.tier == "gold" || (items.0.qty >= 10 && !express == true)`.
//!
//! - A field is a dotted path into the value: object keys (letters, digits,
//!   `_`, `-`, or any text in double quotes) and array indexes (`items.0`).
//! - Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`. Numbers compare as
//!   numbers, strings compare by bytes; `==` and `!=` also take `true`,
//!   `false` and `null`. Ordering a string against a number is false.
//! - A comparison on a field the message lacks is false, whatever the
//!   operator, and a message whose value is not JSON is dropped.
//!
//! The predicate is parsed once when the instance starts; a bad one stops
//! the deployment with a message pointing at the problem.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;
use sluice_guest::{Filter, Message, config};

/// The deployed filter.
#[derive(Debug)]
pub struct JsonFilter {
    predicate: Predicate,
}

impl Filter for JsonFilter {
    fn init() -> Result<Self, String> {
        let source = config::require("predicate")?;
        let predicate = Predicate::parse(&source).map_err(|e| e.to_string())?;
        Ok(JsonFilter { predicate })
    }

    fn filter(&mut self, msg: &Message<'_>) -> bool {
        match serde_json::from_slice::<Value>(msg.value()) {
            Ok(value) => self.predicate.matches(&value),
            Err(_) => false,
        }
    }
}

sluice_guest::export_filter!(JsonFilter);

/// A parsed predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Compare {
        path: Vec<Segment>,
        op: Op,
        literal: Literal,
    },
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

/// One step of a path: an object key, or an array index when it is all
/// digits.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    name: String,
    index: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl Predicate {
    /// Parses a predicate such as `amount > 100 && currency == "EUR"`.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let mut p = Parser { source, pos: 0 };
        let root = p.or(0)?;
        p.skip_space();
        if p.pos < source.len() {
            return Err(p.error("unexpected text (missing `&&` or `||`?)"));
        }
        Ok(Predicate { root })
    }

    /// Whether a JSON value satisfies the predicate.
    pub fn matches(&self, value: &Value) -> bool {
        self.root.eval(value)
    }
}

impl Node {
    fn eval(&self, value: &Value) -> bool {
        match self {
            Node::Compare { path, op, literal } => {
                lookup(value, path).is_some_and(|field| compare(field, *op, literal))
            }
            Node::Not(n) => !n.eval(value),
            Node::And(ns) => ns.iter().all(|n| n.eval(value)),
            Node::Or(ns) => ns.iter().any(|n| n.eval(value)),
        }
    }
}

fn lookup<'v>(mut value: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    for Segment { name, index } in path {
        value = match value {
            Value::Object(map) => map.get(name)?,
            Value::Array(items) => items.get((*index)?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn compare(field: &Value, op: Op, literal: &Literal) -> bool {
    let ordering = match (field, literal) {
        (Value::Number(n), Literal::Num(l)) => n.as_f64().and_then(|n| n.partial_cmp(l)),
        (Value::String(s), Literal::Str(l)) => Some(s.as_str().cmp(l.as_str())),
        (Value::Bool(b), Literal::Bool(l)) if matches!(op, Op::Eq | Op::Ne) => Some(b.cmp(l)),
        (Value::Null, Literal::Null) if matches!(op, Op::Eq | Op::Ne) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (Op::Lt, Some(o)) => o.is_lt(),
        (Op::Le, Some(o)) => o.is_le(),
        (Op::Gt, Some(o)) => o.is_gt(),
        (Op::Ge, Some(o)) => o.is_ge(),
        (_, None) => false,
    }
}

/// Why a predicate does not parse; shows the predicate and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    source: String,
    /// Byte position of the problem.
    at: usize,
    message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad predicate `{}`: {} at character {}",
            self.source,
            self.message,
            self.source[..self.at].chars().count() + 1
        )
    }
}

impl std::error::Error for ParseError {}

/// Nesting deeper than this is refused, so evaluation cannot exhaust the
/// WebAssembly stack.
const MAX_DEPTH: usize = 64;

struct Parser<'s> {
    source: &'s str,
    /// Byte offset into `source`.
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            source: self.source.to_owned(),
            at: self.pos,
            message: message.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.source[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.source.len() - trimmed.len();
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut terms = vec![self.and(depth)?];
        while self.eat("||") {
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Node::Or(terms)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut terms = vec![self.unary(depth)?];
        while self.eat("&&") {
            terms.push(self.unary(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Node::And(terms)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ParseError> {
        self.skip_space();
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            return Ok(Node::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat("(") {
            let open = self.pos - 1;
            let inner = self.or(depth + 1)?;
            if !self.eat(")") {
                let at = self.source[..open].chars().count() + 1;
                return Err(self.error(format!("`(` at character {at} is not closed")));
            }
            return Ok(inner);
        }
        let path = self.path()?;
        let op = self.op()?;
        let literal = self.literal()?;
        Ok(Node::Compare { path, op, literal })
    }

    fn path(&mut self) -> Result<Vec<Segment>, ParseError> {
        let mut path = Vec::new();
        loop {
            self.skip_space();
            let name = if self.peek() == Some('"') {
                self.string()?
            } else {
                let len = self
                    .rest()
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(self.rest().len());
                if len == 0 {
                    return Err(self.error("expected a field name, `(` or `!`"));
                }
                let name = self.rest()[..len].to_owned();
                self.pos += len;
                name
            };
            let index = name.parse().ok();
            path.push(Segment { name, index });
            if !self.rest().starts_with('.') {
                return Ok(path);
            }
            self.pos += 1;
        }
    }

    fn op(&mut self) -> Result<Op, ParseError> {
        self.skip_space();
        for (text, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if self.eat(text) {
                return Ok(op);
            }
        }
        Err(self.error("expected a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)"))
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        self.skip_space();
        match self.peek() {
            Some('"') => return self.string().map(Literal::Str),
            Some(c) if c == '-' || c.is_ascii_digit() => return self.number(),
            _ => {}
        }
        for (word, literal) in [
            ("true", Literal::Bool(true)),
            ("false", Literal::Bool(false)),
            ("null", Literal::Null),
        ] {
            let rest = self.rest();
            if rest.starts_with(word)
                && !rest[word.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                self.pos += word.len();
                return Ok(literal);
            }
        }
        Err(self.error("expected a string, number, `true`, `false` or `null`"))
    }

    fn number(&mut self) -> Result<Literal, ParseError> {
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
            .unwrap_or(self.rest().len());
        let text = &self.rest()[..len];
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => {
                self.pos += len;
                Ok(Literal::Num(n))
            }
            _ => Err(self.error(format!("`{text}` is not a number"))),
        }
    }

    /// A double-quoted string with JSON escapes; `pos` is at the quote.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.source[start + 1..].char_indices();
        let unterminated = || ParseError {
            source: self.source.to_owned(),
            at: start,
            message: "unterminated string".into(),
        };
        loop {
            let (i, c) = chars.next().ok_or_else(unterminated)?;
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let (j, e) = chars.next().ok_or_else(unterminated)?;
                    match e {
                        '"' | '\\' | '/' => out.push(e),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'u' => {
                            let hex = self.source.get(start + 2 + j..start + 6 + j);
                            let c = hex
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .and_then(char::from_u32)
                                .ok_or_else(|| ParseError {
                                    source: self.source.to_owned(),
                                    at: start + 1 + j,
                                    message: "bad \\u escape (four hex digits, no surrogates)"
                                        .into(),
                                })?;
                            out.push(c);
                            for _ in 0..4 {
                                chars.next();
                            }
                        }
                        _ => {
                            return Err(ParseError {
                                source: self.source.to_owned(),
                                at: start + 1 + j,
                                message: format!("unknown escape `\\{e}`"),
                            });
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_guest::testing::{self, MessageBuilder, run_filter};

    fn m(predicate: &str, value: Value) -> bool {
        Predicate::parse(predicate).unwrap().matches(&value)
    }

    #[test]
    fn comparisons() {
        let order = json!({"amount": 150, "currency": "EUR", "express": true, "note": null,
                           "customer": {"tier": "gold", "id": 7}, "items": [{"qty": 12}]});
        assert!(m("amount > 100", order.clone()));
        assert!(m("amount >= 150 && amount <= 150.0", order.clone()));
        assert!(!m("amount < 100", order.clone()));
        assert!(m("amount != 151", order.clone()));
        assert!(m("amount == 1.5e2", order.clone()));
        assert!(m(r#"currency == "EUR""#, order.clone()));
        assert!(m(r#"currency < "USD""#, order.clone()));
        assert!(m("express == true && note == null", order.clone()));
        assert!(m(
            r#"customer.tier == "gold" && customer.id == 7"#,
            order.clone()
        ));
        assert!(m("items.0.qty >= 10", order.clone()));
        assert!(!m("items.1.qty >= 10", order.clone()));
        assert!(m(r#"amount > 1000 || currency == "EUR""#, order.clone()));
        assert!(m(r#"!(currency == "USD")"#, order.clone()));
        assert!(m(r#""amount" > -5"#, order.clone()));
        // type mismatches: ordering is false, == false, != true
        assert!(!m(r#"amount > "100""#, order.clone()));
        assert!(!m(r#"currency == 3"#, order.clone()));
        assert!(m(r#"currency != 3"#, order.clone()));
    }

    #[test]
    fn a_missing_field_fails_every_comparison() {
        let v = json!({"a": 1});
        for op in ["==", "!=", "<", "<=", ">", ">="] {
            assert!(!m(&format!("b {op} 1"), v.clone()), "{op}");
        }
        assert!(m("b == 1 || a == 1", v.clone()));
        assert!(!m("a.b == 1", v));
    }

    #[test]
    fn string_escapes_and_quoted_keys() {
        let v = json!({"odd key": "say \"hi\"\n", "é": "ü"});
        assert!(m(r#""odd key" == "say \"hi\"\n""#, v.clone()));
        assert!(m(r#""é" == "\u00fc""#, v));
    }

    #[test]
    fn bad_predicates_say_where() {
        let err = |s: &str| Predicate::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("amount >"),
            "bad predicate `amount >`: expected a string, number, `true`, `false` or `null` at character 9"
        );
        assert!(err("amount 100").contains("expected a comparison"));
        assert!(err("amount > 1 currency == 2").contains("unexpected text"));
        assert!(err("(amount > 1").contains("is not closed"));
        assert!(err(r#"a == "open"#).contains("unterminated string"));
        assert!(err("a == 1.2.3").contains("is not a number"));
        assert!(err("&& a == 1").contains("expected a field name"));
        assert!(err(r#"a == "\q""#).contains("unknown escape"));
        assert!(err(&"(".repeat(100)).contains("nested deeper"));
    }

    #[test]
    fn drops_non_json_and_keeps_matches() {
        testing::set_config("predicate", r#"amount > 100 && currency == "EUR""#);
        let kept = run_filter::<JsonFilter>(&[
            MessageBuilder::new(r#"{"amount": 150, "currency": "EUR"}"#),
            MessageBuilder::new(r#"{"amount": 50, "currency": "EUR"}"#),
            MessageBuilder::new(r#"{"currency": "EUR"}"#),
            MessageBuilder::new("not json"),
            MessageBuilder::tombstone(),
        ]);
        assert_eq!(kept, [true, false, false, false, false]);
    }

    #[test]
    #[should_panic(expected = "bad predicate")]
    fn init_rejects_a_bad_predicate() {
        testing::set_config("predicate", "amount >> 1");
        run_filter::<JsonFilter>(&[]);
    }
}
