//! What the broker process spent: CPU time and resident memory from /proc. Read before and
//! after a load so results can be compared per message and per connection, not only per second
//! (the load generator shares the machine with the broker).

use serde_json::{Value, json};

/// A point-in-time reading of a process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Linux's USER_HZ on every mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields restart after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 (index 0 here); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Sample {
        cpu_ticks: utime + stime,
        rss_kib,
    })
}

/// The broker's CPU seconds and RSS change between two samples, as report fields.
pub fn delta(before: Option<Sample>, after: Option<Sample>) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!({
            "cpu_secs": a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / TICKS_PER_SEC,
            "rss_kib_before": b.rss_kib,
            "rss_kib_after": a.rss_kib,
        }),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_this_process() {
        let s = super::sample(std::process::id()).expect("/proc is readable");
        assert!(s.rss_kib > 0);
        assert!(super::sample(u32::MAX).is_none());
    }
}
