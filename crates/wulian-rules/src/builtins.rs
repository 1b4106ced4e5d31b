//! The scalar functions. Each takes evaluated arguments; a `null` argument gives `null` unless
//! the function exists to handle nulls (`coalesce`, `concat`, `least`, `greatest`,
//! `json_encode`).

use serde_json::Value;

use crate::ast::PathSeg;
use crate::eval::{Ctx, compare, float, lookup_path, type_name};
use crate::functions::Func;
use crate::geo::{Polygon, distance_m};
use crate::timefmt::{self, Format};

pub(crate) fn call(func: Func, args: Vec<Value>, ctx: &Ctx<'_>) -> Result<Value, String> {
    use Func::*;
    // One rule for all the others: a null argument gives null, as in SQL.
    if !matches!(func, Coalesce | Concat | Least | Greatest | JsonEncode)
        && args.iter().any(Value::is_null)
    {
        return Ok(Value::Null);
    }
    let a = &args;
    match func {
        Abs | Floor | Ceil | Sqrt | Ln | Log10 => {
            let Some(x) = opt_num(&a[0], name(func))? else {
                return Ok(Value::Null);
            };
            match func {
                Abs => Ok(match a[0].as_i64().and_then(i64::checked_abs) {
                    Some(i) => Value::from(i),
                    None => float(x.abs())?,
                }),
                Floor => integral(x.floor()),
                Ceil => integral(x.ceil()),
                Sqrt if x < 0.0 => Err(format!("sqrt of a negative number ({x})")),
                Sqrt => float(x.sqrt()),
                Ln | Log10 if x <= 0.0 => Err(format!(
                    "{} of a number that is not positive ({x})",
                    name(func)
                )),
                Ln => float(x.ln()),
                _ => float(x.log10()),
            }
        }
        Round => {
            let Some(x) = opt_num(&a[0], "round")? else {
                return Ok(Value::Null);
            };
            let digits = match a.get(1) {
                None => 0,
                Some(d) => match d.as_i64() {
                    Some(d) if (-15..=15).contains(&d) => d as i32,
                    _ => {
                        return Err(format!(
                            "round digits must be an integer from -15 to 15, found {d}"
                        ));
                    }
                },
            };
            if digits <= 0 {
                let scale = 10f64.powi(-digits);
                integral((x / scale).round() * scale)
            } else {
                let scale = 10f64.powi(digits);
                float((x * scale).round() / scale)
            }
        }
        Power => match (opt_num(&a[0], "power")?, opt_num(&a[1], "power")?) {
            (Some(x), Some(y)) => float(x.powf(y)),
            _ => Ok(Value::Null),
        },
        Least | Greatest => extreme(a, func == Greatest),
        Lower | Upper | Trim => {
            let Some(s) = opt_str(&a[0], name(func))? else {
                return Ok(Value::Null);
            };
            Ok(Value::from(match func {
                Lower => s.to_lowercase(),
                Upper => s.to_uppercase(),
                _ => s.trim().to_string(),
            }))
        }
        Length => Ok(match &a[0] {
            Value::Null => Value::Null,
            Value::String(s) => Value::from(s.chars().count()),
            Value::Array(v) => Value::from(v.len()),
            Value::Object(o) => Value::from(o.len()),
            other => {
                return Err(format!(
                    "length needs a string, array or object, found {}",
                    type_name(other)
                ));
            }
        }),
        Concat => {
            let mut out = String::new();
            for v in a.iter().filter(|v| !v.is_null()) {
                out.push_str(&to_text(v));
            }
            Ok(Value::from(out))
        }
        Substring => {
            let Some(s) = opt_str(&a[0], "substring")? else {
                return Ok(Value::Null);
            };
            let start = int_arg(&a[1], "substring start")?;
            let len = match a.get(2) {
                Some(v) => {
                    let n = int_arg(v, "substring length")?;
                    if n < 0 {
                        return Err(format!("substring length must not be negative, found {n}"));
                    }
                    Some(n)
                }
                None => None,
            };
            // SQL semantics: positions from 1; a start before 1 eats into the length.
            let end = len.map(|n| start.saturating_add(n));
            let from = start.max(1);
            let out: String = s
                .chars()
                .enumerate()
                .map(|(i, c)| (i as i64 + 1, c))
                .filter(|(pos, _)| *pos >= from && end.is_none_or(|e| *pos < e))
                .map(|(_, c)| c)
                .collect();
            Ok(Value::from(out))
        }
        Contains | StartsWith | EndsWith => {
            if a[0].is_null() || a[1].is_null() {
                return Ok(Value::Null);
            }
            if let (Contains, Value::Array(items)) = (func, &a[0]) {
                return Ok(Value::Bool(
                    items
                        .iter()
                        .any(|i| crate::eval::equals(i, &a[1]) == Some(true)),
                ));
            }
            let (Value::String(s), Value::String(p)) = (&a[0], &a[1]) else {
                return Err(format!(
                    "{} needs two strings, found {} and {}",
                    name(func),
                    type_name(&a[0]),
                    type_name(&a[1])
                ));
            };
            Ok(Value::Bool(match func {
                Contains => s.contains(p.as_str()),
                StartsWith => s.starts_with(p.as_str()),
                _ => s.ends_with(p.as_str()),
            }))
        }
        Replace => {
            if a.iter().any(Value::is_null) {
                return Ok(Value::Null);
            }
            let (Value::String(s), Value::String(from), Value::String(to)) = (&a[0], &a[1], &a[2])
            else {
                return Err("replace needs three strings".into());
            };
            Ok(Value::from(if from.is_empty() {
                s.clone()
            } else {
                s.replace(from.as_str(), to)
            }))
        }
        Now => Ok(Value::from(ctx.now_ms)),
        FormatTime => {
            let Some(ms) = opt_num(&a[0], "format_time")? else {
                return Ok(Value::Null);
            };
            let format = match a.get(1) {
                None => Format::Rfc3339,
                Some(Value::String(f)) => Format::parse(f).ok_or_else(|| {
                    format!(
                        "unknown time format {f:?}; use one of {}",
                        timefmt::FORMATS.join(", ")
                    )
                })?,
                Some(other) => {
                    return Err(format!(
                        "time format must be a string, found {}",
                        type_name(other)
                    ));
                }
            };
            timefmt::format_ms(ms as i64, format)
                .map(Value::from)
                .ok_or_else(|| format!("timestamp {ms} ms is outside years 0 to 9999"))
        }
        JsonGet => {
            let Value::String(path) = &a[1] else {
                return Err(format!(
                    "json_get path must be a string, found {}",
                    type_name(&a[1])
                ));
            };
            let path = parse_json_path(path)?;
            let decoded;
            let root = match &a[0] {
                Value::String(s) => {
                    decoded = serde_json::from_str::<Value>(s)
                        .map_err(|e| format!("json_get on a string that is not JSON: {e}"))?;
                    &decoded
                }
                v => v,
            };
            Ok(lookup_path(root, &path).cloned().unwrap_or(Value::Null))
        }
        JsonEncode => Ok(Value::from(a[0].to_string())),
        JsonDecode => match &a[0] {
            Value::Null => Ok(Value::Null),
            Value::String(s) => serde_json::from_str(s).map_err(|e| format!("json_decode: {e}")),
            other => Err(format!(
                "json_decode needs a string, found {}",
                type_name(other)
            )),
        },
        Coalesce => Ok(args
            .into_iter()
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null)),
        Distance => {
            let mut n = [0.0; 4];
            for (i, v) in a.iter().enumerate() {
                match opt_num(v, "distance")? {
                    Some(x) => n[i] = x,
                    None => return Ok(Value::Null),
                }
            }
            check_lat_lon(n[0], n[1])?;
            check_lat_lon(n[2], n[3])?;
            float(distance_m(n[0], n[1], n[2], n[3]))
        }
        PointInPolygon => {
            let (Some(lat), Some(lon)) =
                (opt_num(&a[0], "latitude")?, opt_num(&a[1], "longitude")?)
            else {
                return Ok(Value::Null);
            };
            let polygon = match &a[2] {
                Value::Null => return Ok(Value::Null),
                Value::String(s) => Polygon::from_text(s)?,
                v => Polygon::from_json(v)?,
            };
            Ok(Value::Bool(polygon.contains(lat, lon)))
        }
        InZone => {
            let (Some(lat), Some(lon)) =
                (opt_num(&a[0], "latitude")?, opt_num(&a[1], "longitude")?)
            else {
                return Ok(Value::Null);
            };
            let Some(zone) = opt_str(&a[2], "in_zone zone name")? else {
                return Ok(Value::Null);
            };
            check_lat_lon(lat, lon)?;
            ctx.zones
                .contains(&ctx.msg.tenant, zone, lat, lon)
                .map(Value::Bool)
                .ok_or_else(|| format!("unknown zone {zone:?}"))
        }
        TopicLevel => {
            let n = int_arg(&a[0], "topic level")?;
            if n < 1 {
                return Err(format!("topic levels count from 1, found {n}"));
            }
            Ok(usize::try_from(n - 1)
                .ok()
                .and_then(|i| ctx.msg.topic.split('/').nth(i))
                .map_or(Value::Null, Value::from))
        }
    }
}

fn name(func: Func) -> &'static str {
    use Func::*;
    match func {
        Abs => "abs",
        Floor => "floor",
        Ceil => "ceil",
        Sqrt => "sqrt",
        Ln => "ln",
        Log10 => "log10",
        Lower => "lower",
        Upper => "upper",
        Trim => "trim",
        Contains => "contains",
        StartsWith => "startswith",
        EndsWith => "endswith",
        _ => "function",
    }
}

/// A number argument, `None` for null, an error naming the function for anything else.
pub(crate) fn opt_num(v: &Value, what: &str) -> Result<Option<f64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        other => Err(format!("{what} needs a number, found {}", type_name(other))),
    }
}

fn opt_str<'v>(v: &'v Value, what: &str) -> Result<Option<&'v str>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("{what} needs a string, found {}", type_name(other))),
    }
}

fn int_arg(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(i),
            None => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
                .ok_or_else(|| format!("{what} must be an integer, found {n}")),
        },
        other => Err(format!(
            "{what} must be an integer, found {}",
            type_name(other)
        )),
    }
}

/// A whole float as an integer value when it fits, so that `floor(2.7)` prints `2`.
fn integral(f: f64) -> Result<Value, String> {
    if f.abs() < 9.0e15 {
        Ok(Value::from(f as i64))
    } else {
        float(f)
    }
}

fn check_lat_lon(lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!(
            "coordinates out of range: latitude {lat} must be within ±90, longitude {lon} within ±180"
        ));
    }
    Ok(())
}

/// `least`/`greatest`: nulls are ignored (as in PostgreSQL); the rest must be mutually
/// comparable (all numbers or all strings).
fn extreme(args: &[Value], greatest: bool) -> Result<Value, String> {
    let mut best: Option<&Value> = None;
    for v in args.iter().filter(|v| !v.is_null()) {
        best = Some(match best {
            None => v,
            Some(b) => {
                let ord = compare(v, b)?.ok_or("incomparable values")?;
                if (ord.is_gt() && greatest) || (ord.is_lt() && !greatest) {
                    v
                } else {
                    b
                }
            }
        });
    }
    Ok(best.cloned().unwrap_or(Value::Null))
}

/// How a value reads inside text: strings as themselves, the rest as JSON.
pub(crate) fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON path for `json_get`: `a.b[0].c`, `['odd key'].x`, `[-1]`.
pub(crate) fn parse_json_path(path: &str) -> Result<Vec<PathSeg>, String> {
    let mut segs = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    let mut expect_key = true;
    if path.is_empty() {
        return Ok(segs);
    }
    while i < bytes.len() {
        match bytes[i] {
            b'[' => {
                let close = path[i..]
                    .find(']')
                    .map(|c| c + i)
                    .ok_or_else(|| format!("unclosed '[' at {i}"))?;
                let inner = path[i + 1..close].trim();
                let seg =
                    if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                        PathSeg::Key(q.to_string())
                    } else {
                        PathSeg::Index(
                            inner
                                .parse::<i64>()
                                .map_err(|_| format!("'{inner}' at {i} is not an index"))?,
                        )
                    };
                segs.push(seg);
                i = close + 1;
                expect_key = false;
            }
            b'.' => {
                if expect_key {
                    return Err(format!("empty name at {i}"));
                }
                i += 1;
                expect_key = true;
                if i == bytes.len() {
                    return Err("path ends with '.'".into());
                }
            }
            _ => {
                if !expect_key {
                    return Err(format!("expected '.' or '[' at {i}"));
                }
                let end = path[i..].find(['.', '[']).map_or(path.len(), |e| e + i);
                segs.push(PathSeg::Key(path[i..end].to_string()));
                i = end;
                expect_key = false;
            }
        }
    }
    Ok(segs)
}
