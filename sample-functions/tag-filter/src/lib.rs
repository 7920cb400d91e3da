//! A filter that keeps messages whose tags match a boolean expression.
//!
//! Config `tags` holds the expression: tag names combined with `&&`, `||`,
//! `!` and parentheses, for example `red && (big || small) && !archived`.
//! `!` binds tightest, then `&&`, then `||`. A tag name is any run of
//! characters other than whitespace and `( ) ! & | "`; put other names in
//! double quotes (`"needs review" || urgent`, with `\"` and `\\` escapes).
//!
//! The expression is parsed once, when the instance starts; a bad one stops
//! the deployment with a message pointing at the problem. Per message the
//! filter makes one pass over the headers, marking which of the expression's
//! tags are present, then evaluates the expression over those marks.

use std::collections::BTreeMap;
use std::fmt;

use sluice_guest::{Filter, Message, config};

/// The deployed filter: a compiled expression and a scratch mark per tag.
#[derive(Debug)]
pub struct TagFilter {
    expr: TagExpr,
    present: Vec<bool>,
}

impl Filter for TagFilter {
    fn init() -> Result<Self, String> {
        let source = config::require("tags")?;
        let expr = TagExpr::parse(&source).map_err(|e| e.to_string())?;
        Ok(TagFilter {
            present: vec![false; expr.tags.len()],
            expr,
        })
    }

    fn filter(&mut self, msg: &Message<'_>) -> bool {
        self.present.fill(false);
        for tag in msg.tags() {
            if let Some(&i) = self.expr.tags.get(tag) {
                self.present[i] = true;
            }
        }
        self.expr.root.eval(&self.present)
    }
}

sluice_guest::export_filter!(TagFilter);

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagExpr {
    root: Node,
    /// Each distinct tag name and its mark index.
    tags: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Tag(usize),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

impl Node {
    fn eval(&self, present: &[bool]) -> bool {
        match self {
            Node::Tag(i) => present[*i],
            Node::Not(n) => !n.eval(present),
            Node::And(ns) => ns.iter().all(|n| n.eval(present)),
            Node::Or(ns) => ns.iter().any(|n| n.eval(present)),
        }
    }
}

/// Nesting deeper than this is refused, so evaluation cannot exhaust the
/// WebAssembly stack.
const MAX_DEPTH: usize = 64;

impl TagExpr {
    /// Parses an expression such as `red && (big || small)`.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let tokens = tokenize(source)?;
        let mut p = Parser {
            source,
            tokens,
            pos: 0,
            tags: BTreeMap::new(),
        };
        let root = p.or(0)?;
        if let Some(&(at, ref tok)) = p.tokens.get(p.pos) {
            return Err(p.error(at, format!("unexpected {tok} (missing `&&` or `||`?)")));
        }
        Ok(TagExpr { root, tags: p.tags })
    }

    /// Whether a message with `tags` matches.
    pub fn matches<'t>(&self, tags: impl IntoIterator<Item = &'t str>) -> bool {
        let mut present = vec![false; self.tags.len()];
        for tag in tags {
            if let Some(&i) = self.tags.get(tag) {
                present[i] = true;
            }
        }
        self.root.eval(&present)
    }
}

/// Why a tag expression does not parse; shows the expression and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    source: String,
    /// Character position (0-based) of the problem.
    at: usize,
    message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad tag expression `{}`: {} at character {}",
            self.source,
            self.message,
            self.at + 1
        )
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Not,
    And,
    Or,
    Tag(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::Not => f.write_str("`!`"),
            Token::And => f.write_str("`&&`"),
            Token::Or => f.write_str("`||`"),
            Token::Tag(t) => write!(f, "tag `{t}`"),
        }
    }
}

fn is_tag_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '!' | '&' | '|' | '"')
}

/// Tokens with their character positions.
fn tokenize(source: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let err = |at: usize, message: &str| ParseError {
        source: source.to_owned(),
        at,
        message: message.to_owned(),
    };
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let token = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Token::Open,
            ')' => Token::Close,
            '!' => Token::Not,
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(err(i, &format!("expected `{c}{c}`")));
                }
                i += 1;
                if c == '&' { Token::And } else { Token::Or }
            }
            '"' => {
                let mut tag = String::new();
                loop {
                    i += 1;
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated quoted tag")),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some(&e @ ('"' | '\\')) => tag.push(e),
                                _ => {
                                    return Err(err(
                                        i,
                                        "only `\\\"` and `\\\\` escapes are allowed",
                                    ));
                                }
                            }
                        }
                        Some(&c) => tag.push(c),
                    }
                }
                if tag.is_empty() {
                    return Err(err(start, "empty tag name"));
                }
                Token::Tag(tag)
            }
            _ => {
                while chars.get(i + 1).is_some_and(|&c| is_tag_char(c)) {
                    i += 1;
                }
                Token::Tag(chars[start..=i].iter().collect())
            }
        };
        tokens.push((start, token));
        i += 1;
    }
    Ok(tokens)
}

struct Parser<'s> {
    source: &'s str,
    tokens: Vec<(usize, Token)>,
    pos: usize,
    tags: BTreeMap<String, usize>,
}

impl Parser<'_> {
    fn error(&self, at: usize, message: String) -> ParseError {
        ParseError {
            source: self.source.to_owned(),
            at,
            message,
        }
    }

    fn end(&self) -> usize {
        self.source.chars().count()
    }

    fn eat(&mut self, want: &Token) -> bool {
        if self.tokens.get(self.pos).is_some_and(|(_, t)| t == want) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut terms = vec![self.and(depth)?];
        while self.eat(&Token::Or) {
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
        while self.eat(&Token::And) {
            terms.push(self.unary(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Node::And(terms)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ParseError> {
        let Some((at, token)) = self.tokens.get(self.pos).cloned() else {
            return Err(self.error(self.end(), "expected a tag, `(` or `!`".into()));
        };
        if depth >= MAX_DEPTH {
            return Err(self.error(at, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.pos += 1;
        match token {
            Token::Not => Ok(Node::Not(Box::new(self.unary(depth + 1)?))),
            Token::Open => {
                let inner = self.or(depth + 1)?;
                if !self.eat(&Token::Close) {
                    let found = self.tokens.get(self.pos).map_or(self.end(), |(a, _)| *a);
                    return Err(
                        self.error(found, format!("`(` at character {} is not closed", at + 1))
                    );
                }
                Ok(inner)
            }
            Token::Tag(name) => {
                let next = self.tags.len();
                Ok(Node::Tag(*self.tags.entry(name).or_insert(next)))
            }
            other => Err(self.error(at, format!("expected a tag, `(` or `!`, found {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{self, MessageBuilder, run_filter};

    fn m(expr: &str, tags: &[&str]) -> bool {
        TagExpr::parse(expr).unwrap().matches(tags.iter().copied())
    }

    #[test]
    fn precedence_and_parentheses() {
        let e = "red && (big || small)";
        assert!(m(e, &["red", "big"]));
        assert!(m(e, &["small", "red"]));
        assert!(!m(e, &["red"]));
        assert!(!m(e, &["big", "small"]));
        // && binds tighter than ||
        assert!(m("a || b && c", &["a"]));
        assert!(!m("a || b && c", &["b"]));
        assert!(m("(a || b) && c", &["b", "c"]));
        // ! binds tightest
        assert!(m("!a && b", &["b"]));
        assert!(!m("!a && b", &["a", "b"]));
        assert!(m("!(a && b)", &["a"]));
        assert!(m("!!a", &["a"]));
        assert!(m("x", &["x"]) && !m("x", &[]));
    }

    #[test]
    fn names_quotes_and_spacing() {
        assert!(m("eu-west.orders:v2", &["eu-west.orders:v2"]));
        assert!(m(r#""needs review" || urgent"#, &["needs review"]));
        assert!(m(r#""say \"hi\"""#, &[r#"say "hi""#]));
        assert!(m("a&&b||c", &["c"]));
        assert!(m("  café  ", &["café"]));
        let e = TagExpr::parse("a && a || a").unwrap();
        assert_eq!(e.tags.len(), 1, "a repeated tag gets one mark");
    }

    #[test]
    fn bad_expressions_say_where() {
        let err = |s: &str| TagExpr::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("red && "),
            "bad tag expression `red && `: expected a tag, `(` or `!` at character 8"
        );
        assert_eq!(
            err("red & big"),
            "bad tag expression `red & big`: expected `&&` at character 5"
        );
        assert!(
            err("(red || big").contains("is not closed"),
            "{}",
            err("(red || big")
        );
        assert!(err("red big").contains("unexpected tag `big`"));
        assert!(err("red )").contains("unexpected `)`"));
        assert!(err("").contains("expected a tag"));
        assert!(err("\"open").contains("unterminated"));
        assert!(err("&& red").contains("found `&&`"));
        assert!(err(&"(".repeat(100)).contains("nested deeper"));
        assert!(err(&"!".repeat(100)).contains("nested deeper"));
    }

    #[test]
    fn filters_messages_by_config() {
        testing::set_config("tags", "red && (big || small)");
        let kept = run_filter::<TagFilter>(&[
            MessageBuilder::new("1").tag("red").tag("big"),
            MessageBuilder::new("2").tag("red"),
            MessageBuilder::new("3")
                .tag("small")
                .header("red", "not a tag")
                .tag("red"),
            MessageBuilder::new("4"),
        ]);
        assert_eq!(kept, [true, false, true, false]);
    }

    #[test]
    #[should_panic(expected = "missing config parameter `tags`")]
    fn init_needs_the_expression() {
        run_filter::<TagFilter>(&[MessageBuilder::new("1")]);
    }

    #[test]
    #[should_panic(expected = "bad tag expression `red ||`")]
    fn init_rejects_a_bad_expression() {
        testing::set_config("tags", "red ||");
        run_filter::<TagFilter>(&[MessageBuilder::new("1")]);
    }
}
