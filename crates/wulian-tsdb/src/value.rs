//! The data model: series keys, values and their kinds, points, write entries, aggregations
//! and buckets, plus the input checks that need no stored state (timestamp range, finite
//! floats, key names) and the one coercion the engine allows (an integer written to a float
//! series is stored as a float).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Smallest accepted timestamp (ms since the Unix epoch).
pub const MIN_TIMESTAMP: i64 = 0;
/// Largest accepted timestamp: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999;
/// Longest tenant, device or key name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Identifies one series: a key (e.g. "temp") of a device of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub tenant: String,
    pub device: String,
    pub key: String,
}

impl SeriesKey {
    pub fn new(
        tenant: impl Into<String>,
        device: impl Into<String>,
        key: impl Into<String>,
    ) -> SeriesKey {
        SeriesKey {
            tenant: tenant.into(),
            device: device.into(),
            key: key.into(),
        }
    }

    /// Names must be non-empty and at most [`MAX_NAME_BYTES`] long.
    pub(crate) fn validate(&self) -> Result<()> {
        for (what, name) in [
            ("tenant", &self.tenant),
            ("device", &self.device),
            ("key", &self.key),
        ] {
            if name.is_empty() {
                return Err(Error::InvalidSeriesKey {
                    reason: format!("{what} name is empty"),
                });
            }
            if name.len() > MAX_NAME_BYTES {
                return Err(Error::InvalidSeriesKey {
                    reason: format!("{what} name is longer than {MAX_NAME_BYTES} bytes"),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.device, self.key)
    }
}

/// One stored value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::F64(_) => ValueKind::Float,
            Value::I64(_) => ValueKind::Integer,
            Value::Bool(_) => ValueKind::Bool,
            Value::Str(_) => ValueKind::String,
        }
    }

    /// The value as a float: floats and integers as they are (integers beyond 2^53 lose
    /// precision), booleans as 0 or 1, strings not at all.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        }
    }
}

/// The kind of a [`Value`]; a series holds values of one kind, fixed by its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Float,
    Integer,
    Bool,
    String,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Float => "float",
            ValueKind::Integer => "integer",
            ValueKind::Bool => "bool",
            ValueKind::String => "string",
        }
    }

    /// Whether Min/Max/Avg/Sum apply.
    pub fn is_numeric(self) -> bool {
        matches!(self, ValueKind::Float | ValueKind::Integer)
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fits `value` to a series of `kind`: the same kind passes, an integer for a float series
/// becomes a float, anything else is refused with the value's own kind.
pub(crate) fn coerce(kind: ValueKind, value: Value) -> std::result::Result<Value, ValueKind> {
    match (kind, value) {
        (ValueKind::Float, Value::I64(v)) => Ok(Value::F64(v as f64)),
        (kind, value) if value.kind() == kind => Ok(value),
        (_, value) => Err(value.kind()),
    }
}

/// One timestamped value of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub value: Value,
}

/// One point to write, with the series it belongs to.
#[derive(Clone, Debug)]
pub struct WriteEntry {
    pub series: SeriesKey,
    pub ts: i64,
    pub value: Value,
}

impl WriteEntry {
    /// The checks that need no stored state: key names, timestamp range, finite floats.
    pub(crate) fn validate(&self) -> Result<()> {
        self.series.validate()?;
        if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&self.ts) {
            return Err(Error::TimestampOutOfRange { ts: self.ts });
        }
        if let Value::F64(v) = self.value
            && !v.is_finite()
        {
            return Err(Error::NonFiniteValue {
                key: self.series.key.clone(),
            });
        }
        Ok(())
    }
}

/// What a successful write stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// Points written (a duplicate timestamp counts: it replaced the earlier value).
    pub points: usize,
}

/// Points of a range query.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeResult {
    /// Ascending by timestamp.
    pub points: Vec<Point>,
    /// Whether more points in the range were left out because of the limit.
    pub truncated: bool,
}

/// How the points of a bucket are folded into one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    Min,
    Max,
    Avg,
    Sum,
    Count,
    First,
    Last,
}

impl Aggregation {
    pub const ALL: [Aggregation; 7] = [
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Avg,
        Aggregation::Sum,
        Aggregation::Count,
        Aggregation::First,
        Aggregation::Last,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Avg => "avg",
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::First => "first",
            Aggregation::Last => "last",
        }
    }

    /// Min/Max/Avg/Sum need numbers; Count/First/Last work on any kind.
    pub fn needs_numbers(self) -> bool {
        matches!(
            self,
            Aggregation::Min | Aggregation::Max | Aggregation::Avg | Aggregation::Sum
        )
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of min, max, avg, sum, count, first, last.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregation {0:?}; expected one of min, max, avg, sum, count, first, last")]
pub struct ParseAggregationError(pub String);

impl FromStr for Aggregation {
    type Err = ParseAggregationError;

    /// Case-insensitive.
    fn from_str(s: &str) -> std::result::Result<Aggregation, ParseAggregationError> {
        Aggregation::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseAggregationError(s.to_string()))
    }
}

/// One non-empty aggregation bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Bucket start: a multiple of the interval (epoch-aligned).
    pub ts: i64,
    /// F64 for min/max/avg/sum, I64 for count, the point's own value for first/last.
    pub value: Value,
    /// Points folded into this bucket.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_display_and_coercion() {
        assert_eq!(ValueKind::Float.to_string(), "float");
        assert_eq!(ValueKind::Integer.to_string(), "integer");
        assert_eq!(ValueKind::Bool.to_string(), "bool");
        assert_eq!(ValueKind::String.to_string(), "string");
        assert_eq!(coerce(ValueKind::Float, Value::I64(3)), Ok(Value::F64(3.0)));
        assert_eq!(
            coerce(ValueKind::Integer, Value::F64(3.0)),
            Err(ValueKind::Float)
        );
        assert_eq!(
            coerce(ValueKind::Bool, Value::Bool(true)),
            Ok(Value::Bool(true))
        );
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
        assert_eq!(Value::I64(-2).as_f64(), Some(-2.0));
        assert_eq!(Value::Str("x".into()).as_f64(), None);
    }

    #[test]
    fn aggregation_names_round_trip() {
        for agg in Aggregation::ALL {
            assert_eq!(agg.to_string().parse::<Aggregation>(), Ok(agg));
        }
        assert_eq!("AVG".parse::<Aggregation>(), Ok(Aggregation::Avg));
        assert!("median".parse::<Aggregation>().is_err());
    }

    #[test]
    fn entry_validation() {
        let entry = |ts, value| WriteEntry {
            series: SeriesKey::new("t", "d", "k"),
            ts,
            value,
        };
        assert!(entry(0, Value::F64(1.0)).validate().is_ok());
        assert!(entry(MAX_TIMESTAMP, Value::F64(1.0)).validate().is_ok());
        assert!(matches!(
            entry(-1, Value::F64(1.0)).validate(),
            Err(Error::TimestampOutOfRange { ts: -1 })
        ));
        assert!(matches!(
            entry(MAX_TIMESTAMP + 1, Value::F64(1.0)).validate(),
            Err(Error::TimestampOutOfRange { .. })
        ));
        assert!(matches!(
            entry(1, Value::F64(f64::INFINITY)).validate(),
            Err(Error::NonFiniteValue { .. })
        ));
        let mut bad = entry(1, Value::I64(1));
        bad.series.device.clear();
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidSeriesKey { .. })
        ));
    }
}
