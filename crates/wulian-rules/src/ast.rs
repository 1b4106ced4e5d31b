//! The parsed form of a rule: a query with spans into the rule text, so a run-time error can
//! quote the sub-expression that failed.

use std::sync::Arc;

use serde_json::Value;

use crate::functions::{AggFunc, Func};
use crate::geo::Polygon;

/// A byte range of the rule text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub select: Vec<SelectItem>,
    pub from: String,
    pub from_span: Span,
    pub filter: Option<Expr>,
    /// One sample buffer per distinct (argument, window) of the aggregates in the query.
    pub buffers: Vec<BufferSpec>,
}

#[derive(Debug, Clone)]
pub(crate) enum SelectItem {
    /// `*`: every field of the payload object.
    Star,
    Expr {
        expr: Expr,
        name: String,
    },
}

/// What one window buffer samples: the argument expression over a window length.
#[derive(Debug, Clone)]
pub(crate) struct BufferSpec {
    pub arg: Expr,
    pub window_ms: i64,
    /// Whether a numeric aggregate reads the buffer (then non-numeric samples are an error).
    pub numeric: bool,
    /// Source text of the argument, used to share buffers between aggregates of the same thing.
    pub key: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meta {
    DeviceId,
    Tenant,
    Topic,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathSeg {
    Key(String),
    Index(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Concat,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Debug, Clone)]
pub(crate) enum ExprKind {
    Literal(Value),
    Meta(Meta),
    /// A path from the payload root; an empty path is the whole payload (`payload`).
    Field(Vec<PathSeg>),
    /// A path step applied to a computed value: `json_decode(s).a`, `(x)[0]`.
    Get(Box<Expr>, PathSeg),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Call(Func, Vec<Expr>),
    /// `point_in_polygon` with a literal polygon, parsed once when the rule is saved.
    PointInPolygon(Box<Expr>, Box<Expr>, Arc<Polygon>),
    Aggregate {
        func: AggFunc,
        buffer: usize,
    },
}
