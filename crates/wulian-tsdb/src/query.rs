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
/// Sums follow [`partials`]. `check` must have passed.
#[cfg(test)]
pub(crate) fn aggregate(points: &[Point], interval_ms: i64, agg: Aggregation) -> Vec<Bucket> {
    to_buckets(&partials(points, interval_ms, DEFAULT_WIDTHS), agg)
}

/// Each partial bucket's value under `agg`.
pub(crate) fn to_buckets(parts: &[PartialBucket], agg: Aggregation) -> Vec<Bucket> {
    parts
        .iter()
        .map(|b| Bucket {
            ts: b.ts,
            value: b.value(agg),
            count: b.count,
        })
        .collect()
}

/// The rollup bucket widths (ms): the fine level (1 minute) and the coarse level (1 hour, a
/// multiple of the fine one).
pub(crate) type Widths = [i64; 2];
#[cfg(test)]
pub(crate) const DEFAULT_WIDTHS: Widths = [60_000, 3_600_000];

/// The rollup level whose buckets tile buckets of `interval_ms`: coarse (1), fine (0) or none.
pub(crate) fn level_for(interval_ms: i64, widths: Widths) -> Option<usize> {
    if interval_ms % widths[1] == 0 {
        Some(1)
    } else if interval_ms % widths[0] == 0 {
        Some(0)
    } else {
        None
    }
}

/// The canonical summary of points (sorted, unique timestamps) at `interval_ms`. Sums are
/// computed level by level so that rollups reproduce them bit for bit: the points of each
/// fine bucket (1 min) are added in time order; when the interval is a multiple of the coarse
/// width (1 h), the fine sums of each coarse bucket are added in time order; then the level's
/// sums are added in time order per bucket. An interval that is not a multiple of the fine
/// width adds the points of each bucket directly.
#[cfg(test)]
pub(crate) fn partials(points: &[Point], interval_ms: i64, widths: Widths) -> Vec<PartialBucket> {
    match level_for(interval_ms, widths) {
        None => partial_aggregate(points, interval_ms),
        Some(level) => fold_partials(&level_partials(points, level, widths), interval_ms),
    }
}

/// Points summarised at a rollup level: fine buckets straight from the points, coarse
/// buckets folded from the fine ones. Exactly what a rollup file of that level holds.
pub(crate) fn level_partials(points: &[Point], level: usize, widths: Widths) -> Vec<PartialBucket> {
    let fine = partial_aggregate(points, widths[0]);
    if level == 0 {
        fine
    } else {
        fold_partials(&fine, widths[1])
    }
}

/// Folds partial buckets (ascending) into buckets of `interval_ms` (a multiple of theirs),
/// merging in time order.
pub(crate) fn fold_partials(parts: &[PartialBucket], interval_ms: i64) -> Vec<PartialBucket> {
    let mut out: Vec<PartialBucket> = Vec::new();
    for p in parts {
        let start = p.ts - p.ts.rem_euclid(interval_ms);
        match out.last_mut() {
            Some(last) if last.ts == start => last.merge(p),
            _ => {
                let mut b = p.clone();
                b.ts = start;
                out.push(b);
            }
        }
    }
    out
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
    pub(crate) fn of(ts: i64, points: &[Point]) -> Option<PartialBucket> {
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
