//! Recursive-descent parser with precedence climbing for expressions. Every failure is a
//! [`ParseError`] at the offending token with the list of what would have been accepted.
//!
//! Precedence, loosest first: `OR`, `AND`, `NOT`, comparisons (`= != <> < <= > >=`,
//! `IS [NOT] NULL`, `[NOT] IN (…)`, `[NOT] BETWEEN … AND …`), `||`, `+ -`, `* / %`,
//! unary `-`, then postfix `.name` and `[index]`.

use std::sync::Arc;

use serde_json::Value;

use crate::ast::{BinOp, BufferSpec, Expr, ExprKind, Meta, PathSeg, Query, SelectItem, Span};
use crate::error::ParseError;
use crate::functions::{self, AggFunc, Func, Lookup};
use crate::geo::Polygon;
use crate::lexer::{Tok, Token, tokenize};
use crate::topic;

/// Words that cannot be bare field names (quote them, `"from"`, to use such a field).
const RESERVED: &[&str] = &[
    "select", "from", "where", "as", "and", "or", "not", "is", "null", "true", "false", "in",
    "between", "case", "when", "then", "else", "end",
];

/// Nesting bound so that a hostile rule cannot overflow the stack.
const MAX_DEPTH: usize = 64;

pub(crate) fn parse(src: &str) -> Result<Query, ParseError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        buffers: Vec::new(),
        in_aggregate: false,
    };
    p.query()
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    buffers: Vec<BufferSpec>,
    in_aggregate: bool,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            let t = &self.tokens[self.pos - 1];
            t.offset + t.len
        }
    }

    fn found(&self, t: &Token) -> String {
        if t.tok == Tok::Eof {
            "end of input".into()
        } else {
            format!("'{}'", &self.src[t.offset..t.offset + t.len])
        }
    }

    fn error_here(&self, expected: &[&str]) -> ParseError {
        let t = self.peek();
        ParseError::new(
            self.src,
            t.offset,
            expected.iter().map(|s| s.to_string()).collect(),
            self.found(t),
        )
    }

    fn error_at(&self, span: Span, expected: String) -> ParseError {
        let found = if span.start >= self.src.len() {
            "end of input".into()
        } else {
            format!("'{}'", &self.src[span.start..span.end.max(span.start)])
        };
        ParseError::new(self.src, span.start, vec![expected], found)
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn is_keyword_at(&self, n: usize, kw: &str) -> bool {
        matches!(&self.peek_at(n).tok, Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.error_here(&[&kw.to_ascii_uppercase()]))
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, shown: &str) -> Result<(), ParseError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error_here(&[shown]))
        }
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        self.expect_keyword("select")?;
        let select = self.select_list()?;
        self.expect_keyword("from")?;
        let t = self.advance();
        let Tok::Str(filter) = &t.tok else {
            self.pos -= usize::from(t.tok != Tok::Eof);
            return Err(self.error_here(&["a quoted topic filter such as 'devices/+/telemetry'"]));
        };
        let from_span = Span {
            start: t.offset,
            end: t.offset + t.len,
        };
        if let Err(why) = topic::validate_filter(filter) {
            return Err(self.error_at(from_span, format!("a valid MQTT topic filter ({why})")));
        }
        let from = filter.clone();
        let filter = if self.eat_keyword("where") {
            let e = self.expr()?;
            Some(e)
        } else {
            None
        };
        if self.peek().tok != Tok::Eof {
            let expected: &[&str] = if filter.is_some() {
                &["an operator", "end of input"]
            } else {
                &["WHERE", "end of input"]
            };
            return Err(self.error_here(expected));
        }
        Ok(Query {
            select,
            from,
            from_span,
            filter,
            buffers: std::mem::take(&mut self.buffers),
        })
    }

    fn select_list(&mut self) -> Result<Vec<SelectItem>, ParseError> {
        let mut items = Vec::new();
        let mut names: Vec<(String, Span)> = Vec::new();
        loop {
            if self.eat(&Tok::Star) {
                items.push(SelectItem::Star);
            } else {
                let expr = self.expr()?;
                let name = if self.eat_keyword("as") {
                    let t = self.advance();
                    match &t.tok {
                        Tok::Ident(n) if !RESERVED.contains(&n.to_ascii_lowercase().as_str()) => {
                            n.clone()
                        }
                        Tok::QuotedIdent(n) | Tok::Str(n) if !n.is_empty() => n.clone(),
                        _ => {
                            self.pos -= usize::from(t.tok != Tok::Eof);
                            return Err(self.error_here(&["an output name after AS"]));
                        }
                    }
                } else {
                    default_name(self.src, &expr)
                };
                let span = Span {
                    start: expr.span.start,
                    end: self.prev_end(),
                };
                if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                    return Err(self.error_at(
                        span,
                        format!(
                            "a distinct output name ('{name}' is already produced at offset {}; add AS)",
                            first.start
                        ),
                    ));
                }
                names.push((name.clone(), span));
                items.push(SelectItem::Expr { expr, name });
            }
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        if !self.is_keyword("from") {
            let last_is_aliased = self.pos > 0
                && matches!(self.tokens.get(self.pos.wrapping_sub(2)), Some(t) if matches!(&t.tok, Tok::Ident(w) if w.eq_ignore_ascii_case("as")));
            let expected: &[&str] =
                if last_is_aliased || matches!(items.last(), Some(SelectItem::Star)) {
                    &["','", "FROM"]
                } else {
                    &["','", "AS", "FROM"]
                };
            return Err(self.error_here(expected));
        }
        Ok(items)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(&["an expression nested at most 64 levels deep"]));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let e = self.or_expr();
        self.depth -= 1;
        e
    }

    fn binary(op: BinOp, l: Expr, r: Expr) -> Expr {
        let span = Span {
            start: l.span.start,
            end: r.span.end,
        };
        Expr {
            kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
            span,
        }
    }

    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.and_expr()?;
        while self.eat_keyword("or") {
            let r = self.and_expr()?;
            l = Self::binary(BinOp::Or, l, r);
        }
        Ok(l)
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.not_expr()?;
        while self.eat_keyword("and") {
            let r = self.not_expr()?;
            l = Self::binary(BinOp::And, l, r);
        }
        Ok(l)
    }

    fn not_expr(&mut self) -> Result<Expr, ParseError> {
        if self.is_keyword("not") {
            let start = self.advance().offset;
            self.enter()?;
            let inner = self.not_expr();
            self.depth -= 1;
            let inner = inner?;
            let span = Span {
                start,
                end: inner.span.end,
            };
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(inner)),
                span,
            });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let l = self.concat()?;
        let op = match self.peek().tok {
            Tok::Eq => Some(BinOp::Eq),
            Tok::NotEq => Some(BinOp::NotEq),
            Tok::Lt => Some(BinOp::Lt),
            Tok::Le => Some(BinOp::Le),
            Tok::Gt => Some(BinOp::Gt),
            Tok::Ge => Some(BinOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.advance();
            let r = self.concat()?;
            return Ok(Self::binary(op, l, r));
        }
        if self.is_keyword("is") {
            self.advance();
            let negated = self.eat_keyword("not");
            if !self.eat_keyword("null") {
                return Err(self.error_here(if negated { &["NULL"] } else { &["NOT", "NULL"] }));
            }
            let span = Span {
                start: l.span.start,
                end: self.prev_end(),
            };
            return Ok(Expr {
                kind: ExprKind::IsNull {
                    expr: Box::new(l),
                    negated,
                },
                span,
            });
        }
        let negated = self.is_keyword("not")
            && (self.is_keyword_at(1, "in") || self.is_keyword_at(1, "between"));
        if negated {
            self.advance();
        }
        if self.eat_keyword("in") {
            self.expect(&Tok::LParen, "'('")?;
            let mut list = Vec::new();
            loop {
                list.push(self.expr()?);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(&Tok::RParen, "',' or ')'")?;
            let span = Span {
                start: l.span.start,
                end: self.prev_end(),
            };
            return Ok(Expr {
                kind: ExprKind::In {
                    expr: Box::new(l),
                    list,
                    negated,
                },
                span,
            });
        }
        if self.eat_keyword("between") {
            let low = self.concat()?;
            self.expect_keyword("and")?;
            let high = self.concat()?;
            let span = Span {
                start: l.span.start,
                end: high.span.end,
            };
            return Ok(Expr {
                kind: ExprKind::Between {
                    expr: Box::new(l),
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                },
                span,
            });
        }
        Ok(l)
    }

    fn concat(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.additive()?;
        while self.eat(&Tok::Concat) {
            let r = self.additive()?;
            l = Self::binary(BinOp::Concat, l, r);
        }
        Ok(l)
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.multiplicative()?;
        loop {
            let op = match self.peek().tok {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(l),
            };
            self.advance();
            let r = self.multiplicative()?;
            l = Self::binary(op, l, r);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.unary()?;
        loop {
            let op = match self.peek().tok {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => return Ok(l),
            };
            self.advance();
            let r = self.unary()?;
            l = Self::binary(op, l, r);
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek().clone();
        if t.tok == Tok::Minus || t.tok == Tok::Plus {
            self.advance();
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            if t.tok == Tok::Plus {
                return Ok(inner);
            }
            let span = Span {
                start: t.offset,
                end: inner.span.end,
            };
            // Fold `-literal` so that `-5` is a literal (and `-9223372036854775808` fits).
            if let ExprKind::Literal(Value::Number(n)) = &inner.kind {
                let folded = if let Some(i) = n.as_i64() {
                    i.checked_neg().map(Value::from)
                } else {
                    n.as_f64().map(|f| Value::from(-f))
                };
                if let Some(v) = folded {
                    return Ok(Expr {
                        kind: ExprKind::Literal(v),
                        span,
                    });
                }
            }
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(inner)),
                span,
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            let seg = if self.eat(&Tok::Dot) {
                let t = self.advance();
                match &t.tok {
                    Tok::Ident(n) | Tok::QuotedIdent(n) => PathSeg::Key(n.clone()),
                    _ => {
                        self.pos -= usize::from(t.tok != Tok::Eof);
                        return Err(self.error_here(&["a field name after '.'"]));
                    }
                }
            } else if self.eat(&Tok::LBracket) {
                let t = self.advance();
                let seg = match &t.tok {
                    Tok::Int(i) => PathSeg::Index(*i),
                    Tok::Minus => match self.peek().tok {
                        Tok::Int(i) => {
                            self.advance();
                            PathSeg::Index(-i)
                        }
                        _ => return Err(self.error_here(&["an array index"])),
                    },
                    Tok::Str(k) => PathSeg::Key(k.clone()),
                    _ => {
                        self.pos -= usize::from(t.tok != Tok::Eof);
                        return Err(self.error_here(&["an array index or a quoted key"]));
                    }
                };
                self.expect(&Tok::RBracket, "']'")?;
                seg
            } else {
                return Ok(e);
            };
            let span = Span {
                start: e.span.start,
                end: self.prev_end(),
            };
            e = match e.kind {
                ExprKind::Field(mut path) => {
                    path.push(seg);
                    Expr {
                        kind: ExprKind::Field(path),
                        span,
                    }
                }
                kind => Expr {
                    kind: ExprKind::Get(Box::new(Expr { kind, span: e.span }), seg),
                    span,
                },
            };
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let t = self.advance();
        let span = Span {
            start: t.offset,
            end: t.offset + t.len,
        };
        let lit = |v: Value| {
            Ok(Expr {
                kind: ExprKind::Literal(v),
                span,
            })
        };
        match &t.tok {
            Tok::Int(i) => lit(Value::from(*i)),
            Tok::Float(f) => lit(Value::from(*f)),
            Tok::Str(s) => lit(Value::from(s.clone())),
            Tok::QuotedIdent(n) => Ok(Expr {
                kind: ExprKind::Field(vec![PathSeg::Key(n.clone())]),
                span,
            }),
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(Expr {
                    kind: inner.kind,
                    span: Span {
                        start: t.offset,
                        end: self.prev_end(),
                    },
                })
            }
            Tok::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                if self.peek().tok == Tok::LParen {
                    return self.call(word, span);
                }
                match lower.as_str() {
                    "null" => lit(Value::Null),
                    "true" => lit(Value::Bool(true)),
                    "false" => lit(Value::Bool(false)),
                    "case" => self.case(span.start),
                    "device_id" => meta(Meta::DeviceId, span),
                    "tenant" => meta(Meta::Tenant, span),
                    "topic" => meta(Meta::Topic, span),
                    "timestamp" => meta(Meta::Timestamp, span),
                    "payload" => Ok(Expr {
                        kind: ExprKind::Field(Vec::new()),
                        span,
                    }),
                    w if RESERVED.contains(&w) => {
                        self.pos -= 1;
                        Err(self.error_here(&["expression"]))
                    }
                    _ => Ok(Expr {
                        kind: ExprKind::Field(vec![PathSeg::Key(word.clone())]),
                        span,
                    }),
                }
            }
            _ => {
                self.pos -= usize::from(t.tok != Tok::Eof);
                Err(self.error_here(&["expression"]))
            }
        }
    }

    fn case(&mut self, start: usize) -> Result<Expr, ParseError> {
        let operand = if self.is_keyword("when") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut whens = Vec::new();
        while self.eat_keyword("when") {
            let cond = self.expr()?;
            self.expect_keyword("then")?;
            let result = self.expr()?;
            whens.push((cond, result));
        }
        if whens.is_empty() {
            return Err(self.error_here(&["WHEN"]));
        }
        let otherwise = if self.eat_keyword("else") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        if !self.eat_keyword("end") {
            return Err(self.error_here(if otherwise.is_some() {
                &["END"]
            } else {
                &["WHEN", "ELSE", "END"]
            }));
        }
        Ok(Expr {
            kind: ExprKind::Case {
                operand,
                whens,
                otherwise,
            },
            span: Span {
                start,
                end: self.prev_end(),
            },
        })
    }

    fn call(&mut self, name: &str, name_span: Span) -> Result<Expr, ParseError> {
        let Some(found) = functions::lookup(name) else {
            return Err(self.error_at(
                name_span,
                "a known function (see docs/rules.md for the list)".into(),
            ));
        };
        self.expect(&Tok::LParen, "'('")?;
        let entering_aggregate = matches!(found, Lookup::Aggregate(_));
        if entering_aggregate && self.in_aggregate {
            return Err(self.error_at(
                name_span,
                "no aggregate inside another aggregate's argument".into(),
            ));
        }
        let was_in_aggregate = self.in_aggregate;
        self.in_aggregate |= entering_aggregate;
        let mut args = Vec::new();
        let result = (|| {
            if !self.eat(&Tok::RParen) {
                loop {
                    args.push(self.expr()?);
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
                self.expect(&Tok::RParen, "',' or ')'")?;
            }
            Ok(())
        })();
        self.in_aggregate = was_in_aggregate;
        result?;
        let span = Span {
            start: name_span.start,
            end: self.prev_end(),
        };
        let lower = name.to_ascii_lowercase();
        match found {
            Lookup::Aggregate(func) => self.aggregate(func, &lower, args, span),
            Lookup::Scalar(func) => {
                let (min, max) = functions::arity(func);
                if args.len() < min || max.is_some_and(|m| args.len() > m) {
                    let wanted = match max {
                        Some(m) if m == min => format!("{m}"),
                        Some(m) => format!("{min} to {m}"),
                        None => format!("at least {min}"),
                    };
                    return Err(self.error_at(
                        span,
                        format!("{wanted} argument(s) for {lower}(), got {}", args.len()),
                    ));
                }
                self.check_literal_args(func, &args)?;
                if func == Func::PointInPolygon
                    && let ExprKind::Literal(Value::String(text)) = &args[2].kind
                {
                    let polygon = Polygon::from_text(text)
                        .map_err(|why| self.error_at(args[2].span, format!("a polygon: {why}")))?;
                    let mut it = args.into_iter();
                    let (Some(lat), Some(lon)) = (it.next(), it.next()) else {
                        return Err(self.error_at(span, "3 arguments".into()));
                    };
                    return Ok(Expr {
                        kind: ExprKind::PointInPolygon(
                            Box::new(lat),
                            Box::new(lon),
                            Arc::new(polygon),
                        ),
                        span,
                    });
                }
                Ok(Expr {
                    kind: ExprKind::Call(func, args),
                    span,
                })
            }
        }
    }

    /// Literal arguments that can be checked now are: the time format and the JSON path.
    fn check_literal_args(&self, func: Func, args: &[Expr]) -> Result<(), ParseError> {
        match (func, args.get(1).map(|a| &a.kind)) {
            (Func::FormatTime, Some(ExprKind::Literal(Value::String(f))))
                if crate::timefmt::Format::parse(f).is_none() =>
            {
                return Err(self.error_at(
                    args[1].span,
                    format!("a time format ({})", crate::timefmt::FORMATS.join(", ")),
                ));
            }
            (Func::JsonGet, Some(ExprKind::Literal(Value::String(p)))) => {
                if let Err(why) = crate::builtins::parse_json_path(p) {
                    return Err(self.error_at(args[1].span, format!("a JSON path ({why})")));
                }
            }
            _ => {}
        }
        if func == Func::TopicLevel
            && let Some(ExprKind::Literal(v)) = args.first().map(|a| &a.kind)
            && v.as_i64().is_none_or(|n| n < 1)
        {
            return Err(self.error_at(args[0].span, "a topic level number from 1".into()));
        }
        Ok(())
    }

    fn aggregate(
        &mut self,
        func: AggFunc,
        name: &str,
        args: Vec<Expr>,
        span: Span,
    ) -> Result<Expr, ParseError> {
        let [arg, window]: [Expr; 2] = args.try_into().map_err(|args: Vec<Expr>| {
            self.error_at(
                span,
                format!(
                    "2 arguments for {name}(value, 'window') such as {name}(temp, '5m'), got {}",
                    args.len()
                ),
            )
        })?;
        let window_ms = match &window.kind {
            ExprKind::Literal(Value::String(w)) => functions::parse_window(w),
            _ => None,
        };
        let Some(window_ms) = window_ms else {
            return Err(self.error_at(
                window.span,
                "a window literal from '1s' to '1d' such as '30s', '5m', '1h'".into(),
            ));
        };
        let key = self.src[arg.span.start..arg.span.end].to_string();
        let numeric = func != AggFunc::Count;
        let buffer = match self
            .buffers
            .iter()
            .position(|b| b.key == key && b.window_ms == window_ms)
        {
            Some(i) => {
                self.buffers[i].numeric |= numeric;
                i
            }
            None => {
                self.buffers.push(BufferSpec {
                    arg,
                    window_ms,
                    numeric,
                    key,
                });
                self.buffers.len() - 1
            }
        };
        Ok(Expr {
            kind: ExprKind::Aggregate { func, buffer },
            span,
        })
    }
}

fn meta(m: Meta, span: Span) -> Result<Expr, ParseError> {
    Ok(Expr {
        kind: ExprKind::Meta(m),
        span,
    })
}

/// The output name of an item without AS: the last field name of a plain path (`gps.lat` →
/// `lat`), the metadata name, or else the expression's own text (`avg(temp, '5m')`).
fn default_name(src: &str, expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Field(path) => {
            if let Some(PathSeg::Key(k)) = path.iter().rev().find(|s| matches!(s, PathSeg::Key(_)))
            {
                return k.clone();
            }
        }
        ExprKind::Meta(m) => {
            return match m {
                Meta::DeviceId => "device_id",
                Meta::Tenant => "tenant",
                Meta::Topic => "topic",
                Meta::Timestamp => "timestamp",
            }
            .into();
        }
        _ => {}
    }
    src[expr.span.start..expr.span.end].to_string()
}

#[cfg(test)]
mod tests;
