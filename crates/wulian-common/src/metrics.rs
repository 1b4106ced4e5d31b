//! Prometheus text for histograms whose counts a crate keeps in its own atomics.

/// A histogram in the Prometheus text format: `bounds` are the buckets' upper bounds in
/// seconds, ascending; `counts` holds each bucket's own count (not cumulative) and one more
/// for everything above the last bound.
pub fn histogram_text(
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    sum_seconds: f64,
) -> String {
    debug_assert_eq!(counts.len(), bounds.len() + 1);
    let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
    }
    cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
    out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
    out.push_str(&format!(
        "{name}_sum {sum_seconds}\n{name}_count {cumulative}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_inf() {
        let text = histogram_text("x_seconds", "X.", &[0.001, 0.01], &[2, 0, 1], 0.5);
        assert_eq!(
            text,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.001\"} 2\nx_seconds_bucket{le=\"0.01\"} 2\n\
             x_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 0.5\nx_seconds_count 3\n"
        );
    }
}
