//! Latency histograms and their JSON form. Latencies are recorded in microseconds.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.max(1));
}

/// p50/p99/max in milliseconds (null when nothing was recorded).
pub fn latency(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "samples": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}
