//! Tag filter expressions: which messages a consumer group wants.
//!
//! A message carries zero or more tags (the [`sluice_protocol::headers::TAG`]
//! headers). A consumer group subscribes with a tag expression and the
//! broker delivers only the messages it matches. Parsing happens once per
//! subscription; matching happens once per message on the delivery path, so
//! the expression is compiled to something cheap to run.
//!
//! ```text
//! expr  := or
//! or    := and ( ("OR" | "||") and )*
//! and   := not ( ("AND" | "&&") not )*
//! not   := ("NOT" | "!") not | atom
//! atom  := TAG | "(" expr ")" | "*"
//! TAG   := [A-Za-z0-9_.:/-]+  |  '…'  |  "…"
//! ```
//!
//! Keywords are case-insensitive and whitespace is insignificant. A quoted
//! tag may hold any character but its own quote (there are no escapes); quote
//! a tag that is spelled like a keyword. `a || b || c`, the RocketMQ/DDMQ
//! form, is just OR. `*` matches every message, and so does an empty (or
//! all-whitespace) expression. A tag matches a message that carries exactly
//! that tag, compared byte for byte (so case-sensitively).
//!
//! ```
//! use sluice_broker::groups::tag_expr::TagExpr;
//! let e = TagExpr::parse("red || blue && !'on sale'").unwrap();
//! assert_eq!(e.source(), "red OR blue AND NOT 'on sale'");
//! assert!(e.matches([&b"red"[..], b"on sale"]));
//! assert!(!e.matches([&b"blue"[..], b"on sale"]));
//! assert!(TagExpr::parse("").unwrap().matches_all());
//! ```
//!
//! How matching stays cheap: the distinct tags of an expression (at most
//! [`MAX_TAGS`]) are kept sorted, and a tag's position there is its bit.
//! Each message tag is looked up once, building a `u64` of the expression
//! tags present; a postfix program then evaluates the expression on that
//! mask with a stack of bits held in a `u128`. Nothing allocates, whatever
//! the number of message tags.

use std::fmt;

use thiserror::Error;

/// Longest expression accepted, in bytes: subscriptions are small, and a
/// bound keeps parsing cheap for a broker that takes them from the network.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Deepest nesting accepted, counting each `(` and each `NOT`: it bounds the
/// parser's recursion and the evaluator's stack.
pub const MAX_DEPTH: usize = 32;
/// Most distinct tags an expression may name: one bit each in a `u64`.
pub const MAX_TAGS: usize = 64;

/// The bit stack that evaluates a program is a `u128`. Each nesting level
/// needs at most two more slots (an OR operand holding an AND operand),
/// plus three at the innermost level, so the deepest accepted expression
/// fits. Checked here so that raising [`MAX_DEPTH`] cannot silently
/// overflow it.
const _: () = assert!(2 * MAX_DEPTH + 3 <= 128);

/// Why a tag expression was refused. Columns count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TagExprError {
    #[error("tag expression is {len} bytes long; the limit is {}", MAX_SOURCE_LEN)]
    TooLong { len: usize },
    #[error("unexpected character '{}' at column {column}", .ch.escape_debug())]
    UnexpectedChar { ch: char, column: usize },
    #[error("unterminated quoted tag starting at column {column}")]
    UnterminatedQuote { column: usize },
    #[error("empty quoted tag at column {column}")]
    EmptyTag { column: usize },
    /// `found` is the offending token as written, quoted, or `end of input`.
    #[error("expected {expected} at column {column}, found {found}")]
    Expected {
        expected: &'static str,
        column: usize,
        found: String,
    },
    #[error(
        "tag expression nests deeper than {} levels at column {column}",
        MAX_DEPTH
    )]
    TooDeep { column: usize },
    #[error(
        "tag expression names more than {} distinct tags; the one at column {column} is one too many",
        MAX_TAGS
    )]
    TooManyTags { column: usize },
}

/// A compiled tag expression.
///
/// Two expressions that differ only in spelling (keyword case, `||` for
/// `OR`, spacing, redundant parentheses or quotes) have the same
/// [`source`](Self::source) and compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagExpr {
    /// The normalised text, kept for display and for comparing subscriptions.
    source: Box<str>,
    /// The tags the program reads, sorted by bytes; bit `i` is `tags[i]`.
    tags: Box<[Box<str>]>,
    program: Program,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Program {
    /// The answer does not depend on the tags (`*`, `NOT *`, `a OR *`, …).
    Const(bool),
    /// Postfix over the bit stack; never contains a constant.
    Ops(Box<[Op]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Push whether the tag with this bit is present.
    Tag(u8),
    Not,
    And,
    Or,
}

impl TagExpr {
    /// Parses and compiles `src`; see the module docs for the grammar.
    pub fn parse(src: &str) -> Result<TagExpr, TagExprError> {
        if src.len() > MAX_SOURCE_LEN {
            return Err(TagExprError::TooLong { len: src.len() });
        }
        let mut parser = Parser {
            lexer: Lexer {
                src,
                pos: 0,
                column: 1,
            },
            peeked: None,
            names: Vec::new(),
            depth: 0,
        };
        let ast = if src.trim().is_empty() {
            Node::Const(true)
        } else {
            let ast = parser.parse_or()?;
            parser.expect_end()?;
            ast
        };
        let mut source = String::new();
        write_node(&mut source, &ast, &parser.names, PREC_OR);
        Ok(compile(source, fold(ast), &parser.names))
    }

    /// Whether every message matches, whatever its tags: `*`, the empty
    /// expression, or one that folds to it such as `a OR *`. The broker can
    /// then skip reading tags at all.
    pub fn matches_all(&self) -> bool {
        self.program == Program::Const(true)
    }

    /// Whether a message with these tags (the raw values of its tag headers)
    /// matches. Runs per message, so it never allocates; each tag is looked
    /// up once, and repeated or unknown tags are harmless.
    pub fn matches<'a>(&self, tags: impl IntoIterator<Item = &'a [u8]>) -> bool {
        let ops = match &self.program {
            Program::Const(answer) => return *answer,
            Program::Ops(ops) => ops,
        };
        let all = u64::MAX >> (64 - self.tags.len());
        let mut present = 0u64;
        for tag in tags {
            if let Ok(bit) = self.tags.binary_search_by(|t| t.as_bytes().cmp(tag)) {
                present |= 1 << bit;
                if present == all {
                    break;
                }
            }
        }
        run(ops, present)
    }

    /// The normalised text: keywords in upper case (`AND`, `OR`, `NOT`),
    /// single spaces, only the parentheses precedence needs, tags quoted
    /// only when they must be, and `*` for the empty expression. Parsing it
    /// gives back an equal expression.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for TagExpr {
    /// Writes the normalised text, [`source`](Self::source).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Evaluates a postfix program on the mask of tags present. The stack of
/// booleans is the bits of a `u128`, top at bit 0; compilation guarantees
/// the program never needs more than 128 slots.
fn run(ops: &[Op], present: u64) -> bool {
    let mut stack = 0u128;
    for op in ops {
        match *op {
            Op::Tag(bit) => stack = (stack << 1) | u128::from((present >> bit) & 1 == 1),
            Op::Not => stack ^= 1,
            Op::And => {
                let top = stack & 1;
                stack >>= 1;
                stack &= !1 | top;
            }
            Op::Or => {
                let top = stack & 1;
                stack >>= 1;
                stack |= top;
            }
        }
    }
    stack & 1 == 1
}

// ---- syntax tree -------------------------------------------------------

/// The parsed expression. AND and OR are n-ary and flattened, so the
/// normalised text drops parentheses that only regroup one operator.
#[derive(Debug)]
enum Node {
    /// A tag, by its index in order of first appearance.
    Tag(u8),
    Const(bool),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

const PREC_OR: u8 = 0;
const PREC_AND: u8 = 1;
const PREC_NOT: u8 = 2;

fn write_node(out: &mut String, node: &Node, names: &[&str], min_prec: u8) {
    let prec = match node {
        Node::Or(_) => PREC_OR,
        Node::And(_) => PREC_AND,
        _ => PREC_NOT,
    };
    if prec < min_prec {
        out.push('(');
    }
    match node {
        Node::Tag(i) => write_tag(out, names[usize::from(*i)]),
        Node::Const(true) => out.push('*'),
        Node::Const(false) => out.push_str("NOT *"),
        Node::Not(inner) => {
            out.push_str("NOT ");
            write_node(out, inner, names, PREC_NOT);
        }
        Node::And(children) | Node::Or(children) => {
            let (sep, child_prec) = match node {
                Node::And(_) => (" AND ", PREC_NOT),
                _ => (" OR ", PREC_AND),
            };
            for (k, child) in children.iter().enumerate() {
                if k > 0 {
                    out.push_str(sep);
                }
                write_node(out, child, names, child_prec);
            }
        }
    }
    if prec < min_prec {
        out.push(')');
    }
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')
}

fn keyword(word: &str) -> Option<Kind<'static>> {
    if word.eq_ignore_ascii_case("and") {
        Some(Kind::And)
    } else if word.eq_ignore_ascii_case("or") {
        Some(Kind::Or)
    } else if word.eq_ignore_ascii_case("not") {
        Some(Kind::Not)
    } else {
        None
    }
}

/// Writes a tag bare when it reads back as the same tag, quoted otherwise.
fn write_tag(out: &mut String, tag: &str) {
    if tag.chars().all(is_tag_char) && keyword(tag).is_none() {
        out.push_str(tag);
    } else {
        // A tag holds at most one kind of quote: the other one delimited it.
        let quote = if tag.contains('\'') { '"' } else { '\'' };
        out.push(quote);
        out.push_str(tag);
        out.push(quote);
    }
}

/// Folds `*` away: the result is a constant or has no constant inside.
fn fold(node: Node) -> Node {
    match node {
        Node::Tag(_) | Node::Const(_) => node,
        Node::Not(inner) => match fold(*inner) {
            Node::Const(b) => Node::Const(!b),
            inner => Node::Not(Box::new(inner)),
        },
        Node::And(children) => fold_nary(children, false, Node::And),
        Node::Or(children) => fold_nary(children, true, Node::Or),
    }
}

/// Folds an AND (`absorbing` false) or OR (`absorbing` true).
fn fold_nary(children: Vec<Node>, absorbing: bool, make: fn(Vec<Node>) -> Node) -> Node {
    let mut kept = Vec::with_capacity(children.len());
    for child in children {
        match fold(child) {
            Node::Const(b) if b == absorbing => return Node::Const(absorbing),
            Node::Const(_) => {}
            child => kept.push(child),
        }
    }
    match kept.len() {
        0 => Node::Const(!absorbing),
        1 => kept.pop().expect("one child"),
        _ => make(kept),
    }
}

/// Compiles a folded tree: renumbers its tags in sorted order and emits
/// the postfix program.
fn compile(source: String, node: Node, names: &[&str]) -> TagExpr {
    let source = source.into_boxed_str();
    if let Node::Const(answer) = node {
        return TagExpr {
            source,
            tags: Box::default(),
            program: Program::Const(answer),
        };
    }
    let mut used = 0u64;
    collect_tags(&node, &mut used);
    let mut order: Vec<u8> = (0..64).filter(|i| (used >> i) & 1 == 1).collect();
    order.sort_unstable_by_key(|&i| names[usize::from(i)]);
    let mut bit_of = [0u8; MAX_TAGS];
    for (bit, &i) in order.iter().enumerate() {
        bit_of[usize::from(i)] = bit as u8;
    }
    let tags = order
        .iter()
        .map(|&i| Box::from(names[usize::from(i)]))
        .collect();
    let mut emitter = Emitter {
        ops: Vec::new(),
        bit_of,
        height: 0,
        max_height: 0,
    };
    emitter.emit(&node);
    debug_assert!(emitter.max_height <= 128, "bit stack overflow");
    TagExpr {
        source,
        tags,
        program: Program::Ops(emitter.ops.into_boxed_slice()),
    }
}

fn collect_tags(node: &Node, used: &mut u64) {
    match node {
        Node::Tag(i) => *used |= 1 << *i,
        Node::Const(_) => {}
        Node::Not(inner) => collect_tags(inner, used),
        Node::And(children) | Node::Or(children) => {
            children.iter().for_each(|c| collect_tags(c, used));
        }
    }
}

struct Emitter {
    ops: Vec<Op>,
    bit_of: [u8; MAX_TAGS],
    height: usize,
    max_height: usize,
}

impl Emitter {
    fn emit(&mut self, node: &Node) {
        match node {
            Node::Tag(i) => {
                self.ops.push(Op::Tag(self.bit_of[usize::from(*i)]));
                self.height += 1;
                self.max_height = self.max_height.max(self.height);
            }
            Node::Const(_) => unreachable!("constants are folded away"),
            Node::Not(inner) => {
                self.emit(inner);
                self.ops.push(Op::Not);
            }
            Node::And(children) | Node::Or(children) => {
                let op = if matches!(node, Node::And(_)) {
                    Op::And
                } else {
                    Op::Or
                };
                self.emit(&children[0]);
                for child in &children[1..] {
                    self.emit(child);
                    self.ops.push(op);
                    self.height -= 1;
                }
            }
        }
    }
}

// ---- lexer and parser --------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    Tag(&'a str),
    LParen,
    RParen,
    Star,
    Not,
    And,
    Or,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind<'a>,
    column: usize,
    /// As written (with its quotes, for a quoted tag); empty at the end.
    text: &'a str,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self.kind {
            Kind::End => "end of input".to_owned(),
            Kind::Tag(_) if self.text.starts_with('\'') => format!("tag {}", self.text),
            Kind::Tag(_) if self.text.starts_with('"') => format!("tag {}", self.text),
            Kind::Tag(_) => format!("tag '{}'", self.text),
            _ => format!("'{}'", self.text),
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    /// Column (in characters, from 1) of the next character.
    column: usize,
}

impl<'a> Lexer<'a> {
    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump_char(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        self.column += 1;
        Some(c)
    }

    fn next_token(&mut self) -> Result<Token<'a>, TagExprError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.bump_char();
        }
        let (start, column) = (self.pos, self.column);
        let Some(c) = self.bump_char() else {
            return Ok(Token {
                kind: Kind::End,
                column,
                text: "",
            });
        };
        let kind = match c {
            '(' => Kind::LParen,
            ')' => Kind::RParen,
            '*' => Kind::Star,
            '!' => Kind::Not,
            '&' | '|' => {
                if self.peek_char() != Some(c) {
                    return Err(TagExprError::Expected {
                        expected: if c == '&' { "'&&'" } else { "'||'" },
                        column,
                        found: format!("'{c}'"),
                    });
                }
                self.bump_char();
                if c == '&' { Kind::And } else { Kind::Or }
            }
            '\'' | '"' => {
                let body = self.pos;
                loop {
                    match self.bump_char() {
                        None => return Err(TagExprError::UnterminatedQuote { column }),
                        Some(q) if q == c => break,
                        Some(_) => {}
                    }
                }
                let tag = &self.src[body..self.pos - 1];
                if tag.is_empty() {
                    return Err(TagExprError::EmptyTag { column });
                }
                Kind::Tag(tag)
            }
            c if is_tag_char(c) => {
                while self.peek_char().is_some_and(is_tag_char) {
                    self.bump_char();
                }
                let word = &self.src[start..self.pos];
                keyword(word).unwrap_or(Kind::Tag(word))
            }
            ch => return Err(TagExprError::UnexpectedChar { ch, column }),
        };
        Ok(Token {
            kind,
            column,
            text: &self.src[start..self.pos],
        })
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// Distinct tags in order of first appearance; a tag's index is its id.
    names: Vec<&'a str>,
    /// Open parentheses and NOTs around the current position.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<Token<'a>, TagExprError> {
        match self.peeked {
            Some(token) => Ok(token),
            None => {
                let token = self.lexer.next_token()?;
                self.peeked = Some(token);
                Ok(token)
            }
        }
    }

    fn bump(&mut self) -> Result<Token<'a>, TagExprError> {
        let token = self.peek()?;
        self.peeked = None;
        Ok(token)
    }

    fn enter(&mut self, column: usize) -> Result<(), TagExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(TagExprError::TooDeep { column });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Node, TagExprError> {
        let mut children = Vec::new();
        push_flat(&mut children, self.parse_and()?, |n| {
            matches!(n, Node::Or(_))
        });
        while self.peek()?.kind == Kind::Or {
            self.bump()?;
            push_flat(&mut children, self.parse_and()?, |n| {
                matches!(n, Node::Or(_))
            });
        }
        Ok(if children.len() == 1 {
            children.pop().expect("one child")
        } else {
            Node::Or(children)
        })
    }

    fn parse_and(&mut self) -> Result<Node, TagExprError> {
        let mut children = Vec::new();
        push_flat(&mut children, self.parse_not()?, |n| {
            matches!(n, Node::And(_))
        });
        while self.peek()?.kind == Kind::And {
            self.bump()?;
            push_flat(&mut children, self.parse_not()?, |n| {
                matches!(n, Node::And(_))
            });
        }
        Ok(if children.len() == 1 {
            children.pop().expect("one child")
        } else {
            Node::And(children)
        })
    }

    fn parse_not(&mut self) -> Result<Node, TagExprError> {
        let token = self.peek()?;
        if token.kind != Kind::Not {
            return self.parse_atom();
        }
        self.bump()?;
        self.enter(token.column)?;
        let inner = self.parse_not()?;
        self.depth -= 1;
        Ok(Node::Not(Box::new(inner)))
    }

    fn parse_atom(&mut self) -> Result<Node, TagExprError> {
        let token = self.bump()?;
        match token.kind {
            Kind::Tag(name) => self.intern(name, token.column).map(Node::Tag),
            Kind::Star => Ok(Node::Const(true)),
            Kind::LParen => {
                self.enter(token.column)?;
                let inner = self.parse_or()?;
                let close = self.bump()?;
                if close.kind != Kind::RParen {
                    return Err(TagExprError::Expected {
                        expected: "'AND', 'OR' or ')'",
                        column: close.column,
                        found: close.describe(),
                    });
                }
                self.depth -= 1;
                Ok(inner)
            }
            _ => Err(TagExprError::Expected {
                expected: "a tag or '('",
                column: token.column,
                found: token.describe(),
            }),
        }
    }

    fn expect_end(&mut self) -> Result<(), TagExprError> {
        let token = self.peek()?;
        if token.kind != Kind::End {
            return Err(TagExprError::Expected {
                expected: "'AND', 'OR' or end of input",
                column: token.column,
                found: token.describe(),
            });
        }
        Ok(())
    }

    fn intern(&mut self, name: &'a str, column: usize) -> Result<u8, TagExprError> {
        let index = match self.names.iter().position(|n| *n == name) {
            Some(index) => index,
            None if self.names.len() == MAX_TAGS => {
                return Err(TagExprError::TooManyTags { column });
            }
            None => {
                self.names.push(name);
                self.names.len() - 1
            }
        };
        Ok(index as u8)
    }
}

/// Pushes `node`, or its children when it is the same n-ary operator.
fn push_flat(children: &mut Vec<Node>, node: Node, same: fn(&Node) -> bool) {
    if same(&node) {
        match node {
            Node::And(inner) | Node::Or(inner) => children.extend(inner),
            _ => unreachable!("same() only accepts AND and OR"),
        }
    } else {
        children.push(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expr(src: &str) -> TagExpr {
        TagExpr::parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
    }

    fn m(e: &TagExpr, tags: &[&str]) -> bool {
        e.matches(tags.iter().map(|t| t.as_bytes()))
    }

    fn err(src: &str) -> String {
        TagExpr::parse(src)
            .expect_err(&format!("{src:?} should be refused"))
            .to_string()
    }

    #[test]
    fn bare_tag_is_exact_and_case_sensitive() {
        let e = expr("red");
        assert!(m(&e, &["red"]));
        assert!(m(&e, &["blue", "red"]));
        assert!(!m(&e, &["Red"]));
        assert!(!m(&e, &["re"]));
        assert!(!m(&e, &["redd"]));
        assert!(!m(&e, &[]));
        assert!(!e.matches_all());
        assert_eq!(e.source(), "red");
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        // a OR (b AND (NOT c))
        let e = expr("a or b and not c");
        assert_eq!(e.source(), "a OR b AND NOT c");
        assert!(m(&e, &["a", "c"]));
        assert!(m(&e, &["b"]));
        assert!(!m(&e, &["b", "c"]));
        assert!(!m(&e, &["c"]));
        // (NOT a) AND b, not NOT (a AND b)
        let e = expr("!a && b");
        assert!(m(&e, &["b"]));
        assert!(!m(&e, &["a", "b"]));
        assert!(!m(&e, &[]));
        // (a AND b) OR c
        let e = expr("a AND b OR c");
        assert!(m(&e, &["c"]));
        assert!(!m(&e, &["a"]));
        assert!(m(&e, &["a", "b"]));
    }

    #[test]
    fn parentheses_override_precedence() {
        let e = expr("(a OR b) AND c");
        assert_eq!(e.source(), "(a OR b) AND c");
        assert!(m(&e, &["a", "c"]));
        assert!(!m(&e, &["a"]));
        assert!(!m(&e, &["c"]));
        let e = expr("NOT (a AND b)");
        assert_eq!(e.source(), "NOT (a AND b)");
        assert!(m(&e, &["a"]));
        assert!(!m(&e, &["a", "b"]));
        // Redundant parentheses go from the normalised text.
        assert_eq!(expr("((a)) and (b and (c))").source(), "a AND b AND c");
        assert_eq!(expr("a or (b or c) or d").source(), "a OR b OR c OR d");
        assert_eq!(expr("(a and b) or c").source(), "a AND b OR c");
        assert_eq!(expr("!(!(a))").source(), "NOT NOT a");
    }

    #[test]
    fn rocketmq_double_bar_form_is_or() {
        let e = expr("TagA || TagB || TagC");
        assert_eq!(e.source(), "TagA OR TagB OR TagC");
        assert_eq!(e, expr("TagA OR TagB or TagC"));
        assert_eq!(expr("a||b").source(), "a OR b");
        assert!(m(&e, &["TagB"]));
        assert!(m(&e, &["x", "TagC"]));
        assert!(!m(&e, &["TagD"]));
        assert!(!m(&e, &["taga"]));
    }

    #[test]
    fn keywords_are_case_insensitive_and_whitespace_is_free() {
        let e = expr(" \t a\nAnD\r\n  nOt   b   oR c ");
        assert_eq!(e.source(), "a AND NOT b OR c");
        assert_eq!(e, expr("a&&!b||c"));
        // A keyword inside a longer word is a tag.
        assert_eq!(expr("android or orange").source(), "android OR orange");
        assert_eq!(expr("not-a").source(), "not-a");
    }

    #[test]
    fn tag_characters() {
        let e = expr("x.y:z/w-v_u1");
        assert!(m(&e, &["x.y:z/w-v_u1"]));
        assert_eq!(e.source(), "x.y:z/w-v_u1");
    }

    #[test]
    fn quoted_tags() {
        let e = expr(r#"'on sale' AND "it's" OR 'say "hi"'"#);
        assert_eq!(e.source(), r#"'on sale' AND "it's" OR 'say "hi"'"#);
        assert!(m(&e, &["on sale", "it's"]));
        assert!(m(&e, &["say \"hi\""]));
        assert!(!m(&e, &["on sale"]));
        // Quotes not needed are dropped; keywords as tags keep them.
        assert_eq!(expr("'a' or \"b\"").source(), "a OR b");
        let e = expr("'and' || 'NOT'");
        assert_eq!(e.source(), "'and' OR 'NOT'");
        assert!(m(&e, &["NOT"]));
        assert!(!m(&e, &["not"]));
        // Any character, including brackets and operators.
        let e = expr("'(a || b)*' && 'ünïcode ✓'");
        assert!(m(&e, &["(a || b)*", "ünïcode ✓"]));
        assert_eq!(e.source(), "'(a || b)*' AND 'ünïcode ✓'");
    }

    #[test]
    fn star_and_empty_match_everything() {
        for src in ["*", "", "   ", "\t\n", "(*)", " * "] {
            let e = expr(src);
            assert!(e.matches_all(), "{src:?}");
            assert!(m(&e, &[]), "{src:?}");
            assert!(m(&e, &["anything"]), "{src:?}");
        }
        assert_eq!(expr("").source(), "*");
        assert_eq!(expr("").to_string(), "*");
        // Folding: `*` inside an expression.
        assert!(expr("a OR *").matches_all());
        assert_eq!(expr("a OR *").source(), "a OR *");
        let e = expr("NOT *");
        assert!(!e.matches_all());
        assert!(!m(&e, &[]));
        assert!(!m(&e, &["a"]));
        let e = expr("a AND *");
        assert!(!e.matches_all());
        assert!(m(&e, &["a"]));
        assert!(!m(&e, &["b"]));
        assert!(!expr("a OR NOT *").matches_all());
    }

    #[test]
    fn repeated_and_unknown_message_tags() {
        let e = expr("a AND NOT b");
        assert!(m(&e, &["a", "a", "z", "a"]));
        assert!(!m(&e, &["b", "a", "b"]));
        // Non-UTF-8 tag bytes are just other tags.
        assert!(e.matches([&b"\xff\xfe"[..], b"a"]));
        // The same tag twice in an expression is one tag.
        let e = expr("a AND (a OR b)");
        assert_eq!(e.tags.len(), 2);
        assert!(m(&e, &["a"]));
        assert!(!m(&e, &["b"]));
    }

    #[test]
    fn display_is_the_source() {
        let e = expr("x||y&&!z");
        assert_eq!(e.to_string(), "x OR y AND NOT z");
        assert_eq!(format!("{e}"), e.source());
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            ("a AND ()", "expected a tag or '(' at column 8, found ')'"),
            (
                "a OR",
                "expected a tag or '(' at column 5, found end of input",
            ),
            ("AND a", "expected a tag or '(' at column 1, found 'AND'"),
            ("a or or b", "expected a tag or '(' at column 6, found 'or'"),
            (
                "NOT",
                "expected a tag or '(' at column 4, found end of input",
            ),
            (
                "a b",
                "expected 'AND', 'OR' or end of input at column 3, found tag 'b'",
            ),
            (
                "a 'b c'",
                "expected 'AND', 'OR' or end of input at column 3, found tag 'b c'",
            ),
            (
                "a)",
                "expected 'AND', 'OR' or end of input at column 2, found ')'",
            ),
            (
                "a *",
                "expected 'AND', 'OR' or end of input at column 3, found '*'",
            ),
            (
                "(a",
                "expected 'AND', 'OR' or ')' at column 3, found end of input",
            ),
            (
                "(a b)",
                "expected 'AND', 'OR' or ')' at column 4, found tag 'b'",
            ),
            ("a & b", "expected '&&' at column 3, found '&'"),
            ("a | b", "expected '||' at column 3, found '|'"),
            ("a # b", "unexpected character '#' at column 3"),
            ("é", "unexpected character 'é' at column 1"),
            ("a\u{0}", "unexpected character '\\0' at column 2"),
            ("a OR 'b", "unterminated quoted tag starting at column 6"),
            ("a OR \"b'", "unterminated quoted tag starting at column 6"),
            ("a OR ''", "empty quoted tag at column 6"),
            // Columns count characters, not bytes.
            ("'ü' OR )", "expected a tag or '(' at column 8, found ')'"),
        ];
        for (src, message) in cases {
            assert_eq!(err(src), message, "{src:?}");
        }
    }

    #[test]
    fn error_values() {
        assert_eq!(
            TagExpr::parse("a AND ()"),
            Err(TagExprError::Expected {
                expected: "a tag or '('",
                column: 8,
                found: "')'".to_owned(),
            })
        );
        assert_eq!(
            TagExpr::parse("'x"),
            Err(TagExprError::UnterminatedQuote { column: 1 })
        );
    }

    #[test]
    fn source_length_limit() {
        let ok = format!("a{}", " ".repeat(MAX_SOURCE_LEN - 1));
        assert!(TagExpr::parse(&ok).is_ok());
        let long = format!("a{}", " ".repeat(MAX_SOURCE_LEN));
        assert_eq!(
            TagExpr::parse(&long),
            Err(TagExprError::TooLong {
                len: MAX_SOURCE_LEN + 1
            })
        );
        assert_eq!(
            err(&long),
            "tag expression is 4097 bytes long; the limit is 4096"
        );
    }

    #[test]
    fn nesting_depth_limit() {
        let parens = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert!(TagExpr::parse(&parens(MAX_DEPTH)).is_ok());
        assert_eq!(
            err(&parens(MAX_DEPTH + 1)),
            "tag expression nests deeper than 32 levels at column 33"
        );
        let nots = |n: usize| format!("{}a", "!".repeat(n));
        assert!(TagExpr::parse(&nots(MAX_DEPTH)).is_ok());
        assert_eq!(
            err(&nots(MAX_DEPTH + 1)),
            "tag expression nests deeper than 32 levels at column 33"
        );
        assert_eq!(
            err(&format!("{}a", "NOT (".repeat(17))),
            "tag expression nests deeper than 32 levels at column 81"
        );
        // Depth is nesting, not length: siblings do not add up.
        let wide = vec!["(a)"; 200].join(" OR ");
        assert!(TagExpr::parse(&wide).is_ok());
        // Thousands of `!` are refused early rather than recursed into.
        assert!(matches!(
            TagExpr::parse(&nots(4000)),
            Err(TagExprError::TooDeep { column: 33 })
        ));
    }

    #[test]
    fn deepest_expression_fits_the_bit_stack() {
        // Each level leaves two operands waiting on the stack.
        let mut src = "t0".to_owned();
        for level in 1..=MAX_DEPTH {
            src = format!("x OR y{level} AND ({src})");
        }
        let e = expr(&src);
        let Program::Ops(ops) = &e.program else {
            panic!("not a program")
        };
        let mut height = 0i32;
        let mut max = 0;
        for op in ops.iter() {
            match op {
                Op::Tag(_) => height += 1,
                Op::Not => {}
                Op::And | Op::Or => height -= 1,
            }
            max = max.max(height);
        }
        assert!(max > 64, "the test should need more than a u64: {max}");
        assert!(max <= 128);
        // Innermost tag plus every y: true; dropping any y makes it false.
        let mut tags: Vec<String> = (1..=MAX_DEPTH).map(|l| format!("y{l}")).collect();
        tags.push("t0".to_owned());
        assert!(e.matches(tags.iter().map(|t| t.as_bytes())));
        assert!(!e.matches(tags.iter().skip(1).map(|t| t.as_bytes())));
        assert!(e.matches([&b"x"[..]]));
    }

    #[test]
    fn distinct_tag_limit() {
        let names: Vec<String> = (0..MAX_TAGS).map(|i| format!("t{i}")).collect();
        let ok = names.join(" || ");
        let e = expr(&format!("{ok} || t0 || t63"));
        assert!(m(&e, &["t63"]));
        assert!(m(&e, &["t0"]));
        assert!(!m(&e, &["t64"]));
        let all = expr(&names.join(" AND "));
        assert!(all.matches(names.iter().map(|t| t.as_bytes())));
        assert!(!all.matches(names.iter().skip(1).map(|t| t.as_bytes())));
        let column = ok.chars().count() + 5;
        assert_eq!(
            err(&format!("{ok} || t64")),
            format!(
                "tag expression names more than 64 distinct tags; the one at column {column} is one too many"
            )
        );
    }

    // ---- property test against a naive evaluator -----------------------

    const POOL: &[&str] = &[
        "a",
        "b",
        "c",
        "d",
        "A",
        "x.y",
        "k:v/w-1_2",
        "and",
        "Or",
        "on sale",
        "it's",
        "(*)",
    ];

    /// An expression as generated, with the spelling to render it in.
    #[derive(Debug, Clone)]
    enum E {
        Tag { tag: usize, quote: bool },
        All,
        Not { bang: bool, inner: Box<E> },
        And { spelling: u8, l: Box<E>, r: Box<E> },
        Or { spelling: u8, l: Box<E>, r: Box<E> },
        Paren(Box<E>),
    }

    fn naive(e: &E, tags: &[&str]) -> bool {
        match e {
            E::Tag { tag, .. } => tags.contains(&POOL[*tag]),
            E::All => true,
            E::Not { inner, .. } => !naive(inner, tags),
            E::And { l, r, .. } => naive(l, tags) && naive(r, tags),
            E::Or { l, r, .. } => naive(l, tags) || naive(r, tags),
            E::Paren(inner) => naive(inner, tags),
        }
    }

    fn prec(e: &E) -> u8 {
        match e {
            E::Or { .. } => 0,
            E::And { .. } => 1,
            _ => 2,
        }
    }

    /// Renders with just the parentheses precedence needs (plus the
    /// generated ones), so a precedence bug in the parser changes meaning.
    fn render(e: &E, out: &mut String) {
        let child = |c: &E, min: u8, out: &mut String| {
            if prec(c) < min {
                out.push('(');
                render(c, out);
                out.push(')');
            } else {
                render(c, out);
            }
        };
        match e {
            E::Tag { tag, quote } => {
                let name = POOL[*tag];
                let plain = name.chars().all(is_tag_char) && keyword(name).is_none();
                if plain && !quote {
                    out.push_str(name);
                } else if name.contains('\'') {
                    out.push_str(&format!("\"{name}\""));
                } else {
                    out.push_str(&format!("'{name}'"));
                }
            }
            E::All => out.push('*'),
            E::Not { bang, inner } => {
                out.push_str(if *bang { "!" } else { "not " });
                child(inner, 2, out);
            }
            E::And { spelling, l, r } => {
                child(l, 1, out);
                out.push_str(["&&", " && ", " AND ", " and ", "\tAnd\n"][*spelling as usize % 5]);
                child(r, 2, out);
            }
            E::Or { spelling, l, r } => {
                child(l, 0, out);
                out.push_str(["||", " || ", " OR ", " or ", "  oR "][*spelling as usize % 5]);
                child(r, 1, out);
            }
            E::Paren(inner) => {
                out.push_str("( ");
                render(inner, out);
                out.push(')');
            }
        }
    }

    fn arb_expr() -> impl Strategy<Value = E> {
        let leaf = prop_oneof![
            10 => (0..POOL.len(), any::<bool>()).prop_map(|(tag, quote)| E::Tag { tag, quote }),
            1 => Just(E::All),
        ];
        leaf.prop_recursive(6, 48, 2, |inner| {
            prop_oneof![
                (any::<bool>(), inner.clone()).prop_map(|(bang, inner)| E::Not {
                    bang,
                    inner: Box::new(inner)
                }),
                (any::<u8>(), inner.clone(), inner.clone()).prop_map(|(spelling, l, r)| E::And {
                    spelling,
                    l: Box::new(l),
                    r: Box::new(r)
                }),
                (any::<u8>(), inner.clone(), inner.clone()).prop_map(|(spelling, l, r)| E::Or {
                    spelling,
                    l: Box::new(l),
                    r: Box::new(r)
                }),
                inner.prop_map(|inner| E::Paren(Box::new(inner))),
            ]
        })
    }

    fn arb_tags() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(POOL),
                1 => prop::sample::select(&["zz", "B", "on", "and ", ""][..]),
            ],
            0..10,
        )
    }

    proptest! {
        #[test]
        fn matches_like_a_naive_evaluator(e in arb_expr(), tag_sets in prop::collection::vec(arb_tags(), 1..8)) {
            let mut src = String::new();
            render(&e, &mut src);
            let compiled = TagExpr::parse(&src).unwrap_or_else(|err| panic!("{src:?}: {err}"));
            let again = TagExpr::parse(compiled.source())
                .unwrap_or_else(|err| panic!("normalised {:?}: {err}", compiled.source()));
            prop_assert_eq!(again.source(), compiled.source());
            prop_assert_eq!(&again, &compiled);
            let mut any_false = false;
            for tags in &tag_sets {
                let expected = naive(&e, tags);
                any_false |= !expected;
                prop_assert_eq!(m(&compiled, tags), expected, "{:?} on {:?}", src, tags);
            }
            if compiled.matches_all() {
                prop_assert!(!any_false, "{:?} claims to match all", src);
            }
        }

        #[test]
        fn arbitrary_input_never_panics(src in "[ab()!&|*'\" ANDORTandort\u{e9}#]{0,40}") {
            if let Ok(e) = TagExpr::parse(&src) {
                let again = TagExpr::parse(e.source()).expect("normalised text parses");
                prop_assert_eq!(again.source(), e.source());
                let _ = m(&e, &["a", "b"]);
            }
        }

        #[test]
        fn any_string_never_panics(src in "\\PC{0,64}") {
            let _ = TagExpr::parse(&src);
        }
    }
}
