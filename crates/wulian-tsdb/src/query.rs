//! Aggregate queries over one series' points.
//!
//! Both work on the points of one series already merged from the head and the block files
//! (`storage::SeriesView`), sorted by timestamp.

use crate::error::{Error, Result};
use crate::value::{Aggregation, Bucket, Point, Value, ValueKind};

/// Checks that `agg` applies to a series of `kind`.
pub(crate) fn check(key: &str, kind: ValueKind, interval_ms: i64, agg: Aggregation) -> Result<()> {
    if interval_ms < 1 {
        return Err(Error::InvalidInterval);
    }
    if agg.needs_numbers() && !kind.is_numeric() {
        return Err(Error::NotNumeric {
            key: key.to_string(),
            kind,
        });
    }
    Ok(())
}

/// Folds points (already cut to the range, sorted ascending) into epoch-aligned buckets of
/// `interval_ms`; only non-empty buckets are returned, ascending. The first bucket may start
/// before the range's `from` (it is the bucket `from` falls in) but holds only points in range.
/// `check` must have passed.
pub(crate) fn aggregate(points: &[Point], interval_ms: i64, agg: Aggregation) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut rest = points;
    while let Some(first) = rest.first() {
        // Timestamps are >= 0, so truncating division is flooring.
        let start = first.ts - first.ts.rem_euclid(interval_ms);
        let end = start.saturating_add(interval_ms);
        let n = rest.partition_point(|p| p.ts < end);
        let (bucket, tail) = rest.split_at(n);
        out.push(Bucket {
            ts: start,
            value: fold(bucket, agg),
            count: bucket.len() as u64,
        });
        rest = tail;
    }
    out
}

/// One bucket's value. `points` is non-empty.
fn fold(points: &[Point], agg: Aggregation) -> Value {
    let numbers = || points.iter().filter_map(|p| p.value.as_f64());
    match agg {
        Aggregation::Min => Value::F64(numbers().fold(f64::INFINITY, f64::min)),
        Aggregation::Max => Value::F64(numbers().fold(f64::NEG_INFINITY, f64::max)),
        Aggregation::Sum => Value::F64(numbers().sum()),
        Aggregation::Avg => Value::F64(numbers().sum::<f64>() / points.len() as f64),
        Aggregation::Count => Value::I64(i64::try_from(points.len()).unwrap_or(i64::MAX)),
        // Non-empty by construction: buckets are only made for points that exist.
        Aggregation::First => points
            .first()
            .map(|p| p.value.clone())
            .unwrap_or(Value::I64(0)),
        Aggregation::Last => points
            .last()
            .map(|p| p.value.clone())
            .unwrap_or(Value::I64(0)),
    }
}

/// A bucket's mergeable summary: enough to compute every [`Aggregation`] of the bucket, and to
/// combine the same bucket of several series (e.g. one key across a fleet of devices) exactly:
/// the average of a merged bucket is the total sum over the total count, not an average of
/// averages, and first/last are the earliest/latest point across the series.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialBucket {
    /// Bucket start, a multiple of the interval (ms since the epoch).
    pub ts: i64,
    /// Points in the bucket (at least 1).
    pub count: u64,
    /// Sum, minimum and maximum of the numeric values (booleans count as 0/1; strings are
    /// left out, leaving 0, +inf and -inf).
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The earliest and the latest point of the bucket.
    pub first: Point,
    pub last: Point,
}

impl PartialBucket {
    fn of(ts: i64, points: &[Point]) -> Option<PartialBucket> {
        let (first, last) = (points.first()?, points.last()?);
        let mut b = PartialBucket {
            ts,
            count: points.len() as u64,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: first.clone(),
            last: last.clone(),
        };
        for v in points.iter().filter_map(|p| p.value.as_f64()) {
            b.sum += v;
            b.min = b.min.min(v);
            b.max = b.max.max(v);
        }
        Some(b)
    }

    /// Folds `other` (the same bucket of another series) into `self`. On equal timestamps the
    /// first/last already held win, so merging in a fixed order is deterministic.
    pub fn merge(&mut self, other: &PartialBucket) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first.ts < self.first.ts {
            self.first = other.first.clone();
        }
        if other.last.ts > self.last.ts {
            self.last = other.last.clone();
        }
    }

    /// The bucket's value under `agg`.
    pub fn value(&self, agg: Aggregation) -> Value {
        match agg {
            Aggregation::Min => Value::F64(self.min),
            Aggregation::Max => Value::F64(self.max),
            Aggregation::Sum => Value::F64(self.sum),
            Aggregation::Avg => Value::F64(self.sum / self.count.max(1) as f64),
            Aggregation::Count => Value::I64(i64::try_from(self.count).unwrap_or(i64::MAX)),
            Aggregation::First => self.first.value.clone(),
            Aggregation::Last => self.last.value.clone(),
        }
    }
}

/// Like [`aggregate`], but keeps each bucket's mergeable summary.
pub(crate) fn partial_aggregate(points: &[Point], interval_ms: i64) -> Vec<PartialBucket> {
    let mut out = Vec::new();
    let mut rest = points;
    while let Some(first) = rest.first() {
        let start = first.ts - first.ts.rem_euclid(interval_ms);
        let end = start.saturating_add(interval_ms);
        let n = rest.partition_point(|p| p.ts < end);
        let (bucket, tail) = rest.split_at(n);
        out.extend(PartialBucket::of(start, bucket));
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_buckets_agree_with_aggregate_and_merge_exactly() {
        let a = pts(&[(1, 1.0), (2, 3.0), (12, 5.0)]);
        let b = pts(&[(0, 10.0), (15, 7.0)]);
        let pa = partial_aggregate(&a, 10);
        for agg in Aggregation::ALL {
            let plain: Vec<Value> = aggregate(&a, 10, agg)
                .into_iter()
                .map(|b| b.value)
                .collect();
            let partial: Vec<Value> = pa.iter().map(|b| b.value(agg)).collect();
            assert_eq!(plain, partial, "{agg:?}");
        }
        let pb = partial_aggregate(&b, 10);
        let mut merged = pa[0].clone();
        merged.merge(&pb[0]);
        // (1 + 3 + 10) / 3, not the average of the averages (2 and 10).
        assert_eq!(merged.value(Aggregation::Avg), Value::F64(14.0 / 3.0));
        assert_eq!(merged.value(Aggregation::First), Value::F64(10.0));
        assert_eq!(merged.value(Aggregation::Last), Value::F64(3.0));
        assert_eq!(merged.value(Aggregation::Count), Value::I64(3));
        assert_eq!(merged.value(Aggregation::Max), Value::F64(10.0));
    }

    fn pts(v: &[(i64, f64)]) -> Vec<Point> {
        v.iter()
            .map(|&(ts, x)| Point {
                ts,
                value: Value::F64(x),
            })
            .collect()
    }

    #[test]
    fn buckets_are_epoch_aligned_and_sparse() {
        let p = pts(&[(5, 1.0), (9, 3.0), (10, 10.0), (35, 7.0)]);
        let b = aggregate(&p, 10, Aggregation::Avg);
        assert_eq!(
            b,
            vec![
                Bucket {
                    ts: 0,
                    value: Value::F64(2.0),
                    count: 2
                },
                Bucket {
                    ts: 10,
                    value: Value::F64(10.0),
                    count: 1
                },
                Bucket {
                    ts: 30,
                    value: Value::F64(7.0),
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn every_aggregation() {
        let p = pts(&[(0, 4.0), (1, -2.0), (2, 7.0)]);
        let one = |agg| aggregate(&p, 100, agg).remove(0).value;
        assert_eq!(one(Aggregation::Min), Value::F64(-2.0));
        assert_eq!(one(Aggregation::Max), Value::F64(7.0));
        assert_eq!(one(Aggregation::Sum), Value::F64(9.0));
        assert_eq!(one(Aggregation::Avg), Value::F64(3.0));
        assert_eq!(one(Aggregation::Count), Value::I64(3));
        assert_eq!(one(Aggregation::First), Value::F64(4.0));
        assert_eq!(one(Aggregation::Last), Value::F64(7.0));
    }

    #[test]
    fn checks() {
        assert!(matches!(
            check("k", ValueKind::Float, 0, Aggregation::Avg),
            Err(Error::InvalidInterval)
        ));
        assert!(matches!(
            check("k", ValueKind::String, 10, Aggregation::Sum),
            Err(Error::NotNumeric {
                kind: ValueKind::String,
                ..
            })
        ));
        assert!(matches!(
            check("k", ValueKind::Bool, 10, Aggregation::Max),
            Err(Error::NotNumeric {
                kind: ValueKind::Bool,
                ..
            })
        ));
        assert!(check("k", ValueKind::Bool, 10, Aggregation::Count).is_ok());
        assert!(check("k", ValueKind::Integer, 10, Aggregation::Avg).is_ok());
    }
}
