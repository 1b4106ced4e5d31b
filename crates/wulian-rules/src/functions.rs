//! The function catalogue: names, arities and kinds, checked when a rule is saved so that an
//! unknown function or a wrong argument count is a parse error, not a run-time surprise.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    // math
    Abs,
    Round,
    Floor,
    Ceil,
    Sqrt,
    Power,
    Ln,
    Log10,
    Least,
    Greatest,
    // string
    Lower,
    Upper,
    Concat,
    Substring,
    Length,
    Trim,
    Contains,
    StartsWith,
    EndsWith,
    Replace,
    // time
    Now,
    FormatTime,
    // JSON
    JsonGet,
    JsonEncode,
    JsonDecode,
    Coalesce,
    // geo
    Distance,
    PointInPolygon,
    InZone,
    // metadata
    TopicLevel,
}

/// Sliding-window aggregates over the last `window` of one device's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Avg,
    Min,
    Max,
    Sum,
    Count,
}

pub(crate) enum Lookup {
    Scalar(Func),
    Aggregate(AggFunc),
}

/// Minimum and maximum argument counts (`None` = unbounded).
pub(crate) fn arity(func: Func) -> (usize, Option<usize>) {
    use Func::*;
    match func {
        Now => (0, Some(0)),
        TopicLevel => (1, Some(1)),
        Abs | Floor | Ceil | Sqrt | Ln | Log10 | Lower | Upper | Length | Trim | JsonEncode
        | JsonDecode => (1, Some(1)),
        Round | FormatTime => (1, Some(2)),
        Power | Contains | StartsWith | EndsWith | JsonGet => (2, Some(2)),
        Substring => (2, Some(3)),
        Replace | PointInPolygon | InZone => (3, Some(3)),
        Distance => (4, Some(4)),
        Least | Greatest | Concat | Coalesce => (1, None),
    }
}

/// Looks a function up by name, case-insensitively.
pub(crate) fn lookup(name: &str) -> Option<Lookup> {
    use Func::*;
    let name = name.to_ascii_lowercase();
    let f = match name.as_str() {
        "abs" => Abs,
        "round" => Round,
        "floor" => Floor,
        "ceil" => Ceil,
        "sqrt" => Sqrt,
        "power" | "pow" => Power,
        "ln" => Ln,
        "log10" => Log10,
        "least" => Least,
        "greatest" => Greatest,
        "lower" => Lower,
        "upper" => Upper,
        "concat" => Concat,
        "substring" => Substring,
        "length" => Length,
        "trim" => Trim,
        "contains" => Contains,
        "startswith" => StartsWith,
        "endswith" => EndsWith,
        "replace" => Replace,
        "now" => Now,
        "format_time" => FormatTime,
        "json_get" => JsonGet,
        "json_encode" => JsonEncode,
        "json_decode" => JsonDecode,
        "coalesce" => Coalesce,
        "distance" => Distance,
        "point_in_polygon" => PointInPolygon,
        "in_zone" => InZone,
        "topic" => TopicLevel,
        "avg" => return Some(Lookup::Aggregate(AggFunc::Avg)),
        "min" => return Some(Lookup::Aggregate(AggFunc::Min)),
        "max" => return Some(Lookup::Aggregate(AggFunc::Max)),
        "sum" => return Some(Lookup::Aggregate(AggFunc::Sum)),
        "count" => return Some(Lookup::Aggregate(AggFunc::Count)),
        _ => return None,
    };
    Some(Lookup::Scalar(f))
}

/// Every function name, for "did you mean" style listings in the docs and errors.
pub const FUNCTION_NAMES: &[&str] = &[
    "abs",
    "round",
    "floor",
    "ceil",
    "sqrt",
    "power",
    "ln",
    "log10",
    "least",
    "greatest",
    "lower",
    "upper",
    "concat",
    "substring",
    "length",
    "trim",
    "contains",
    "startswith",
    "endswith",
    "replace",
    "now",
    "format_time",
    "json_get",
    "json_encode",
    "json_decode",
    "coalesce",
    "distance",
    "point_in_polygon",
    "in_zone",
    "topic",
    "avg",
    "min",
    "max",
    "sum",
    "count",
];

/// Window literal: a positive integer and a unit, `30s`, `5m`, `1h`, `1d`; from one second to one day so
/// that a window's samples stay bounded in time.
pub(crate) fn parse_window(text: &str) -> Option<i64> {
    const MIN_WINDOW_MS: i64 = 1_000;
    const MAX_WINDOW_MS: i64 = 86_400_000;
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let ms = n.checked_mul(unit_ms)?;
    (MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&ms).then_some(ms)
}
