//! A PromQL subset for local alert rules, parsed once and evaluated on the snapshot's
//! families.
//!
//! Supported: instant selectors `metric{l="v", l!="v", l=~"re", l!~"re"}` (regular
//! expressions fully anchored, as in PromQL), number literals, parentheses, unary
//! minus, `+ - * /` (vector/vector one-to-one on identical label sets, or `on(l, …)`;
//! vector/scalar), comparisons `== != > < >= <=` (filters, as PromQL without `bool`),
//! `and`, `or` (with optional `on(…)`) and `absent(selector)`. Precedence is PromQL's:
//! `or` < `and` < comparisons < `+ -` < `* /`. Every expression accepted here is valid
//! PromQL with the same meaning, so `rules export` hands it to Prometheus verbatim.
//!
//! Results carry labels without the metric name (as PromQL's arithmetic does; alerts
//! drop it anyway).

use std::collections::HashMap;
use std::fmt;

use prometheus::proto::MetricFamily;

/// A parse error: the 1-based column (in characters) in the expression and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

/// Label pairs, sorted by name, without the metric name.
pub type Labels = Vec<(String, String)>;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// A label matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

#[derive(Debug, Clone)]
struct Matcher {
    label: String,
    op: MatchOp,
    value: String,
    regex: Option<regex_lite::Regex>,
}

impl Matcher {
    fn matches(&self, actual: &str) -> bool {
        match self.op {
            MatchOp::Equal => actual == self.value,
            MatchOp::NotEqual => actual != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(actual)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(actual)),
        }
    }
}

/// An instant vector selector.
#[derive(Debug, Clone)]
pub struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
}

impl BinOp {
    fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }
}

#[derive(Debug, Clone)]
enum Node {
    Number(f64),
    Selector(Selector),
    Absent(Selector),
    Negate(Box<Node>),
    Binary {
        op: BinOp,
        on: Option<Vec<String>>,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
}

impl Node {
    fn is_scalar(&self) -> bool {
        match self {
            Node::Number(_) => true,
            Node::Selector(_) | Node::Absent(_) => false,
            Node::Negate(inner) => inner.is_scalar(),
            Node::Binary { lhs, rhs, .. } => lhs.is_scalar() && rhs.is_scalar(),
        }
    }
}

/// A parsed expression; its result is an instant vector.
#[derive(Debug, Clone)]
pub struct Expr {
    root: Node,
}

/// The families an expression reads, by name.
#[derive(Debug, Default)]
pub struct Families<'a> {
    by_name: HashMap<&'a str, Vec<&'a MetricFamily>>,
}

impl<'a> Families<'a> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds families (one name may come from several sources).
    pub fn extend(&mut self, families: impl IntoIterator<Item = &'a MetricFamily>) {
        for family in families {
            self.by_name.entry(family.name()).or_default().push(family);
        }
    }

    fn select(&self, selector: &Selector) -> Vec<Sample> {
        let mut out = Vec::new();
        let Some(families) = self.by_name.get(selector.metric.as_str()) else {
            return out;
        };
        for family in families {
            for metric in family.get_metric() {
                let pairs = metric.get_label();
                let value_of = |name: &str| {
                    pairs
                        .iter()
                        .find(|p| p.name() == name)
                        .map(|p| p.value())
                        .unwrap_or("")
                };
                if selector
                    .matchers
                    .iter()
                    .all(|m| m.matches(value_of(&m.label)))
                {
                    let mut labels: Labels = pairs
                        .iter()
                        .filter(|p| !p.value().is_empty())
                        .map(|p| (p.name().to_string(), p.value().to_string()))
                        .collect();
                    labels.sort();
                    out.push(Sample {
                        labels,
                        value: crate::metrics::sample_value(family.get_field_type(), metric),
                    });
                }
            }
        }
        out
    }
}

enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

impl Expr {
    /// Parses an expression whose result must be an instant vector (an alert condition).
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let tokens = lex(text)?;
        if let Some(extra) = tokens.get(MAX_TOKENS) {
            return Err(ExprError {
                column: column(text, extra.start),
                message: format!("the expression is longer than {MAX_TOKENS} tokens"),
            });
        }
        let mut parser = Parser {
            text,
            tokens,
            pos: 0,
            depth: 0,
        };
        let root = parser.expr()?;
        if let Some(token) = parser.tokens.get(parser.pos) {
            return Err(parser.error_at(token.start, "unexpected text after the expression"));
        }
        if root.is_scalar() {
            return Err(ExprError {
                column: 1,
                message: "the expression is a number, not a vector of samples".into(),
            });
        }
        Ok(Expr { root })
    }

    /// The metric names its selectors read.
    pub fn metric_names(&self) -> Vec<&str> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a str>) {
            match node {
                Node::Number(_) => {}
                Node::Selector(s) | Node::Absent(s) => out.push(&s.metric),
                Node::Negate(inner) => walk(inner, out),
                Node::Binary { lhs, rhs, .. } => {
                    walk(lhs, out);
                    walk(rhs, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Evaluates the expression on `families`. Errors are PromQL's runtime errors
    /// (several right-hand samples matching one left-hand sample).
    pub fn eval(&self, families: &Families<'_>) -> Result<Vec<Sample>, String> {
        match eval(&self.root, families)? {
            Value::Vector(v) => Ok(v),
            // Parse rejects scalar roots.
            Value::Scalar(_) => Ok(Vec::new()),
        }
    }
}

fn eval(node: &Node, families: &Families<'_>) -> Result<Value, String> {
    Ok(match node {
        Node::Number(n) => Value::Scalar(*n),
        Node::Selector(s) => Value::Vector(families.select(s)),
        Node::Absent(s) => {
            if families.select(s).is_empty() {
                // As PromQL: the equality matchers become the labels.
                let mut labels: Labels = s
                    .matchers
                    .iter()
                    .filter(|m| m.op == MatchOp::Equal)
                    .map(|m| (m.label.clone(), m.value.clone()))
                    .collect();
                labels.sort();
                labels.dedup_by(|a, b| a.0 == b.0);
                Value::Vector(vec![Sample { labels, value: 1.0 }])
            } else {
                Value::Vector(Vec::new())
            }
        }
        Node::Negate(inner) => match eval(inner, families)? {
            Value::Scalar(n) => Value::Scalar(-n),
            Value::Vector(mut v) => {
                for s in &mut v {
                    s.value = -s.value;
                }
                Value::Vector(v)
            }
        },
        Node::Binary { op, on, lhs, rhs } => {
            let lhs = eval(lhs, families)?;
            let rhs = eval(rhs, families)?;
            binary(*op, on.as_deref(), lhs, rhs)?
        }
    })
}

fn arithmetic(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        _ => f64::NAN,
    }
}

fn compare(op: BinOp, a: f64, b: f64) -> bool {
    match op {
        BinOp::Eq => a == b,
        BinOp::Ne => a != b,
        BinOp::Gt => a > b,
        BinOp::Lt => a < b,
        BinOp::Ge => a >= b,
        BinOp::Le => a <= b,
        _ => false,
    }
}

fn signature(labels: &Labels, on: Option<&[String]>) -> Labels {
    match on {
        Some(names) => labels
            .iter()
            .filter(|(n, _)| names.contains(n))
            .cloned()
            .collect(),
        None => labels.clone(),
    }
}

fn binary(op: BinOp, on: Option<&[String]>, lhs: Value, rhs: Value) -> Result<Value, String> {
    Ok(match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(arithmetic(op, a, b)),
        (Value::Vector(mut v), Value::Scalar(b)) => {
            if op.is_comparison() {
                v.retain(|s| compare(op, s.value, b));
            } else {
                for s in &mut v {
                    s.value = arithmetic(op, s.value, b);
                }
            }
            Value::Vector(v)
        }
        (Value::Scalar(a), Value::Vector(mut v)) => {
            if op.is_comparison() {
                // PromQL keeps the vector's value when the scalar is on the left.
                v.retain(|s| compare(op, a, s.value));
            } else {
                for s in &mut v {
                    s.value = arithmetic(op, a, s.value);
                }
            }
            Value::Vector(v)
        }
        (Value::Vector(lhs), Value::Vector(rhs)) => match op {
            BinOp::And => {
                let right: Vec<Labels> = rhs.iter().map(|s| signature(&s.labels, on)).collect();
                Value::Vector(
                    lhs.into_iter()
                        .filter(|s| right.contains(&signature(&s.labels, on)))
                        .collect(),
                )
            }
            BinOp::Or => {
                let left: Vec<Labels> = lhs.iter().map(|s| signature(&s.labels, on)).collect();
                let mut out = lhs;
                out.extend(
                    rhs.into_iter()
                        .filter(|s| !left.contains(&signature(&s.labels, on))),
                );
                Value::Vector(out)
            }
            _ => {
                let mut right: HashMap<Labels, &Sample> = HashMap::new();
                for s in &rhs {
                    if right.insert(signature(&s.labels, on), s).is_some() {
                        return Err(format!(
                            "several samples on the right-hand side match {:?}: add on(…)",
                            signature(&s.labels, on)
                        ));
                    }
                }
                let mut out = Vec::new();
                let mut seen: Vec<Labels> = Vec::new();
                for s in lhs {
                    let sig = signature(&s.labels, on);
                    let Some(r) = right.get(&sig) else { continue };
                    if seen.contains(&sig) {
                        return Err(format!(
                            "several samples on the left-hand side match {sig:?}: add on(…)"
                        ));
                    }
                    seen.push(sig.clone());
                    if op.is_comparison() {
                        if compare(op, s.value, r.value) {
                            out.push(s);
                        }
                    } else {
                        let labels = if on.is_some() { sig } else { s.labels };
                        out.push(Sample {
                            labels,
                            value: arithmetic(op, s.value, r.value),
                        });
                    }
                }
                Value::Vector(out)
            }
        },
    })
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(f64),
    Str(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Assign,
    Op(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Byte offset.
    start: usize,
}

fn column(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].chars().count() + 1
}

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |offset: usize, message: String| ExprError {
        column: column(text, offset),
        message,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            Tok::Ident(text[start..i].to_string())
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                // An exponent's sign.
                if (bytes[i] == b'e' || bytes[i] == b'E')
                    && matches!(bytes.get(i + 1), Some(b'+' | b'-'))
                {
                    i += 1;
                }
                i += 1;
            }
            let literal = &text[start..i];
            let number = literal
                .parse::<f64>()
                .map_err(|_| err(start, format!("bad number {literal:?}")))?;
            Tok::Number(number)
        } else if c == b'"' || c == b'\'' {
            i += 1;
            let mut value = String::new();
            loop {
                let Some(ch) = text[i..].chars().next() else {
                    return Err(err(start, "unterminated string".into()));
                };
                i += ch.len_utf8();
                if ch as u32 == u32::from(c) {
                    break;
                }
                if ch == '\\' {
                    let Some(next) = text[i..].chars().next() else {
                        return Err(err(start, "unterminated string".into()));
                    };
                    i += next.len_utf8();
                    value.push(match next {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    value.push(ch);
                }
            }
            Tok::Str(value)
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            let (tok, len) = match two {
                "==" => (Tok::Op("=="), 2),
                "!=" => (Tok::Op("!="), 2),
                ">=" => (Tok::Op(">="), 2),
                "<=" => (Tok::Op("<="), 2),
                "=~" => (Tok::Op("=~"), 2),
                "!~" => (Tok::Op("!~"), 2),
                _ => match c {
                    b'{' => (Tok::LBrace, 1),
                    b'}' => (Tok::RBrace, 1),
                    b'(' => (Tok::LParen, 1),
                    b')' => (Tok::RParen, 1),
                    b',' => (Tok::Comma, 1),
                    b'=' => (Tok::Assign, 1),
                    b'>' => (Tok::Op(">"), 1),
                    b'<' => (Tok::Op("<"), 1),
                    b'+' => (Tok::Op("+"), 1),
                    b'-' => (Tok::Op("-"), 1),
                    b'*' => (Tok::Op("*"), 1),
                    b'/' => (Tok::Op("/"), 1),
                    _ => {
                        let ch = text[i..].chars().next().unwrap_or('?');
                        return Err(err(start, format!("unexpected character {ch:?}")));
                    }
                },
            };
            i += len;
            tok
        };
        tokens.push(Token { tok, start });
    }
    Ok(tokens)
}

// ---- parser ----

/// Most tokens in an expression, and deepest nesting of parentheses and signs: far
/// beyond any alert rule, and low enough that parsing, evaluating and dropping the tree
/// (all recursive) stay well inside a thread's stack. Without them, 50,000 nested
/// parentheses overflowed the stack of `check-config` (found by fuzzing).
const MAX_TOKENS: usize = 1024;
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    /// Parentheses and signs open at the current token.
    depth: usize,
}

impl Parser<'_> {
    fn error_at(&self, offset: usize, message: &str) -> ExprError {
        ExprError {
            column: column(self.text, offset),
            message: message.to_string(),
        }
    }

    /// Offset of the current token, or the end of the text.
    fn here(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|t| t.start)
            .unwrap_or(self.text.len())
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), ExprError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error_at(self.here(), &format!("expected {what}")))
        }
    }

    fn expr(&mut self) -> Result<Node, ExprError> {
        self.level(0)
    }

    /// The binary operator at the current token, if it belongs to `level`
    /// (0: or, 1: and, 2: comparisons, 3: + -, 4: * /).
    fn operator(&self, level: u8) -> Option<BinOp> {
        let op = match (level, self.peek()?) {
            (0, Tok::Ident(w)) if w == "or" => BinOp::Or,
            (1, Tok::Ident(w)) if w == "and" => BinOp::And,
            (2, Tok::Op("==")) => BinOp::Eq,
            (2, Tok::Op("!=")) => BinOp::Ne,
            (2, Tok::Op(">")) => BinOp::Gt,
            (2, Tok::Op("<")) => BinOp::Lt,
            (2, Tok::Op(">=")) => BinOp::Ge,
            (2, Tok::Op("<=")) => BinOp::Le,
            (3, Tok::Op("+")) => BinOp::Add,
            (3, Tok::Op("-")) => BinOp::Sub,
            (4, Tok::Op("*")) => BinOp::Mul,
            (4, Tok::Op("/")) => BinOp::Div,
            _ => return None,
        };
        Some(op)
    }

    fn level(&mut self, level: u8) -> Result<Node, ExprError> {
        if level > 4 {
            return self.unary();
        }
        let mut lhs = self.level(level + 1)?;
        while let Some(op) = self.operator(level) {
            let op_offset = self.here();
            self.pos += 1;
            let on = self.on_modifier()?;
            let rhs_offset = self.here();
            let rhs = self.level(level + 1)?;
            let both_vectors = !lhs.is_scalar() && !rhs.is_scalar();
            if matches!(op, BinOp::And | BinOp::Or) {
                let (bad, offset) = if lhs.is_scalar() {
                    (true, op_offset)
                } else {
                    (rhs.is_scalar(), rhs_offset)
                };
                if bad {
                    return Err(self.error_at(offset, "and/or need a vector on both sides"));
                }
            }
            if op.is_comparison() && lhs.is_scalar() && rhs.is_scalar() {
                return Err(self.error_at(
                    op_offset,
                    "comparison between two numbers (PromQL needs `bool`, which is not supported)",
                ));
            }
            if on.is_some() && !both_vectors {
                return Err(self.error_at(op_offset, "on(…) needs a vector on both sides"));
            }
            lhs = Node::Binary {
                op,
                on,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn on_modifier(&mut self) -> Result<Option<Vec<String>>, ExprError> {
        match self.peek() {
            Some(Tok::Ident(w)) if w == "on" => {}
            Some(Tok::Ident(w)) if w == "ignoring" || w == "bool" || w.starts_with("group_") => {
                return Err(self.error_at(self.here(), &format!("`{w}` is not supported")));
            }
            _ => return Ok(None),
        }
        self.pos += 1;
        self.expect(&Tok::LParen, "( after on")?;
        let mut names = Vec::new();
        loop {
            match self.peek().cloned() {
                Some(Tok::RParen) => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Ident(name)) => {
                    self.pos += 1;
                    names.push(name);
                    match self.peek() {
                        Some(Tok::Comma) => self.pos += 1,
                        Some(Tok::RParen) => {}
                        _ => return Err(self.error_at(self.here(), "expected , or )")),
                    }
                }
                _ => return Err(self.error_at(self.here(), "expected a label name")),
            }
        }
        Ok(Some(names))
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        // Every parenthesis and sign opened passes here once.
        if self.depth == MAX_DEPTH {
            return Err(self.error_at(
                self.here(),
                &format!("the expression is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        let node = match self.peek() {
            Some(Tok::Op("-")) => {
                self.pos += 1;
                Ok(Node::Negate(Box::new(self.unary()?)))
            }
            Some(Tok::Op("+")) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.primary(),
        };
        self.depth -= 1;
        node
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let offset = self.here();
        match self.peek().cloned() {
            Some(Tok::Number(n)) => {
                self.pos += 1;
                Ok(Node::Number(n))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.expr()?;
                self.expect(&Tok::RParen, ")")?;
                Ok(inner)
            }
            Some(Tok::Ident(name)) if name == "absent" => {
                self.pos += 1;
                self.expect(&Tok::LParen, "( after absent")?;
                let selector_offset = self.here();
                let Some(Tok::Ident(metric)) = self.peek().cloned() else {
                    return Err(self.error_at(selector_offset, "absent() takes a metric selector"));
                };
                self.pos += 1;
                let selector = self.selector(metric, selector_offset)?;
                self.expect(&Tok::RParen, ") after the selector")?;
                Ok(Node::Absent(selector))
            }
            Some(Tok::Ident(name)) => {
                if matches!(name.as_str(), "and" | "or" | "on" | "unless" | "bool") {
                    return Err(self.error_at(offset, &format!("unexpected keyword `{name}`")));
                }
                self.pos += 1;
                if self.peek() == Some(&Tok::LParen) {
                    return Err(self.error_at(
                        offset,
                        &format!("function {name}() is not supported (only absent())"),
                    ));
                }
                if name.contains(':') && name.starts_with(':') {
                    return Err(self.error_at(offset, "a metric name cannot start with :"));
                }
                Ok(Node::Selector(self.selector(name, offset)?))
            }
            Some(_) => Err(self.error_at(offset, "expected a metric, a number or (")),
            None => Err(self.error_at(offset, "unexpected end of expression")),
        }
    }

    fn selector(&mut self, metric: String, _offset: usize) -> Result<Selector, ExprError> {
        let mut matchers = Vec::new();
        if self.peek() == Some(&Tok::LBrace) {
            self.pos += 1;
            loop {
                let label_offset = self.here();
                let label = match self.peek().cloned() {
                    Some(Tok::RBrace) => {
                        self.pos += 1;
                        break;
                    }
                    Some(Tok::Ident(label)) if !label.contains(':') => label,
                    _ => return Err(self.error_at(label_offset, "expected a label name or }")),
                };
                self.pos += 1;
                let op_offset = self.here();
                let op = match self.peek() {
                    Some(Tok::Assign) => MatchOp::Equal,
                    Some(Tok::Op("!=")) => MatchOp::NotEqual,
                    Some(Tok::Op("=~")) => MatchOp::Regex,
                    Some(Tok::Op("!~")) => MatchOp::NotRegex,
                    _ => {
                        return Err(self.error_at(op_offset, "expected =, !=, =~ or !~"));
                    }
                };
                self.pos += 1;
                let value_offset = self.here();
                let Some(Tok::Str(value)) = self.peek().cloned() else {
                    return Err(self.error_at(value_offset, "expected a quoted label value"));
                };
                self.pos += 1;
                let regex = if matches!(op, MatchOp::Regex | MatchOp::NotRegex) {
                    Some(
                        regex_lite::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                            self.error_at(value_offset, &format!("bad regular expression: {e}"))
                        })?,
                    )
                } else {
                    None
                };
                matchers.push(Matcher {
                    label,
                    op,
                    value,
                    regex,
                });
                match self.peek() {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RBrace) => {}
                    _ => return Err(self.error_at(self.here(), "expected , or }")),
                }
            }
        }
        Ok(Selector { metric, matchers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricSink;

    fn families() -> Vec<MetricFamily> {
        let mut sink = MetricSink::new();
        for (mp, fs, size, avail) in [
            ("/", "ext4", 100.0, 5.0),
            ("/boot/firmware", "vfat", 512.0, 400.0),
            ("/run", "tmpfs", 10.0, 0.0),
        ] {
            let labels = [("device", "d"), ("fstype", fs), ("mountpoint", mp)];
            sink.gauge("node_filesystem_size_bytes", "s", &labels, size);
            sink.gauge("node_filesystem_avail_bytes", "a", &labels, avail);
        }
        sink.gauge("intmax_builder_ready", "r", &[("node", "pi")], 0.0);
        sink.gauge("node_memory_MemTotal_bytes", "t", &[], 1000.0);
        sink.gauge("node_memory_MemAvailable_bytes", "a", &[], 50.0);
        sink.into_families()
    }

    /// Found by fuzzing (agent/fuzz, alert_expression and agent_config): deep nesting
    /// overflowed the stack (SIGSEGV) instead of being an error.
    #[test]
    fn deep_and_long_expressions_are_errors() {
        let nested = format!("{}up{}", "(".repeat(50_000), ")".repeat(50_000));
        let e = Expr::parse(&nested).expect_err("nested");
        assert!(e.message.contains("longer than 1024 tokens"), "{e}");
        let nested = format!("{}up{}", "(".repeat(65), ")".repeat(65));
        let e = Expr::parse(&nested).expect_err("nested");
        assert!(e.message.contains("nested more than 64 levels"), "{e}");
        assert_eq!(e.column, 65);
        let signs = format!("{}up", "-".repeat(500));
        assert!(
            Expr::parse(&signs)
                .expect_err("signs")
                .message
                .contains("nested")
        );
        let chain = vec!["up"; 600].join(" + ");
        assert!(
            Expr::parse(&chain)
                .expect_err("chain")
                .message
                .contains("longer")
        );
        let ok = format!(
            "{}up{} + {}",
            "(".repeat(63),
            ")".repeat(63),
            vec!["up"; 400].join(" * ")
        );
        assert!(Expr::parse(&ok).is_ok());
    }

    fn eval(text: &str) -> Vec<Sample> {
        let fams = families();
        let mut set = Families::new();
        set.extend(&fams);
        Expr::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .eval(&set)
            .expect("eval")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn selector_comparison_filters() {
        assert_eq!(
            eval("intmax_builder_ready == 0"),
            vec![Sample {
                labels: labels(&[("node", "pi")]),
                value: 0.0
            }]
        );
        assert!(eval("intmax_builder_ready == 1").is_empty());
        assert_eq!(eval("0 == intmax_builder_ready").len(), 1);
    }

    #[test]
    fn matchers_and_ratio() {
        let out = eval(
            "100 - 100 * node_filesystem_avail_bytes{fstype!~\"tmpfs|ramfs\",mountpoint!=\"/x\"} / node_filesystem_size_bytes > 80",
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].labels,
            labels(&[("device", "d"), ("fstype", "ext4"), ("mountpoint", "/")])
        );
        assert_eq!(out[0].value, 95.0);
        // Regular expressions are anchored: "ext" does not match "ext4".
        assert!(eval("node_filesystem_size_bytes{fstype=~\"ext\"}").is_empty());
        assert_eq!(
            eval("node_filesystem_size_bytes{fstype=~\"ext.\"}").len(),
            1
        );
        assert_eq!(
            eval("node_filesystem_size_bytes{mountpoint='/run'}").len(),
            1
        );
        // Precedence: * before -, comparison last.
        let mem = eval("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100 < 10");
        assert_eq!(mem[0].value, 5.0);
    }

    #[test]
    fn on_matching_keeps_only_the_listed_labels() {
        let out = eval(
            "node_filesystem_avail_bytes{mountpoint=\"/\"} / on(mountpoint) node_filesystem_size_bytes",
        );
        assert_eq!(
            out,
            vec![Sample {
                labels: labels(&[("mountpoint", "/")]),
                value: 0.05
            }]
        );
        // Without on(), the right side's several samples per signature still match 1:1.
        assert_eq!(
            eval("node_filesystem_avail_bytes / node_filesystem_size_bytes").len(),
            3
        );
        let fams = families();
        let mut set = Families::new();
        set.extend(&fams);
        let err =
            Expr::parse("node_filesystem_avail_bytes / on(device) node_filesystem_size_bytes")
                .expect("parse")
                .eval(&set)
                .expect_err("many-to-many");
        assert!(err.contains("several samples"), "{err}");
    }

    #[test]
    fn and_or_absent() {
        assert_eq!(
            eval("intmax_builder_ready == 0 and intmax_builder_ready").len(),
            1
        );
        assert!(eval("intmax_builder_ready == 0 and node_memory_MemTotal_bytes").is_empty());
        assert_eq!(
            eval("intmax_builder_ready == 0 or node_memory_MemTotal_bytes").len(),
            2
        );
        assert_eq!(
            eval("absent(intmax_builder_container_running{node=\"pi\",x=~\"y\"})"),
            vec![Sample {
                labels: labels(&[("node", "pi")]),
                value: 1.0
            }]
        );
        assert!(eval("absent(intmax_builder_ready)").is_empty());
        assert_eq!(eval("-intmax_builder_ready + 2 > 1")[0].value, 2.0);
    }

    fn error(text: &str) -> (usize, String) {
        let e = Expr::parse(text).expect_err(text);
        (e.column, e.message)
    }

    #[test]
    fn errors_have_columns() {
        assert_eq!(error("up >").0, 5);
        assert_eq!(error("up{job=\"a\" x=\"b\"}").0, 12);
        let (col, msg) = error("up{job~\"a\"}");
        assert_eq!(col, 7);
        assert!(msg.contains("unexpected character"), "{msg}");
        let (col, msg) = error("up{job=~\"(\"}");
        assert_eq!(col, 9);
        assert!(msg.contains("bad regular expression"), "{msg}");
        let (col, msg) = error("rate(x)");
        assert_eq!(col, 1);
        assert!(msg.contains("not supported"), "{msg}");
        assert_eq!(error("up == 1 and 2").0, 13);
        assert_eq!(error("1 > 2").0, 3);
        assert!(error("42").1.contains("number"));
        assert_eq!(error("up{job=\"a\"").0, 11);
        assert_eq!(error("(up > 1").0, 8);
        assert_eq!(error("up > 1 )").0, 8);
        assert_eq!(error("up{job=\"unterminated}").0, 8);
        assert_eq!(error("up / ignoring(a) up").0, 6);
        // Columns count characters, not bytes.
        assert_eq!(error("up{a=\"é\"} §").0, 11);
    }
}
