//! The evaluator: an expression over one message, with SQL null semantics.
//!
//! Missing fields read as `null`; arithmetic and comparisons with `null` give `null`
//! (unknown); `AND`/`OR` use three-valued logic; a `WHERE` that is `null` does not match.
//! Type errors (`'a' > 1`, `upper(3)`) are [`Fail`]s carrying the span of the expression
//! that failed, never panics.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::ast::{BinOp, Expr, ExprKind, Meta, PathSeg, Span};
use crate::builtins;
use crate::functions::AggFunc;
use crate::rule::Message;
use crate::window::Summary;
use crate::zones::ZoneResolver;

/// A run-time failure at a span of the rule text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fail {
    pub span: Span,
    pub reason: String,
}

pub(crate) type EvalResult<T = Value> = Result<T, Fail>;

/// Everything an expression can read.
pub(crate) struct Ctx<'a> {
    pub msg: &'a Message,
    pub now_ms: i64,
    pub zones: &'a dyn ZoneResolver,
    /// One summary per window buffer of the query, already updated with this message.
    pub aggregates: &'a [Summary],
}

/// Like [`eval`], but borrows literals and payload fields instead of cloning them: most
/// comparisons read a field and a literal, and this keeps them allocation-free.
pub(crate) fn eval_ref<'c>(e: &'c Expr, ctx: &Ctx<'c>) -> EvalResult<Cow<'c, Value>> {
    match &e.kind {
        ExprKind::Literal(v) => Ok(Cow::Borrowed(v)),
        ExprKind::Field(path) => Ok(match lookup_path(&ctx.msg.payload, path) {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(Value::Null),
        }),
        ExprKind::Get(base, seg) => {
            let seg = std::slice::from_ref(seg);
            Ok(match eval_ref(base, ctx)? {
                Cow::Borrowed(v) => {
                    lookup_path(v, seg).map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                }
                Cow::Owned(v) => Cow::Owned(lookup_path(&v, seg).cloned().unwrap_or(Value::Null)),
            })
        }
        _ => eval(e, ctx).map(Cow::Owned),
    }
}

pub(crate) fn eval<'c>(e: &'c Expr, ctx: &Ctx<'c>) -> EvalResult {
    let fail = |reason: String| Fail {
        span: e.span,
        reason,
    };
    match &e.kind {
        ExprKind::Literal(v) => Ok(v.clone()),
        ExprKind::Meta(m) => Ok(match m {
            Meta::DeviceId => Value::from(ctx.msg.device_id.as_str()),
            Meta::Tenant => Value::from(ctx.msg.tenant.as_str()),
            Meta::Topic => Value::from(ctx.msg.topic.as_str()),
            Meta::Timestamp => Value::from(ctx.msg.timestamp_ms),
        }),
        ExprKind::Field(path) => Ok(lookup_path(&ctx.msg.payload, path)
            .cloned()
            .unwrap_or(Value::Null)),
        ExprKind::Get(..) => eval_ref(e, ctx).map(Cow::into_owned),
        ExprKind::Neg(inner) => match eval(inner, ctx)? {
            Value::Null => Ok(Value::Null),
            Value::Number(n) => match n.as_i64().and_then(i64::checked_neg) {
                Some(i) => Ok(Value::from(i)),
                None => float(-n.as_f64().unwrap_or(f64::NAN)).map_err(fail),
            },
            other => Err(fail(format!("cannot negate {}", type_name(&other)))),
        },
        ExprKind::Not(inner) => {
            let v = eval_ref(inner, ctx)?;
            Ok(
                match truth(&v).map_err(|r| Fail {
                    span: inner.span,
                    reason: r,
                })? {
                    None => Value::Null,
                    Some(b) => Value::Bool(!b),
                },
            )
        }
        ExprKind::Binary(op, l, r) => binary(*op, l, r, ctx).map_err(|f| f.unwrap_or_else(&fail)),
        ExprKind::IsNull { expr, negated } => {
            let is_null = eval_ref(expr, ctx)?.is_null();
            Ok(Value::Bool(is_null != *negated))
        }
        ExprKind::In {
            expr,
            list,
            negated,
        } => {
            let v = eval_ref(expr, ctx)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut unknown = false;
            for item in list {
                let candidate = eval_ref(item, ctx)?;
                match equals(&v, &candidate) {
                    Some(true) => return Ok(Value::Bool(!negated)),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            Ok(if unknown {
                Value::Null
            } else {
                Value::Bool(*negated)
            })
        }
        ExprKind::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = eval_ref(expr, ctx)?;
            let lo = eval_ref(low, ctx)?;
            let hi = eval_ref(high, ctx)?;
            let ge = compare(&v, &lo)
                .map_err(&fail)?
                .map(|o| o != Ordering::Less);
            let le = compare(&v, &hi)
                .map_err(&fail)?
                .map(|o| o != Ordering::Greater);
            let inside = and3(ge, le);
            Ok(match inside {
                None => Value::Null,
                Some(b) => Value::Bool(b != *negated),
            })
        }
        ExprKind::Case {
            operand,
            whens,
            otherwise,
        } => {
            let subject = match operand {
                Some(o) => Some(eval_ref(o, ctx)?),
                None => None,
            };
            for (cond, result) in whens {
                let c = eval_ref(cond, ctx)?;
                let hit = match &subject {
                    Some(s) => equals(s, &c) == Some(true),
                    None => {
                        truth(&c).map_err(|r| Fail {
                            span: cond.span,
                            reason: r,
                        })? == Some(true)
                    }
                };
                if hit {
                    return eval(result, ctx);
                }
            }
            match otherwise {
                Some(o) => eval(o, ctx),
                None => Ok(Value::Null),
            }
        }
        ExprKind::Call(func, args) => {
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                values.push(eval(a, ctx)?);
            }
            builtins::call(*func, values, ctx).map_err(fail)
        }
        ExprKind::PointInPolygon(lat, lon, polygon) => {
            let lat = eval_ref(lat, ctx)?;
            let lon = eval_ref(lon, ctx)?;
            match (
                builtins::opt_num(&lat, "latitude"),
                builtins::opt_num(&lon, "longitude"),
            ) {
                (Ok(Some(lat)), Ok(Some(lon))) => Ok(Value::Bool(polygon.contains(lat, lon))),
                (Err(r), _) | (_, Err(r)) => Err(fail(r)),
                _ => Ok(Value::Null),
            }
        }
        ExprKind::Aggregate { func, buffer } => {
            let Some(s) = ctx.aggregates.get(*buffer) else {
                return Err(fail("window state unavailable".into()));
            };
            Ok(match func {
                AggFunc::Count => Value::from(s.count),
                _ if s.numeric_count == 0 => Value::Null,
                AggFunc::Avg => float(s.sum / s.numeric_count as f64).map_err(fail)?,
                AggFunc::Sum => float(s.sum).map_err(fail)?,
                AggFunc::Min => float(s.min).map_err(fail)?,
                AggFunc::Max => float(s.max).map_err(fail)?,
            })
        }
    }
}

/// A `Fail` with a span already (from a sub-expression) or a reason for the whole node.
type BinResult = Result<Value, Result<Fail, String>>;

fn binary<'c>(op: BinOp, l: &'c Expr, r: &'c Expr, ctx: &Ctx<'c>) -> BinResult {
    // AND/OR short-circuit: `false AND <error>` is false, as in SQL engines that evaluate
    // lazily; it also lets `x IS NOT NULL AND x > 5` guard the comparison.
    if matches!(op, BinOp::And | BinOp::Or) {
        let lv = eval_ref(l, ctx).map_err(Ok)?;
        let lb = truth(&lv).map_err(|reason| {
            Ok(Fail {
                span: l.span,
                reason,
            })
        })?;
        match (op, lb) {
            (BinOp::And, Some(false)) => return Ok(Value::Bool(false)),
            (BinOp::Or, Some(true)) => return Ok(Value::Bool(true)),
            _ => {}
        }
        let rv = eval_ref(r, ctx).map_err(Ok)?;
        let rb = truth(&rv).map_err(|reason| {
            Ok(Fail {
                span: r.span,
                reason,
            })
        })?;
        let out = if op == BinOp::And {
            and3(lb, rb)
        } else {
            or3(lb, rb)
        };
        return Ok(out.map_or(Value::Null, Value::Bool));
    }
    let lv = eval_ref(l, ctx).map_err(Ok)?;
    let rv = eval_ref(r, ctx).map_err(Ok)?;
    binary_values(op, &lv, &rv).map_err(Err)
}

pub(crate) fn binary_values(op: BinOp, lv: &Value, rv: &Value) -> Result<Value, String> {
    let cmp = |pred: fn(Ordering) -> bool| -> Result<Value, String> {
        Ok(compare(lv, rv)?.map_or(Value::Null, |o| Value::Bool(pred(o))))
    };
    match op {
        BinOp::Eq => Ok(equals(lv, rv).map_or(Value::Null, Value::Bool)),
        BinOp::NotEq => Ok(equals(lv, rv).map_or(Value::Null, |b| Value::Bool(!b))),
        BinOp::Lt => cmp(|o| o == Ordering::Less),
        BinOp::Le => cmp(|o| o != Ordering::Greater),
        BinOp::Gt => cmp(|o| o == Ordering::Greater),
        BinOp::Ge => cmp(|o| o != Ordering::Less),
        BinOp::Concat => {
            if lv.is_null() || rv.is_null() {
                return Ok(Value::Null);
            }
            let mut s = builtins::to_text(lv);
            s.push_str(&builtins::to_text(rv));
            Ok(Value::String(s))
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => arithmetic(op, lv, rv),
        BinOp::And | BinOp::Or => {
            let (a, b) = (truth(lv)?, truth(rv)?);
            let out = if op == BinOp::And {
                and3(a, b)
            } else {
                or3(a, b)
            };
            Ok(out.map_or(Value::Null, Value::Bool))
        }
    }
}

fn arithmetic(op: BinOp, lv: &Value, rv: &Value) -> Result<Value, String> {
    let (a, b) = match (lv, rv) {
        (Value::Null, _) | (_, Value::Null) => return Ok(Value::Null),
        (Value::Number(a), Value::Number(b)) => (a, b),
        _ => {
            let sym = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
                _ => "%",
            };
            let hint = if op == BinOp::Add && (lv.is_string() || rv.is_string()) {
                " (use || to join strings)"
            } else {
                ""
            };
            return Err(format!(
                "cannot apply {sym} to {} and {}{hint}",
                type_name(lv),
                type_name(rv)
            ));
        }
    };
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let exact = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Rem if y != 0 => x.checked_rem(y),
            _ => None,
        };
        if let Some(v) = exact {
            return Ok(Value::from(v));
        }
    }
    let (x, y) = (as_f64(a), as_f64(b));
    if matches!(op, BinOp::Div | BinOp::Rem) && y == 0.0 {
        return Err("division by zero".into());
    }
    float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        _ => x % y,
    })
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

/// A float result; NaN and infinities are errors because JSON cannot carry them.
pub(crate) fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("result {f} is not a finite number"))
}

/// Three-valued truth: `null` is unknown, booleans are themselves, anything else is an error.
pub(crate) fn truth(v: &Value) -> Result<Option<bool>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(format!("expected a boolean, found {}", type_name(other))),
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// SQL equality: unknown with null, numbers by value (`1 = 1.0`), values of different types
/// are simply unequal.
pub(crate) fn equals(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Number(x), Value::Number(y)) => Some(num_cmp(x, y) == Some(Ordering::Equal)),
        _ => Some(a == b),
    }
}

/// Ordering for `< <= > >=` and BETWEEN: numbers, strings (by code point) and booleans
/// (`false < true`); null gives unknown; other pairs are a type error.
pub(crate) fn compare(a: &Value, b: &Value) -> Result<Option<Ordering>, String> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Ok(None),
        (Value::Number(x), Value::Number(y)) => Ok(num_cmp(x, y)),
        (Value::String(x), Value::String(y)) => Ok(Some(x.cmp(y))),
        (Value::Bool(x), Value::Bool(y)) => Ok(Some(x.cmp(y))),
        _ => Err(format!(
            "cannot order {} against {}",
            type_name(a),
            type_name(b)
        )),
    }
}

pub(crate) fn num_cmp(x: &Number, y: &Number) -> Option<Ordering> {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => as_f64(x).partial_cmp(&as_f64(y)),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Follows a path; a missing key, an index out of range or a step into a scalar is `None`.
pub(crate) fn lookup_path<'v>(root: &'v Value, path: &[PathSeg]) -> Option<&'v Value> {
    let mut v = root;
    for seg in path {
        v = match (seg, v) {
            (PathSeg::Key(k), Value::Object(o)) => o.get(k)?,
            (PathSeg::Index(i), Value::Array(a)) => {
                let idx = if *i < 0 {
                    a.len()
                        .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                } else {
                    usize::try_from(*i).ok()?
                };
                a.get(idx)?
            }
            _ => return None,
        };
    }
    Some(v)
}
